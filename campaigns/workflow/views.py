"""Portal pages of workflows: a local entity's review of its target list, and its edits of
its child campaign's workflow within what the parent allows."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.models import Campaign, LocalApproval, LocalApprovalMode
from campaigns.targeting import registry
from campaigns.targeting.words import condition_words
from campaigns.workflow import local_approval
from campaigns.workflow.forms import FORMS
from portal import validation
from portal.exceptions import DomainError
from portal.models import AuditLog
from portal.web import attempt, page_number

SORTS = {
    "name": ("contact__last_name", "contact__first_name", "id"),
    "-name": ("-contact__last_name", "-contact__first_name", "-id"),
    "email": ("contact__email", "id"),
    "-email": ("-contact__email", "-id"),
    "id": ("contact__external_id", "id"),
    "-id": ("-contact__external_id", "-id"),
    "removed": ("-removal_reason", "contact__last_name", "id"),
}


def _contact_ids(request: HttpRequest) -> list[int]:
    try:
        return validation.ids(request.POST.getlist("contact"), path="contact")
    except validation.InputError:
        raise Http404("Unknown contact.") from None


@login_required
def review(request: HttpRequest, pk: int) -> HttpResponse:
    """A local entity's list: search, sort, page; remove contacts with a reason, put them
    back, approve or reject the list. Only the entity's own lists exist here (404 else)."""
    approval = get_object_or_404(
        LocalApproval.objects.visible_to(request.user).select_related(
            "entity", "execution__run__campaign", "execution__activity"
        ),
        pk=pk,
    )
    if request.method == "POST":
        action = request.POST.get("action")
        ids = _contact_ids(request) if action in ("remove", "restore") else []
        calls = {
            "remove": lambda: local_approval.remove_contacts(
                approval=approval,
                contact_ids=ids,
                reason=request.POST.get("reason", ""),
                actor=request.user,
            ),
            "restore": lambda: local_approval.restore_contacts(
                approval=approval, contact_ids=ids, actor=request.user
            ),
            "approve": lambda: local_approval.decide(
                approval=approval,
                actor=request.user,
                approve=True,
                comment=request.POST.get("comment", ""),
            ),
            "reject": lambda: local_approval.decide(
                approval=approval,
                actor=request.user,
                approve=False,
                comment=request.POST.get("comment", ""),
            ),
        }
        if action not in calls:
            raise Http404("Unknown action.")
        try:
            ok, result = attempt(request, calls[action])
        except local_approval.NotInList as exc:
            raise Http404(str(exc)) from None
        if ok:
            done = {
                "remove": f"{result} contact(s) removed from the list.",
                "restore": f"{result} contact(s) put back into the list.",
                "approve": "The list is approved.",
                "reject": "The list is rejected: nothing will be sent to these contacts.",
            }
            messages.success(request, done[action])
        return redirect(request.get_full_path())
    rows = local_approval.list_rows(approval)
    search = request.GET.get("q", "").strip()
    if search:
        rows = rows.filter(services.contact_search(search, path="contact__"))
    sort = request.GET.get("sort", "name")
    rows = rows.order_by(*SORTS.get(sort, SORTS["name"]))
    page = Paginator(rows, 50).get_page(page_number(request))
    decision = local_approval.request_of(approval)
    row_status, outcome = local_approval.list_outcome(decision)
    return render(
        request,
        "campaigns/local_approval.html",
        {
            "approval": approval,
            "campaign": approval.execution.run.campaign,
            "page": page,
            "search": search,
            "sort": sort,
            "decision": decision,
            "row_status": row_status,
            "outcome": outcome,
            "may_review": local_approval.may_review(approval, request.user),
            "removed": approval.removals.count(),
            "summary": local_approval.summary(approval),
            "is_report": approval.mode == LocalApprovalMode.REPORT,
            "history": AuditLog.objects.for_object(approval).select_related("actor"),
        },
    )


# Child workflow editing ----------------------------------------------------------------------


@login_required
def activity_edit(request: HttpRequest, pk: int, activity_pk: int) -> HttpResponse:
    campaign = get_object_or_404(
        Campaign.objects.visible_to(request.user).select_related("entity", "parent"), pk=pk
    )
    activity = get_object_or_404(campaign.activities, pk=activity_pk)
    editable = services.child_may_edit(activity)
    if not editable:
        raise PermissionDenied("The parent campaign does not let you change this step.")
    form = FORMS[activity.type](
        request.POST if request.method == "POST" else None,
        initial=activity.settings,
        campaign=campaign,
        editable=editable,
    )
    if request.method == "POST" and form.is_valid():
        ok, _ = attempt(
            request,
            lambda: services.update_child_activity(
                activity=activity, settings=form.settings(), actor=request.user
            ),
        )
        if ok:
            messages.success(request, f"Step “{activity}” is saved.")
            return redirect("campaigns:detail", campaign.pk)
    return render(
        request,
        "campaigns/activity_edit.html",
        {
            "campaign": campaign,
            "activity": activity,
            "form": form,
            "registry": registry.describe(),
            "dimension": activity.settings.get("dimension", "contact"),
            "conditions_words": condition_words(
                activity.settings.get("conditions"),
                activity.settings.get("dimension", "contact"),
            ),
        },
    )


# The canvas ----------------------------------------------------------------------------------


def canvas_context(campaign: Campaign, user: Any) -> dict[str, Any]:
    """What the canvas template needs: its data (as json_script) and its URLs."""
    from django.urls import reverse

    from campaigns.workflow import canvas

    return {
        "campaign": campaign,
        "canvas_mode": canvas.mode_for(campaign, user),
        "canvas_data": {
            "graph": canvas.graph_of(campaign, user=user),
            "palette": canvas.palette(),
            "urls": {
                "graph": reverse("campaigns:canvas_graph", args=[campaign.pk]),
                "save": reverse("campaigns:canvas_save", args=[campaign.pk]),
                "step": reverse("campaigns:canvas_step", args=[campaign.pk]),
                "simulate": reverse("campaigns:canvas_simulate", args=[campaign.pk]),
            },
        },
        "registry": registry.describe(),
    }


def _canvas_campaign(request: HttpRequest, pk: int) -> Campaign:
    return get_object_or_404(
        Campaign.objects.visible_to(request.user).select_related("entity", "parent"), pk=pk
    )


def _refused(status: int, message: str, problems: list | None = None) -> JsonResponse:
    return JsonResponse({"error": message, "problems": problems or []}, status=status)


@login_required
def canvas_graph(request: HttpRequest, pk: int) -> HttpResponse:
    """The graph as JSON, with the counts of the last run (the canvas polls it after a
    simulation)."""
    from campaigns.workflow import canvas

    campaign = _canvas_campaign(request, pk)
    return JsonResponse(canvas.graph_of(campaign, user=request.user))


@login_required
@require_POST
def canvas_save(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the whole graph: 200 with the new version; 400 naming each problem on its step;
    409 when someone saved since; 403 for a step the user may not change."""
    from campaigns.workflow import canvas

    campaign = _canvas_campaign(request, pk)
    try:
        payload = validation.load_json(request.body.decode("utf-8", "replace"))
    except validation.InputError as exc:
        return _refused(400, f"The request is not valid JSON: {exc.message}")
    if not isinstance(payload, dict):
        return _refused(400, "The request must be an object with version and graph.")
    try:
        version = canvas.save_graph(
            campaign=campaign,
            graph=payload.get("graph"),
            version=payload.get("version"),
            actor=request.user,
        )
    except canvas.StaleGraph as exc:
        return _refused(409, str(exc))
    except canvas.GraphRefused as exc:
        return _refused(
            400,
            "The workflow was not saved: fix the problems shown on the steps.",
            [{"step": p.step, "message": p.message} for p in exc.graph_problems],
        )
    except PermissionDenied as exc:
        return _refused(403, str(exc) or "You may not change this step.")
    except DomainError as exc:
        return _refused(400, str(exc))
    campaign.refresh_from_db()
    return JsonResponse({"version": version, "graph": canvas.graph_of(campaign, user=request.user)})


@login_required
@require_POST
def canvas_step(request: HttpRequest, pk: int) -> HttpResponse:
    """The side panel: the selected step's typed settings form as HTML (``action=render``),
    or the posted form checked (``action=check``): its settings as JSON when valid, else
    the form again with each error beside its field."""
    from campaigns.workflow import canvas
    from campaigns.workflow.forms import FORMS

    campaign = _canvas_campaign(request, pk)
    mode = canvas.mode_for(campaign, request.user)
    type_ = request.POST.get("type", "")
    key = request.POST.get("key", "")
    form_class = FORMS.get(type_)
    if form_class is None:
        raise Http404("Unknown activity type.")
    try:
        stored = validation.load_json(request.POST.get("settings") or "{}")
    except validation.InputError:
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    editable: frozenset[str] | None = None
    if mode != "edit":
        activity = campaign.activities.filter(key=key, type=type_).first()
        if activity is None:
            raise Http404("Unknown step.")
        editable = services.editable_steps(campaign, [activity]).get(activity.pk, frozenset())
        if mode == "view":
            editable = frozenset()
    action = request.POST.get("action", "render")
    if action == "check":
        if not editable and editable is not None:
            raise PermissionDenied("The parent campaign does not let you change this step.")
        form = form_class(request.POST, settings=stored, campaign=campaign, editable=editable,
                          prefix="s")  # fmt: skip
        if form.is_valid():
            settings = form.settings()
            return JsonResponse(
                {
                    "ok": True,
                    "settings": settings,
                    "outputs": canvas.outputs_of(type_, settings),
                    "preview": _content_preview(settings, campaign)
                    if type_ == "delivery"
                    else None,
                }
            )
        html = _step_html(request, form, type_, stored, editable)
        return JsonResponse({"ok": False, "html": html, "problems": form.problems()})
    form = form_class(initial=stored, campaign=campaign, editable=editable, prefix="s")
    return HttpResponse(_step_html(request, form, type_, stored, editable))


def _content_preview(settings: dict[str, Any], campaign: Campaign) -> dict[str, str]:
    """A delivery step's content rendered for a sample recipient (every field shown as
    ``<name>``), as the side panel previews it; the templates are valid (the form said so)."""
    from campaigns.delivery import rendering
    from campaigns.delivery.services import perso_of

    context = rendering.sample_context(
        multi_level=settings.get("dimension") == "booking", perso=perso_of(campaign)
    )
    return {
        key: rendering.render(settings.get(key) or "", html=key == "html_body", context=context)
        for key in ("subject", "push_title", "text_body", "html_body")
        if settings.get(key)
    }


def _step_html(
    request: HttpRequest, form: Any, type_: str, stored: dict, editable: frozenset[str] | None
) -> str:
    from django.template.loader import render_to_string

    return render_to_string(
        "campaigns/canvas_step.html",
        {
            "form": form,
            "type": type_,
            "dimension": stored.get("dimension", "contact"),
            "conditions_words": condition_words(
                stored.get("conditions"), stored.get("dimension", "contact")
            ),
            "read_only": editable is not None and not editable,
        },
        request=request,
    )


@login_required
@require_POST
def canvas_simulate(request: HttpRequest, pk: int) -> HttpResponse:
    """A simulation of the saved workflow (counts only); the canvas then polls the graph."""
    from campaigns.workflow import canvas, engine

    campaign = _canvas_campaign(request, pk)
    if canvas.mode_for(campaign, request.user) == "view":
        return _refused(403, "You may not simulate this campaign.")
    try:
        run = engine.start_run(campaign=campaign, actor=request.user, simulate=True)
    except PermissionDenied as exc:
        return _refused(403, str(exc))
    except DomainError as exc:
        return _refused(400, str(exc), [str(p) for p in getattr(exc, "problems", None) or []])
    return JsonResponse({"run": run.pk})
