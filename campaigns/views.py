"""Local operators' campaign pages: their child campaigns, personalisation, life cycle."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import PurePath
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from campaigns import import_docs, imports, services, targeting
from campaigns.choices import CampaignKind, CampaignState, Dimension, ImportKind
from campaigns.delivery import reports
from campaigns.models import Campaign, Contact, ImportJob, LocalApproval, SavedQuery
from campaigns.personalisation import PersonalisationForm, value_rows
from campaigns.targeting import registry
from campaigns.targeting.words import condition_words
from campaigns.workflow import diagram, local_approval
from campaigns.workflow.views import canvas_context
from portal import confirm
from portal.models import AuditLog, Entity, is_central_user
from portal.validation import MAX_ID, InputError, load_json, whole_number
from portal.web import attempt, file_response, page_number, stored_value_response

ACTIONS = {"mark_ready": "Mark ready", "start": "Start", "pause": "Pause", "stop": "Stop…"}


class ScheduleForm(forms.Form):
    """When a local entity wants its child campaign to start (in the portal's time zone)."""

    at = forms.DateTimeField(
        label="Start at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"],
    )


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
    rows = value_rows(
        definitions,
        campaign.personalisation_values,
        file_url=lambda name: reverse("campaigns:file", args=[campaign.pk, name]),
    )
    may_change = request.user.has_perm("campaigns.change_campaign")
    actions = []
    if may_change:
        from django_fsm import has_transition_perm

        actions = [
            (name, label)
            for name, label in ACTIONS.items()
            if has_transition_perm(getattr(campaign, name), request.user)
            # A child is started here (by its rule); other campaigns from the admin.
            and (name != "start" or campaign.kind == CampaignKind.CHILD)
            and (name != "start" or campaign.state == CampaignState.READY)
        ]
    run = _run_context(campaign, may_change)
    canvas = (
        canvas_context(campaign, request.user)
        if campaign.kind == CampaignKind.CHILD and campaign.activities.exists()
        else {}
    )
    return render(
        request,
        "campaigns/campaign_detail.html",
        {
            **canvas,
            **run,
            "campaign": campaign,
            "rows": rows,
            "actions": actions,
            "can_personalise": may_change and not services.child_edit_refusal(campaign),
            "history": AuditLog.objects.for_object(campaign).select_related("actor"),
            "diagram": diagram.render(campaign, campaign.runs.first())
            if campaign.activities.exists()
            else None,
            "editable_steps": campaign.activities.filter(
                pk__in=list(services.editable_steps(campaign))
            )
            if may_change and not services.child_edit_refusal(campaign)
            else [],
            "deliveries": reports.campaign_deliveries(campaign)
            .visible_to(request.user)
            .select_related("campaign")[:50],
            "lists": LocalApproval.objects.visible_to(request.user)
            .filter(execution__run__campaign=campaign)
            .annotate(decision_state=local_approval.decision_state())
            .select_related("entity", "execution__activity")
            .order_by("-created_at", "entity__code")[:100],
        },
    )


def _run_context(campaign: Campaign, may_change: bool) -> dict[str, Any]:
    """The child's start (why not, or when it is scheduled) and a parent's children."""
    context: dict[str, Any] = {}
    if campaign.kind == CampaignKind.CHILD and campaign.state == CampaignState.READY:
        context["start_refusal"] = services.start_refusal(campaign)
        context["may_schedule"] = may_change
        context["schedule_form"] = ScheduleForm(
            initial={"at": campaign.scheduled_start_at} if campaign.scheduled_start_at else None
        )
        window = campaign.order.package if campaign.order_id else None
        context["window"] = window
    if campaign.kind in (CampaignKind.REFERENCE, CampaignKind.PARENT):
        context["children"] = services.children_overview(campaign)
    return context


@login_required
@require_POST
def campaign_schedule(request: HttpRequest, pk: int) -> HttpResponse:
    """Schedule (``at``) or withdraw (``unschedule``) a child campaign's start."""
    campaign = _visible_campaign(request, pk)
    if campaign.kind != CampaignKind.CHILD:
        raise Http404
    if not request.user.has_perm("campaigns.change_campaign"):
        raise PermissionDenied("Your role does not allow running campaigns.")
    if request.POST.get("unschedule"):
        ok, _ = attempt(
            request, lambda: services.unschedule_start(campaign=campaign, actor=request.user)
        )
        if ok:
            messages.success(request, "The scheduled start is withdrawn.")
        return redirect("campaigns:detail", campaign.pk)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        for error in form.errors.get("at", []):
            messages.error(request, f"Start at: {error}")
        return redirect("campaigns:detail", campaign.pk)
    ok, changed = attempt(
        request,
        lambda: services.schedule_start(
            campaign=campaign, actor=request.user, at=form.cleaned_data["at"]
        ),
    )
    if ok:
        at = timezone.localtime(changed.scheduled_start_at)
        messages.success(request, f"“{campaign}” will start on {at:%Y-%m-%d %H:%M}.")
    return redirect("campaigns:detail", campaign.pk)


@login_required
def campaign_personalise(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _visible_campaign(request, pk)
    if campaign.kind != CampaignKind.CHILD:
        raise Http404
    if not request.user.has_perm("campaigns.change_campaign"):
        raise PermissionDenied("Your role does not allow changing campaigns.")
    if refusal := services.child_edit_refusal(campaign):
        # Refused on opening, not only on Save: nobody fills in a form that cannot be saved.
        return render(
            request,
            "campaigns/personalise.html",
            {"campaign": campaign, "refusal": refusal},
            status=409,
        )
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
def campaign_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """A life-cycle button; "Stop" first asks for confirmation and a reason (GET shows the
    page, the POST that answers it stops)."""
    campaign = _visible_campaign(request, pk)
    if action not in ACTIONS:
        raise Http404
    from django_fsm import can_proceed, has_transition_perm

    transition = getattr(campaign, action)
    if not can_proceed(transition):
        messages.error(request, f"“{ACTIONS[action]}” is not available now.")
        return redirect("campaigns:detail", campaign.pk)
    if not has_transition_perm(transition, request.user):
        raise PermissionDenied("Your role does not allow changing campaigns.")
    reason = ""
    if action == "stop":
        answer = confirm.ask(
            request,
            services.stop_confirmation(campaign),
            back_url=reverse("campaigns:detail", args=[campaign.pk]),
        )
        if isinstance(answer, HttpResponse):
            return answer
        reason = answer
    elif request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if action == "start":
        if campaign.kind != CampaignKind.CHILD:
            raise Http404  # parents and references are run from the admin
        ok, started = attempt(
            request, lambda: services.start_campaign(campaign=campaign, actor=request.user)
        )
        changed = started.campaign if ok else None
    else:
        ok, changed = attempt(
            request,
            lambda: services.run_campaign_transition(
                campaign=campaign, name=action, actor=request.user, reason=reason
            ),
        )
    if ok:
        messages.success(request, services.transition_message(changed, action))
    return redirect("campaigns:detail", campaign.pk)


@login_required
def campaign_file(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    return stored_value_response(_visible_campaign(request, pk).personalisation_values, name)


# Audience: contacts, query builder with exact counts, import reports ---------------------------


def count_response(request: HttpRequest) -> JsonResponse:
    """POST {"dimension": …, "conditions": {…}, "entity": code?} → exact counts as JSON, or the
    problems with their paths. Counts only what the user may see."""
    if request.method != "POST":
        return JsonResponse({"errors": [{"path": "", "message": "Use POST."}]}, status=405)
    try:
        payload = load_json(request.body or b"{}")
    except InputError as exc:
        return JsonResponse({"errors": exc.as_json()}, status=400)
    if not isinstance(payload, dict):
        return JsonResponse({"errors": [{"path": "", "message": "Send an object."}]}, status=400)
    try:
        conditions = targeting.parse_conditions(payload.get("conditions") or {})
    except targeting.TargetingError as exc:
        return JsonResponse({"errors": exc.as_json()}, status=400)
    entity = None
    if payload.get("entity"):
        try:
            entity_id = whole_number(payload["entity"], path="entity", minimum=1, maximum=MAX_ID)
        except InputError:
            entity_id = None
        if entity_id is not None:
            entity = Entity.objects.visible_to(request.user).filter(pk=entity_id).first()
        if entity is None:
            return JsonResponse(
                {"errors": [{"path": "entity", "message": "Unknown entity."}]}, status=400
            )
    started = time.perf_counter()
    try:
        result = targeting.count(
            str(payload.get("dimension") or "contact"),
            conditions,
            user=request.user,
            entity=entity,
        )
    except targeting.TargetingError as exc:
        return JsonResponse({"errors": exc.as_json()}, status=400)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    body: dict[str, Any] = {
        **result.as_dict(),
        "milliseconds": elapsed,
        "words": condition_words(conditions, str(payload.get("dimension") or "contact")),
    }
    if payload.get("sample"):
        dimension = str(payload.get("dimension") or "contact")
        queryset = targeting.target_queryset(
            dimension, conditions, user=request.user, entity=entity
        )
        columns = SAMPLE_COLUMNS[dimension]
        body["sample"] = {
            "columns": columns,
            "rows": [
                [str(value) if value is not None else "" for value in row]
                for row in queryset.order_by("pk").values_list(*columns)[:20]
            ],
        }
    return JsonResponse(body)


DEFAULT_CONDITIONS = {
    "and": [
        {"field": "email_consent", "op": "eq", "value": True},
        {
            "relation": "bookings",
            "op": "exists",
            "where": {"field": "booking_date", "op": "in_last_days", "value": 365},
        },
    ]
}

SAMPLE_COLUMNS = {
    "contact": ["external_id", "first_name", "last_name", "email", "entity__code"],
    "booking": ["reference", "product", "booking_date", "amount", "contact__external_id"],
    "subscription": ["product", "start_date", "status", "contact__external_id"],
}


@login_required
@require_POST
def audience_count(request: HttpRequest) -> JsonResponse:
    return count_response(request)


@login_required
def audience(request: HttpRequest) -> HttpResponse:
    contacts = (
        Contact.objects.visible_to(request.user)
        .select_related("entity")
        .order_by("last_name", "first_name", "id")
    )
    search = request.GET.get("q", "").strip()
    if search:
        contacts = contacts.filter(services.contact_search(search))
    page = Paginator(contacts, 50).get_page(page_number(request))
    queries = list(SavedQuery.objects.visible_to(request.user).select_related("entity"))
    for query in queries:
        query.words = condition_words(query.conditions, query.dimension)
    return render(
        request,
        "campaigns/audience.html",
        {
            "page": page,
            "search": search,
            "queries": queries,
            # Store operators read conditions in the builder and in words, never as JSON.
            "show_json": is_central_user(request.user),
            "default_conditions": json.dumps(DEFAULT_CONDITIONS),
            "entities": Entity.objects.visible_to(request.user).filter(kind="local"),
            "registry": registry.describe(),
            "dimensions": Dimension.choices,
        },
    )


@login_required
def import_report(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(ImportJob.objects.visible_to(request.user), pk=pk)
    if not job.error_report:
        raise Http404
    return file_response(job.error_report.name, f"import-{job.pk}-errors.csv")


@login_required
def import_template(request: HttpRequest, kind: str, file_format: str) -> HttpResponse:
    """A kind's template file: the header line and example rows (no data of anyone's)."""
    try:
        content = import_docs.template(kind, file_format)
    except KeyError:
        raise Http404 from None
    response = HttpResponse(content, content_type=import_docs.FORMATS[file_format])
    response["Content-Disposition"] = f'attachment; filename="{kind}-template.{file_format}"'
    return response


def template_links() -> list[dict[str, str]]:
    """The import kinds with their template files' addresses (import pages, admin)."""
    return [
        {
            "kind": kind,
            "label": label,
            **{
                file_format: reverse("campaigns:import_template", args=[kind, file_format])
                for file_format in import_docs.FORMATS
            },
        }
        for kind, label in ImportKind.choices
    ]


class ImportForm(forms.Form):
    kind = forms.ChoiceField(choices=ImportKind.choices, label="What the file holds")
    file = forms.FileField(help_text="CSV (UTF-8, header line) or XLSX.")
    entity = forms.ModelChoiceField(queryset=Entity.objects.none(), label="For entity")
    dry_run = forms.BooleanField(
        required=False, initial=True, label="Only check the file (nothing is written)"
    )
    import_valid_rows = forms.BooleanField(
        required=False, label="Import the valid rows even if some rows have errors"
    )

    def __init__(self, *args: Any, user: Any, kept: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        entities = Entity.objects.visible_to(user).filter(kind="local")
        self.fields["entity"].queryset = entities
        if not self.is_bound:
            only = list(entities[:2])
            if len(only) == 1:  # one entity: nothing to choose
                self.initial["entity"] = only[0].pk
        self.fields["file"].help_text = imports.upload_help()
        if kept:  # a file sent with a refused form is kept: no need to choose it again
            self.fields["file"].required = False
            self.fields["file"].help_text = (
                f"Kept from your last attempt: {PurePath(kept).name}. "
                "Choose another file only to replace it."
            )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        return imports.validate_upload(upload) if upload else upload


KEPT_UPLOAD_SALT = "campaigns.import-kept-upload"
KEPT_UPLOAD_MAX_AGE = 3600


def _keep_upload(upload: Any, user: Any) -> str:
    """Store the file of a refused import form (private storage, no row owns it: nobody can
    download it) and return a signed reference for the form's next submission."""
    folder = f"import-uploads/{user.pk}/{uuid.uuid4().hex}"
    name = default_storage.save(f"{folder}/{PurePath(upload.name).name}", upload)
    return signing.dumps({"user": user.pk, "name": name}, salt=KEPT_UPLOAD_SALT)


def _kept_upload(reference: str, user: Any) -> str:
    """The stored name behind a reference this user was given within the hour ('' if none)."""
    if not reference:
        return ""
    try:
        data = signing.loads(reference, salt=KEPT_UPLOAD_SALT, max_age=KEPT_UPLOAD_MAX_AGE)
    except signing.BadSignature:
        return ""
    name = str(data.get("name", "")) if isinstance(data, dict) else ""
    if data.get("user") != user.pk or not name or not default_storage.exists(name):
        return ""
    return name


@login_required
def import_create(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("campaigns.add_importjob"):
        raise PermissionDenied("Your role does not allow imports.")
    reference = request.POST.get("kept_upload", "")
    kept = _kept_upload(reference, request.user)
    form = ImportForm(request.POST or None, request.FILES or None, user=request.user, kept=kept)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"] or File(default_storage.open(kept), name=kept)
        ok, job = attempt(
            request,
            lambda: imports.create_job(
                kind=form.cleaned_data["kind"],
                filename=PurePath(upload.name).name,
                content=upload,
                actor=request.user,
                entity=form.cleaned_data["entity"],
                dry_run=form.cleaned_data["dry_run"],
                import_valid_rows=form.cleaned_data["import_valid_rows"],
            ),
        )
        upload.close()
        if ok:
            if kept:
                default_storage.delete(kept)
            messages.success(request, "The file is queued; this page shows its progress.")
            return redirect("campaigns:import_detail", job.pk)
    elif request.method == "POST" and form.cleaned_data.get("file"):
        # Refused for another field: keep the file so the next submission needs no new choice.
        if kept:
            default_storage.delete(kept)
        reference = _keep_upload(form.cleaned_data["file"], request.user)
        kept = _kept_upload(reference, request.user)
        form = ImportForm(request.POST, user=request.user, kept=kept)
        form.is_valid()  # show the errors again, this time with the kept file
    jobs = ImportJob.objects.visible_to(request.user).select_related("entity")[:20]
    return render(
        request,
        "campaigns/import_form.html",
        {
            "form": form,
            "jobs": jobs,
            "kept_upload": reference if kept else "",
            "templates": template_links(),
        },
    )


@login_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(
        ImportJob.objects.visible_to(request.user).select_related("entity"), pk=pk
    )
    return render(request, "campaigns/import_detail.html", {"job": job})
