"""Local operators' campaign pages: their child campaigns, personalisation, life cycle."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.choices import CampaignKind
from campaigns.models import Campaign
from campaigns.personalisation import display_value
from packages.forms import PersonalisationForm
from packages.views import _file_response
from portal.models import AuditLog
from portal.web import attempt, page_number

ACTIONS = {"mark_ready": "Mark ready", "pause": "Pause", "stop": "Stop"}


def _visible_campaign(request: HttpRequest, pk: int) -> Campaign:
    queryset = Campaign.objects.visible_to(request.user).select_related("entity", "parent", "order")
    return get_object_or_404(queryset, pk=pk)


@login_required
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = (
        Campaign.objects.visible_to(request.user)
        .exclude(kind=CampaignKind.REFERENCE)
        .select_related("entity", "parent")
        .order_by("-created_at")
    )
    page = Paginator(campaigns, 50).get_page(page_number(request))
    return render(request, "campaigns/campaign_list.html", {"page": page})


@login_required
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _visible_campaign(request, pk)
    definitions = campaign.parent.personalisation_fields.all() if campaign.parent_id else []
    rows = []
    for definition in definitions:
        value = campaign.personalisation_values.get(definition.name)
        url = None
        if definition.field_type == "file" and isinstance(value, dict):
            url = reverse("campaigns:file", args=[campaign.pk, definition.name])
        rows.append(
            {"label": definition.label, "value": display_value(definition, value), "url": url}
        )
    may_change = request.user.has_perm("campaigns.change_campaign")
    actions = []
    if may_change:
        from django_fsm import has_transition_perm

        actions = [
            (name, label)
            for name, label in ACTIONS.items()
            if has_transition_perm(getattr(campaign, name), request.user)
        ]
    return render(
        request,
        "campaigns/campaign_detail.html",
        {
            "campaign": campaign,
            "rows": rows,
            "actions": actions,
            "can_personalise": may_change
            and campaign.kind == CampaignKind.CHILD
            and campaign.state in services.EDITABLE_CHILD_STATES,
            "history": AuditLog.objects.for_object(campaign).select_related("actor"),
        },
    )


@login_required
def campaign_personalise(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _visible_campaign(request, pk)
    if campaign.kind != CampaignKind.CHILD:
        raise Http404
    if not request.user.has_perm("campaigns.change_campaign"):
        raise PermissionDenied("Your role does not allow changing campaigns.")
    form = PersonalisationForm(
        campaign.parent.personalisation_fields.all(),
        request.POST or None,
        request.FILES or None,
        stored=campaign.personalisation_values,
        with_comment=False,
    )
    if request.method == "POST":
        try:
            ok, _ = attempt(
                request,
                lambda: services.update_child_values(
                    campaign=campaign, actor=request.user, data=request.POST, files=request.FILES
                ),
            )
        except ValidationError as exc:
            form.attach_errors(exc)
            ok = False
        if ok:
            messages.success(request, "The campaign's personalisation is saved.")
            return redirect("campaigns:detail", campaign.pk)
    return render(request, "campaigns/personalise.html", {"campaign": campaign, "form": form})


@login_required
@require_POST
def campaign_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    campaign = _visible_campaign(request, pk)
    if action not in ACTIONS:
        raise Http404
    ok, _ = attempt(
        request,
        lambda: services.run_campaign_transition(
            campaign=campaign, name=action, actor=request.user
        ),
    )
    if ok:
        messages.success(request, f"{ACTIONS[action]}: done.")
    return redirect("campaigns:detail", campaign.pk)


@login_required
def campaign_file(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    campaign = _visible_campaign(request, pk)
    value = campaign.personalisation_values.get(name)
    if not isinstance(value, dict):
        raise Http404
    return _file_response(value.get("path", ""), value.get("name", "file"))
