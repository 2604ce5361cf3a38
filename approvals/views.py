"""Approvers' pages: the inbox, a request's page, and the emailed link (GET shows, POST
decides)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from approvals import services
from approvals.choices import DecisionChannel, RequestState
from approvals.forms import DecisionForm
from approvals.models import ApprovalRequest
from portal.exceptions import DomainError
from portal.models import AuditLog
from portal.web import attempt

# Why a link cannot be used → the page's status: gone for good, refused, or malformed.
LINK_REFUSAL_STATUS = {"expired": 410, "used": 410, "no_right": 403}


def _context(request_obj: ApprovalRequest) -> dict:
    handler = services.handler_for(request_obj.subject)
    return {
        "approval": request_obj,
        "rows": handler.summary(request_obj.subject),
        "documents": handler.documents(request_obj.subject),
        "history": AuditLog.objects.for_object(request_obj).select_related("actor"),
    }


SUBJECT_NOUNS = {"order": "order", "delivery": "delivery", "target": "target list"}


def _decided(
    request: HttpRequest, approval: ApprovalRequest, *, intro: str, status: int = 200
) -> HttpResponse:
    """A link page for a request that is no longer pending: who decided, when, what, and
    where to go next (the object, the request, the inbox)."""
    approval = ApprovalRequest.objects.select_related("decided_by").get(pk=approval.pk)
    return render(
        request, "approvals/link_decided.html", {**_next(approval), "intro": intro}, status=status
    )


def _next(approval: ApprovalRequest) -> dict:
    subject = approval.subject
    return {
        "approval": approval,
        "subject_url": services.handler_for(subject).detail_url(subject) if subject else "",
        "subject_noun": SUBJECT_NOUNS.get(approval.kind, "item"),
    }


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    pending = services.pending_for(request.user)
    decided = (
        ApprovalRequest.objects.decidable_by(request.user)
        .exclude(state=RequestState.PENDING)
        .select_related("entity", "decided_by")[:20]
    )
    return render(request, "approvals/inbox.html", {"pending": pending, "decided": decided})


@login_required
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    approval = get_object_or_404(
        ApprovalRequest.objects.visible_to(request.user).select_related("entity", "decided_by"),
        pk=pk,
    )
    may_decide = approval.state == RequestState.PENDING and services.may_decide(
        approval, request.user
    )
    form = DecisionForm(request.POST or None)
    if request.method == "POST":
        if not services.may_decide(approval, request.user):  # journalled, then a 403
            services.refuse_decision(
                request=approval,
                actor=request.user,
                approve=request.POST.get("decision") == "approve",
                via=DecisionChannel.PORTAL,
            )
        if form.is_valid():
            ok, decided = attempt(
                request,
                lambda: services.decide(
                    request=approval,
                    actor=request.user,
                    approve=form.cleaned_data["decision"] == "approve",
                    comment=form.cleaned_data["comment"],
                    via=DecisionChannel.PORTAL,
                ),
            )
            if ok:
                messages.success(
                    request, f"{decided.get_state_display()}: “{decided.title}”; recorded."
                )
            return redirect("approvals:request_detail", approval.pk)
    return render(
        request,
        "approvals/request_detail.html",
        {**_context(approval), "form": form, "may_decide": may_decide},
    )


@never_cache
@csrf_protect
def link(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the request and a confirm form (mail scanners open links: they must not
    decide anything); POST, with its CSRF token, records the decision."""
    try:
        approval_link = services.resolve_link(token)
    except services.InvalidLink as exc:
        services.record_refused_link(link=exc.link, reason=exc.reason, method=request.method)
        approval = exc.link.request if exc.link else None
        if exc.reason == "used" and approval is not None:
            return _decided(request, approval, intro=f"{exc.message} Nothing was changed.",
                            status=LINK_REFUSAL_STATUS["used"])  # fmt: skip
        return render(
            request,
            "approvals/link_invalid.html",
            {"message": exc.message, "approval": approval},
            status=LINK_REFUSAL_STATUS.get(exc.reason, 400),
        )
    approval = approval_link.request
    if approval.state != RequestState.PENDING:
        if request.method == "POST":
            services.record_lost_decision(
                request=approval,
                actor=approval_link.approver,
                approve=request.POST.get("decision") == "approve",
                via=DecisionChannel.EMAIL,
            )
        if request.method == "POST":
            intro = "Your decision was not recorded: this request was decided before it."
        else:
            intro = "This request no longer waits for a decision."
        return _decided(
            request, approval, intro=intro, status=409 if request.method == "POST" else 200
        )
    form = DecisionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.decide_by_link(
                token=token,
                approve=form.cleaned_data["decision"] == "approve",
                comment=form.cleaned_data["comment"],
            )
        except services.InvalidLink as exc:
            services.record_refused_link(link=exc.link, reason=exc.reason, method="POST")
            return render(
                request,
                "approvals/link_invalid.html",
                {"message": exc.message},
                status=LINK_REFUSAL_STATUS.get(exc.reason, 400),
            )
        except services.NotAnApprover:  # the right was lost since the page opened
            return render(
                request,
                "approvals/link_invalid.html",
                {"message": services.NO_RIGHT, "approval": approval},
                status=403,
            )
        except services.AlreadyDecided:  # another decision won the race (row lock)
            return _decided(
                request,
                approval,
                intro="Your decision was not recorded: another decision came first.",
                status=409,
            )
        except DomainError as exc:
            return render(
                request,
                "approvals/link_invalid.html",
                {"message": exc.message, "approval": approval},
                status=409,
            )
        approval = ApprovalRequest.objects.select_related("decided_by").get(pk=approval.pk)
        return render(request, "approvals/link_done.html", _next(approval))
    return render(
        request,
        "approvals/link_confirm.html",
        {**_context(approval), "form": form, "approver": approval_link.approver},
    )
