"""Portal pages of deliveries: figures and actions (proofs, send, cancel), the per-entity
report and its export, and a contact's communication history."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django_fsm import can_proceed

from campaigns.delivery import preparation, reports, sending, services
from campaigns.models import Campaign, Contact, Delivery, DeliveryState
from portal import confirm
from portal.models import AuditLog, Entity, is_central_user
from portal.validation import InputError, whole_number
from portal.web import attempt, counted, page_number


def _scoped_messages(delivery: Delivery, user):  # type: ignore[no-untyped-def]
    """A local user sees the figures of its own entities only."""
    rows = delivery.messages.all()
    return (
        rows if is_central_user(user) else rows.filter(entity__in=Entity.objects.visible_ids(user))
    )


@login_required
def delivery_detail(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(
        Delivery.objects.visible_to(request.user).select_related("campaign", "typology"), pk=pk
    )
    scoped = _scoped_messages(delivery, request.user)
    if request.GET.get("export") == "csv":
        response = HttpResponse(reports.entity_csv(delivery, scoped), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="delivery-{delivery.pk}.csv"'
        return response
    may_act = request.user.has_perm("campaigns.change_campaign")
    preview, preview_error = None, ""
    wanted = request.GET.get("preview", "").strip()
    if wanted:
        contact = (
            Contact.objects.visible_to(request.user)
            .filter(Q(external_id=wanted) | Q(email__iexact=wanted))
            .select_related("entity")
            .first()
        )
        if contact is None:
            preview_error = f"No contact “{wanted}” among yours."
        else:
            try:
                preview = sending.preview(delivery=delivery, contact=contact)
            except sending.RENDER_ERRORS as exc:
                preview_error = f"Cannot render for this contact: {exc}"
    central = is_central_user(request.user)
    figures = reports.delivery_figures(delivery) if central else None
    return render(
        request,
        "campaigns/delivery_detail.html",
        {
            "delivery": delivery,
            "shown": services.fields_shown(delivery.channel),
            "figures": figures,
            "in_doubt": reports.in_doubt(delivery) if figures and figures.in_doubt else None,
            "may_resend": may_act and central,
            "stalled_since": sending.stalled_since(delivery) if central else None,
            "entities": reports.by_entity(scoped),
            "may_send": may_act and delivery.state == DeliveryState.PREPARED,
            "may_cancel": may_act and can_proceed(delivery.cancel),
            "progress": preparation.progress(delivery)
            if delivery.state == DeliveryState.PREPARING
            else None,
            "may_proof": may_act and delivery.state not in sending.FINISHED,
            "proofs": delivery.proofs.select_related("contact")[:20],
            "preview": preview,
            "preview_error": preview_error,
            "wanted": wanted,
            "sms_parts": services.sms_segments(delivery.text_body)
            if delivery.channel == "sms"
            else None,
            "history": AuditLog.objects.for_object(delivery).select_related("actor"),
        },
    )


CONFIRMATIONS = {"send": sending.send_confirmation, "cancel": sending.cancel_confirmation}


@login_required
def delivery_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """The delivery page's buttons. "Send now" and "Cancel the delivery" ask for confirmation
    and a reason first (GET shows the page; the POST that answers it acts)."""
    delivery = get_object_or_404(Delivery.objects.visible_to(request.user), pk=pk)
    reason = ""
    if action in CONFIRMATIONS:
        answer = confirm.ask(
            request,
            CONFIRMATIONS[action](delivery),
            back_url=reverse("campaigns:delivery", args=[delivery.pk]),
        )
        if isinstance(answer, HttpResponse):
            return answer
        reason = answer
    elif request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        sample = whole_number(request.POST.get("sample") or 1, path="Sample recipients",
                              minimum=1, maximum=sending.PROOF_SAMPLE_MAX)  # fmt: skip
    except InputError as exc:
        messages.error(request, str(exc))
        return redirect("campaigns:delivery", delivery.pk)
    calls = {
        "send": lambda: sending.confirm(delivery=delivery, actor=request.user, reason=reason),
        "cancel": lambda: sending.cancel(delivery=delivery, actor=request.user, reason=reason),
        "resend_in_doubt": lambda: sending.resend_in_doubt(delivery=delivery, actor=request.user),
        "proof": lambda: sending.request_proofs(
            delivery=delivery,
            addresses=request.POST.get("addresses", "").replace(",", "\n").splitlines(),
            actor=request.user,
            sample=sample,
        ),
    }
    if action not in calls:
        return redirect("campaigns:delivery", delivery.pk)
    ok, result = attempt(request, calls[action])
    if ok:
        done = {
            "send": lambda: sending.sent_message(delivery),
            "cancel": lambda: sending.cancelled_message(delivery),
            "proof": lambda: f"{counted(len(result), 'proof')} on their way.",
            "resend_in_doubt": lambda: f"{counted(result, 'in-doubt message')} sent again.",
        }
        messages.success(request, done[action]())
    return redirect("campaigns:delivery", delivery.pk)


@login_required
def contact_history(request: HttpRequest, pk: int) -> HttpResponse:
    contact = get_object_or_404(
        Contact.objects.visible_to(request.user).select_related("entity"), pk=pk
    )
    page = Paginator(reports.history(contact.pk), 50).get_page(page_number(request))
    consent_history = AuditLog.objects.for_object(contact).filter(
        action__in=["consent_given", "consent_withdrawn", "category_opt_in", "category_opt_out",
                    "quarantined"]
    )[:50]  # fmt: skip
    return render(
        request,
        "campaigns/contact_history.html",
        {"contact": contact, "page": page, "consent_history": consent_history},
    )


# --------------------------------------------------------------------------------------------
# Engagement reports
# --------------------------------------------------------------------------------------------

LEVELS = ("delivery", "campaign", "package", "entity")


def _report_subject(request: HttpRequest, level: str, pk: int) -> tuple[Any, Any, str]:
    """(the object, its deliveries, its title) of a report the user may read; 404 otherwise."""
    user = request.user
    if level == "delivery":
        delivery = get_object_or_404(Delivery.objects.visible_to(user), pk=pk)
        return delivery, Delivery.objects.filter(pk=delivery.pk), delivery.label
    if level == "campaign":
        campaign = get_object_or_404(Campaign.objects.visible_to(user), pk=pk)
        deliveries = reports.campaign_deliveries(campaign)
        if not is_central_user(user):
            deliveries = deliveries.visible_to(user)
        return campaign, deliveries, campaign.name
    if loader := reports.REPORT_SUBJECTS.get(level):
        return loader(user, pk)
    if level == "entity":
        entity = get_object_or_404(Entity.objects.visible_to(user), pk=pk)
        return entity, reports.entity_deliveries(entity), entity.name
    raise Http404


@login_required
def engagement_report(request: HttpRequest, level: str, pk: int) -> HttpResponse:
    """Engagement of a delivery, a campaign with its children, a package (entities side by
    side) or an entity: figures, per entity, per link, per hour; CSV with ``?export=csv``.
    A local user sees the figures of its own entities' contacts only."""
    subject, deliveries, title = _report_subject(request, level, pk)
    entities = None if is_central_user(request.user) else Entity.objects.visible_to(request.user)
    if level == "entity":
        entities = subject.descendants(include_self=True)
    ids = reports._ids(deliveries)
    if request.GET.get("export") == "csv":
        response = HttpResponse(
            reports.engagement_csv(ids, entities=entities), content_type="text/csv"
        )
        response["Content-Disposition"] = f'attachment; filename="engagement-{level}-{pk}.csv"'
        return response
    by_entity = reports.engagement_by_entity(ids, entities=entities)
    return render(
        request,
        "campaigns/engagement_report.html",
        {
            "level": level,
            "entity_chart": [
                {"entity": code, "open_rate": row.open_rate or 0, "click_rate": row.click_rate or 0}
                for code, _name, row in by_entity
            ],
            "subject": subject,
            "title": title,
            "figures": reports.added_up(by_entity),
            "by_entity": by_entity,
            "links": reports.link_clicks(ids, entities=entities)[:100],
            "timeline": reports.timeline(ids, entities=entities),
            "deliveries": Delivery.objects.filter(pk__in=ids).select_related("campaign")[:100],
            "hours": reports.HOURS,
        },
    )
