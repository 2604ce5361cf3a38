"""Central workspace for campaigns: reference campaigns with their personalisation fields, and
the list of child campaigns associated with each parent."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.files import File
from django.db.models import Case, F, Q, QuerySet, When
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export import fields, resources

from campaigns import imports, services
from campaigns.choices import CampaignKind, CampaignState, Channel, FieldType
from campaigns.delivery import preparation, sending, typology
from campaigns.delivery import services as delivery_services
from campaigns.models import (
    Activity,
    ActivityExecution,
    Booking,
    Campaign,
    CategoryOptOut,
    Contact,
    Delivery,
    Event,
    ImportJob,
    LocalApproval,
    Message,
    PersonalisationField,
    ProviderEvent,
    Quarantine,
    SavedQuery,
    ScheduledRun,
    Store,
    Subscription,
    TargetRemoval,
    Transition,
    TransitionCount,
    Typology,
    WorkflowRun,
)
from campaigns.models.campaign import (
    DEFAULT_FILE_EXTENSIONS,
    DEFAULT_FILE_SIZE_KB,
    FIELD_TYPE_OPTIONS,
    OPTION_OWNERS,
)
from campaigns.personalisation import plain_decimal
from campaigns.targeting import registry as targeting_registry
from portal import services as portal_services
from portal import spreadsheets
from portal.admin_mixins import (
    AuditLogInline,
    BackgroundExportMixin,
    BoundedJSONAdminMixin,
    EntityListFilter,
    EntityScopedAdminMixin,
    IndexedValuesFilter,
    LargeTableAdminMixin,
    ReadOnlyAdminMixin,
    ServiceTransitionAdminMixin,
)
from portal.models import Entity, is_central_user
from portal.validation import JSONFormField
from portal.web import counted


class PlainDecimalInput(forms.NumberInput):
    """A decimal as one would type it: "5", not "5.0000"."""

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, Decimal):
            return f"{plain_decimal(value):f}"
        return super().format_value(value)


class OptionalChoicesField(JSONFormField):
    """The options of a choice field: empty (not "[]") when there are none."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value in (None, []) else super().prepare_value(value)

    def to_python(self, value: Any) -> Any:
        return super().to_python(value) or []


class PersonalisationFieldForm(forms.ModelForm):
    """A field definition showing only its type's options (``personalisation_fields.js``
    hides the others; without script they are all shown, and only the type's own are kept).
    A file field left without extensions or size limit gets the usual ones."""

    choices = OptionalChoicesField(
        required=False, help_text='Choice fields: a JSON list, e.g. ["Red", "Blue"].'
    )

    class Meta:
        model = PersonalisationField
        fields = ["name", "label", "field_type", "required", "position", "help_text", "default",
                  "max_length", "min_value", "max_value", "choices", "allowed_extensions",
                  "max_file_size_kb"]  # fmt: skip
        widgets = {
            "min_value": PlainDecimalInput(attrs={"step": "any"}),
            "max_value": PlainDecimalInput(attrs={"step": "any"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = {kind: sorted(kept) for kind, kept in FIELD_TYPE_OPTIONS.items()}
        self.fields["field_type"].widget.attrs["data-options"] = json.dumps(
            {"all": [*OPTION_OWNERS, "choices"], **options}
        )
        extensions = self.fields["allowed_extensions"]
        extensions.widget.attrs["placeholder"] = DEFAULT_FILE_EXTENSIONS
        extensions.help_text = (
            f"File fields: comma-separated extensions ({DEFAULT_FILE_EXTENSIONS} if empty)."
        )
        size = self.fields["max_file_size_kb"]
        size.widget.attrs["placeholder"] = str(DEFAULT_FILE_SIZE_KB)
        size.help_text = f"File fields: maximum size in KiB ({DEFAULT_FILE_SIZE_KB} if empty)."

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = data.get("field_type")
        kept = FIELD_TYPE_OPTIONS.get(kind, frozenset())
        empty = {"allowed_extensions": "", "choices": []}
        for option in [*OPTION_OWNERS, "choices"]:
            if option not in kept and option in data:
                data[option] = empty.get(option)
        if kind == FieldType.FILE:
            data["allowed_extensions"] = data.get("allowed_extensions") or DEFAULT_FILE_EXTENSIONS
            if data.get("max_file_size_kb") is None:
                data["max_file_size_kb"] = DEFAULT_FILE_SIZE_KB
        return data


class PersonalisationFieldInline(BoundedJSONAdminMixin, admin.StackedInline):
    model = PersonalisationField
    form = PersonalisationFieldForm
    extra = 0

    class Media:
        js = ["campaigns/personalisation_fields.js"]

    fields = [
        ("name", "label", "field_type", "required", "position"),
        "help_text",
        "default",
        ("max_length", "min_value", "max_value"),
        "choices",
        ("allowed_extensions", "max_file_size_kb"),
    ]


class ChildCampaignInline(admin.TabularInline):
    """The campaigns associated with a parent: one per ordering entity."""

    model = Campaign
    fk_name = "parent"
    verbose_name = "associated campaign"
    verbose_name_plural = "associated (child) campaigns"
    fields = [
        "entity",
        "link",
        "state",
        "scheduled_start_at",
        "targeted",
        "sent",
        "last_run",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        """Run state and counts as annotations: one query for all the children."""
        return services.with_run_figures(super().get_queryset(request)).order_by(
            "entity__code", "pk"
        )

    @admin.display(description="targeted")
    def targeted(self, obj: Campaign) -> int:
        return obj.targeted

    @admin.display(description="sent")
    def sent(self, obj: Campaign) -> int:
        return obj.sent

    @admin.display(description="last run")
    def last_run(self, obj: Campaign) -> str:
        if obj.last_run is None:
            return "never"
        return f"{timezone.localtime(obj.last_run):%Y-%m-%d %H:%M} ({obj.last_run_state})"

    @admin.display(description="campaign")
    def link(self, obj: Campaign) -> str:
        url = reverse("admin:campaigns_campaign_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.name)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ActivityInlineForm(forms.ModelForm):
    """The settings are checked by the activity type's settings form (the canvas above the
    inlines edits them field by field)."""

    class Meta:
        model = Activity
        fields = ["key", "type", "label", "settings", "local_edit", "position_x", "position_y"]

    def clean(self) -> dict[str, Any]:
        from campaigns.workflow.forms import settings_problems

        cleaned = super().clean()
        if cleaned.get("type") and "settings" not in self.errors:
            for problem in settings_problems(
                cleaned["type"],
                cleaned.get("settings"),
                campaign=self.instance.campaign if self.instance.campaign_id else None,
            ):
                self.add_error("settings", problem)
        return cleaned


class ActivityInline(BoundedJSONAdminMixin, admin.TabularInline):
    model = Activity
    form = ActivityInlineForm
    extra = 0
    fields = ["key", "type", "label", "settings", "local_edit", "position_x", "position_y"]


class TransitionInline(admin.TabularInline):
    model = Transition
    fk_name = "campaign"
    extra = 0
    fields = ["source", "label", "target"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):  # type: ignore[no-untyped-def]
        if db_field.name in ("source", "target"):
            object_id = request.resolver_match.kwargs.get("object_id")
            kwargs["queryset"] = Activity.objects.filter(campaign_id=object_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def _start(simulate: bool):  # type: ignore[no-untyped-def]
    def call(obj: Campaign, actor: Any, request: HttpRequest) -> Any:
        from campaigns.workflow import engine

        run = engine.start_run(campaign=obj, actor=actor, simulate=simulate)
        url = reverse("admin:campaigns_workflowrun_change", args=[run.pk])
        messages.info(request, format_html('Follow it: <a href="{}">{}</a>', url, run))
        return run

    return call


def _campaign_action(name: str):  # type: ignore[no-untyped-def]
    def call(obj: Campaign, actor: Any, request: HttpRequest, reason: str = "") -> Campaign:
        return services.run_campaign_transition(campaign=obj, name=name, actor=actor, reason=reason)

    return call


def _run_started(obj: Campaign, run: Any) -> str:
    steps = counted(obj.activities.count(), "step")
    if run.simulate:
        return f"Simulation started over {steps}; nothing is sent, the counts show on the run."
    return f"Run started; the workers execute its {steps}."


@admin.register(Campaign)
class CampaignAdmin(
    BoundedJSONAdminMixin, ServiceTransitionAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin
):
    list_display = [
        "name",
        "kind",
        "collaborative_type",
        "entity",
        "state",
        "child_count",
        "created_at",
    ]
    list_filter = [
        "kind",
        "collaborative_type",
        "state",
        ("entity", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["name", "description", "entity__code", "entity__name"]
    autocomplete_fields = ["entity", "parent"]
    readonly_fields = [
        "state",
        "workflow_diagram",
        "order",
        "created_by",
        "created_at",
        "updated_at",
        "last_run_at",
        "targeted_count",
        "sent_count",
        "local_conditions_link",
    ]
    fields = [
        "name",
        "description",
        "kind",
        "collaborative_type",
        "entity",
        "parent",
        "personalisation_values",
        *readonly_fields,
    ]
    list_select_related = ["entity"]
    transition_actions = {
        "simulate": ("Simulate (counts only)", _start(True)),
        "run": ("Run the workflow", _start(False)),
        "mark_ready": ("Mark ready", _campaign_action("mark_ready")),
        "pause": ("Pause", _campaign_action("pause")),
        "stop": ("Stop…", _campaign_action("stop")),
    }
    transition_confirmations = {"stop": services.stop_confirmation}
    transition_done_messages = {
        "simulate": _run_started,
        "run": _run_started,
        **{
            name: (lambda obj, done, name=name: services.transition_message(obj, name))
            for name in ("mark_ready", "pause", "stop")
        },
    }

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        from django.db.models import Count

        return super().get_queryset(request).annotate(children_total=Count("children"))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):  # type: ignore[no-untyped-def]
        """The package form's reference-campaign picker offers reference campaigns only,
        those still usable first, newest first: its first (highlighted) entry is then the
        likeliest one, not a child campaign of the same name."""
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        if (
            request.GET.get("app_label") == "packages"
            and request.GET.get("model_name") == "package"
            and request.GET.get("field_name") == "reference_campaign"
        ):
            usable = Q(state__in=[CampaignState.DRAFT, CampaignState.READY,
                                  CampaignState.RUNNING, CampaignState.PAUSED])  # fmt: skip
            queryset = (
                queryset.filter(kind=CampaignKind.REFERENCE)
                .annotate(usable=Case(When(usable, then=0), default=1))
                .order_by("usable", "-created_at", "-pk")
            )
        return queryset, duplicates

    @admin.display(description="workflow")
    def workflow_diagram(self, obj: Campaign) -> str:
        from campaigns.workflow import diagram

        if obj.pk is None:
            return "—"
        return diagram.render(obj, obj.runs.first())

    @admin.display(description="children", ordering="children_total")
    def child_count(self, obj: Campaign) -> int:
        return obj.children_total

    change_form_template = "admin/campaigns/campaign/change_form.html"

    def change_view(  # type: ignore[no-untyped-def]
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        """The campaign's page opens with its workflow canvas (above the fields)."""
        from campaigns.workflow.views import canvas_context

        context = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        if obj is not None and request.method == "GET":
            context.update(canvas_context(obj, request.user))
            context.pop("campaign", None)
        return super().change_view(request, object_id, form_url, extra_context=context)

    def get_urls(self):  # type: ignore[no-untyped-def]
        from campaigns.local_conditions_admin import local_conditions_view

        return [
            path(
                "<path:object_id>/local-conditions/",
                self.admin_site.admin_view(
                    lambda request, object_id: local_conditions_view(self, request, object_id)
                ),
                name="campaigns_campaign_local_conditions",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="local conditions")
    def local_conditions_link(self, obj: Campaign) -> str:
        """The conditions ordering entities complete, and the link to edit them."""
        from campaigns.targeting import local

        if obj.pk is None or obj.kind != CampaignKind.REFERENCE:
            return "—"
        labels = ", ".join(p.label for p in local.campaign_parameters(obj)) or "none"
        return format_html(
            '{} — <a href="{}">edit the local conditions</a>',
            labels,
            reverse("admin:campaigns_campaign_local_conditions", args=[obj.pk]),
        )

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list:
        inlines: list = []
        if obj is None or obj.kind == "reference":
            inlines.append(PersonalisationFieldInline)
        if obj is not None:
            inlines += [ActivityInline, TransitionInline]
        if obj is not None and obj.kind in ("reference", "parent"):
            inlines.append(ChildCampaignInline)
        if obj is not None:
            inlines.append(AuditLogInline)
        return inlines

    def available_transition_actions(self, obj: Campaign, request: HttpRequest) -> list[tuple]:
        has_workflow = obj.activities.exists()
        return [
            (name, label)
            for name, label in super().available_transition_actions(obj, request)
            if name not in ("simulate", "run")
            or (has_workflow and (name == "simulate" or obj.state == "ready"))
        ]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if any(
            formset.has_changed() for formset in formsets if formset.model in (Activity, Transition)
        ):  # an open canvas of this workflow is now stale
            Campaign.objects.filter(pk=form.instance.pk).update(
                workflow_version=F("workflow_version") + 1
            )
        if form.instance.activities.exists():
            from campaigns.workflow import engine

            for problem in engine.validate_workflow(form.instance):
                self.message_user(request, problem, messages.WARNING)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        portal_services.record_audit(
            obj=obj,
            action="change_campaign" if change else "create_campaign",
            actor=request.user,
            extra={"changed": form.changed_data},
        )


@admin.register(ScheduledRun)
class ScheduledRunAdmin(EntityScopedAdminMixin, admin.ModelAdmin):
    list_display = ["campaign", "order", "run_at", "state", "execution_link"]  # order: entity
    list_filter = ["state", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["campaign__name", "entity__code"]
    list_select_related = ["campaign", "entity", "order__package", "execution_campaign"]
    readonly_fields = [f.name for f in ScheduledRun._meta.fields]
    inlines = [AuditLogInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A run is a campaign's execution: whoever sees campaigns sees their runs (scoped).
        return request.user.has_perm("campaigns.view_campaign")

    @admin.display(description="campaign run", ordering="execution_campaign__state")
    def execution_link(self, obj: ScheduledRun) -> str:
        """The campaign the run started (its state), or why it failed."""
        if obj.execution_campaign is None:
            reason = obj.failure_reason
            if len(reason) <= 60:
                return reason or "—"
            return format_html('<span title="{}">{}…</span>', reason, reason[:59])
        campaign = obj.execution_campaign
        url = reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        return format_html('<a href="{}">{}</a>', url, campaign.get_state_display())


# Audience data ---------------------------------------------------------------------------------


class ContactExportResource(resources.ModelResource):
    entity = fields.Field(attribute="entity__code", column_name="entity")

    class Meta:
        model = Contact
        fields = [
            "external_id", "first_name", "last_name", "email", "phone", "language",
            "birth_date", "entity", "email_consent", "sms_consent", "push_consent",
            "blocklisted", "created_at",
        ]  # fmt: skip
        export_order = fields


class CategoryOptOutInline(admin.TabularInline):
    """The categories the contact opted out of (its preference page)."""

    model = CategoryOptOut
    fields = ["category", "created_at"]
    readonly_fields = ["created_at"]
    extra = 0


class BookingYearFilter(admin.SimpleListFilter):
    """Booking year, from a fixed span of years (this one and the four before): the choices
    cost no query, and the filter is a range on the booking date index."""

    title = "booking year"
    parameter_name = "year"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        this_year = timezone.localdate().year
        return [(str(year), str(year)) for year in range(this_year, this_year - 5, -1)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() is None or not self.value().isdigit():
            return queryset
        year = int(self.value())
        return queryset.filter(
            booking_date__gte=date(year, 1, 1), booking_date__lt=date(year + 1, 1, 1)
        )


class MessageRuleFilter(admin.SimpleListFilter):
    """The rule that excluded a message, from the typology rules' names (no DISTINCT)."""

    title = "excluding rule"
    parameter_name = "rule"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name.replace("_", " ")) for name in typology.CHECKS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(rule=self.value()) if self.value() else queryset


@admin.register(Contact)
class ContactAdmin(
    BackgroundExportMixin, LargeTableAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin
):
    resource_classes = [ContactExportResource]  # the column choice; rows: portal.exports
    export_kind = "contacts"
    formats = spreadsheets.EXPORT_FORMATS
    list_display = ["external_id", "first_name", "last_name", "email", "entity", "email_consent",
                    "sms_consent", "blocklisted"]  # fmt: skip
    list_filter = ["email_consent", "sms_consent", "push_consent", "blocklisted",
                   ("language", IndexedValuesFilter), ("entity", EntityListFilter)]  # fmt: skip
    search_fields = ["external_id"]  # shows the box; get_search_results does the search
    search_help_text = "A customer id or phone number exactly, or part of a name or an email."
    # Sorts on indexed columns only: the others sort the whole table for one page.
    sortable_by = ["external_id", "last_name"]
    list_select_related = ["entity"]
    autocomplete_fields = ["entity"]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):  # type: ignore[no-untyped-def]
        """The customer id or phone exactly, or part of a name or an email (trigram indexes on
        PostgreSQL; see migration 0021)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(services.contact_search(term) | Q(phone=term)), False

    inlines = [CategoryOptOutInline, AuditLogInline]

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        """A consent changed here is stamped and audited like the contact's own changes."""
        changed = [f for f in ("email_consent", "sms_consent", "push_consent")
                   if change and f in form.changed_data]  # fmt: skip
        for field in changed:
            setattr(obj, f"{field}_at", timezone.now())
            setattr(obj, f"{field}_source", f"admin ({request.user.get_username()})"[:50])
        super().save_model(request, obj, form, change)
        for field in changed:
            verb = "given" if getattr(obj, field) else "withdrawn"
            portal_services.record_audit(
                obj=obj, action=f"consent_{verb}", actor=request.user,
                comment=f"{field.removesuffix('_consent').upper()} consent {verb} in the admin.",
                extra={"channel": field.removesuffix("_consent"), "source": "admin"},
            )  # fmt: skip


class EntityThroughContactAdmin(LargeTableAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin):
    list_select_related = ["contact__entity"]
    raw_id_fields = ["contact"]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):  # type: ignore[no-untyped-def]
        """Exact keys through their indexes: the row's own key, or its contact's customer id
        (looked up first, so that the list is read through the contact index, not joined)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        contacts = list(Contact.objects.filter(external_id=term).values_list("pk", flat=True))
        return queryset.filter(self.key_search(term) | Q(contact_id__in=contacts)), False

    def key_search(self, term: str) -> Q:
        return Q(pk__in=[])


@admin.register(Booking)
class BookingAdmin(EntityThroughContactAdmin):
    list_display = ["reference", "contact", "product", "destination", "booking_date", "amount",
                    "status", "store"]  # fmt: skip
    list_filter = ["status", ("product", IndexedValuesFilter),
                   ("destination", IndexedValuesFilter), BookingYearFilter]  # fmt: skip
    search_fields = ["reference"]  # the help text; get_search_results does the search
    search_help_text = "A booking reference or a customer id, exactly."
    sortable_by = ["reference", "booking_date"]
    list_select_related = ["contact", "store"]
    raw_id_fields = ["contact", "store"]

    def key_search(self, term: str) -> Q:
        return Q(reference=term)


@admin.register(Subscription)
class SubscriptionAdmin(EntityThroughContactAdmin):
    list_display = ["contact", "product", "start_date", "end_date", "status"]
    list_filter = ["status", ("product", IndexedValuesFilter)]
    search_fields = ["contact__external_id"]
    search_help_text = "A customer id, exactly."
    sortable_by = ["start_date"]
    list_select_related = ["contact"]


@admin.register(Store)
class StoreAdmin(EntityScopedAdminMixin, admin.ModelAdmin):
    list_display = ["code", "name", "city", "entity"]
    search_fields = ["code", "name", "city"]
    list_filter = [("entity", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["entity"]
    autocomplete_fields = ["entity"]


@admin.register(Quarantine)
class QuarantineAdmin(admin.ModelAdmin):
    list_display = ["address", "channel", "reason", "created_at"]
    list_filter = ["channel"]
    search_fields = ["address", "reason"]


@admin.register(ProviderEvent)
class ProviderEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Bounces and complaints reported by providers' webhooks and the bounce mailbox, with
    the message each one matched (none: unmatched) and what it did."""

    list_display = ["received_at", "provider", "kind", "recipient", "message", "unmatched",
                    "quarantined", "unsubscribed", "detail"]  # fmt: skip
    list_filter = ["provider", "kind", "unmatched", "quarantined", "unsubscribed"]
    search_fields = ["recipient", "reference", "event_id"]
    raw_id_fields = ["message"]
    date_hierarchy = "received_at"
    show_full_result_count = False


@admin.register(SavedQuery)
class SavedQueryAdmin(BoundedJSONAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin):
    """The query builder: a condition tree, validated on save, counted on demand."""

    change_form_template = "admin/campaigns/savedquery/change_form.html"
    list_display = ["name", "dimension", "entity", "last_count", "last_counted_at"]
    list_filter = ["dimension", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name"]
    readonly_fields = ["last_count", "last_counted_at", "created_by"]
    autocomplete_fields = ["entity"]

    def get_urls(self):  # type: ignore[no-untyped-def]
        return [
            path("count/", self.admin_site.admin_view(self.count_view), name="campaigns_count"),
            *super().get_urls(),
        ]

    def count_view(self, request: HttpRequest) -> HttpResponse:
        from campaigns.views import count_response

        return count_response(request)

    def render_change_form(self, request, context, *args, **kwargs):  # type: ignore[no-untyped-def]
        context["registry"] = targeting_registry.describe()
        context["count_url"] = reverse("admin:campaigns_count")
        return super().render_change_form(request, context, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: SavedQuery, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


def template_help() -> str:
    """The import kinds' template files (CSV and XLSX), linked under the admin's kind field."""
    from campaigns.views import template_links

    links = format_html_join(
        "; ",
        '{}: <a href="{}" download>CSV</a>, <a href="{}" download>XLSX</a>',
        ((t["label"], t["csv"], t["xlsx"]) for t in template_links()),
    )
    return format_html("Templates (header line and example rows): {}.", links)


class ImportJobForm(forms.ModelForm):
    class Meta:
        model = ImportJob
        fields = ["kind", "file", "entity", "dry_run", "import_valid_rows"]

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        if "entity" in self.fields and user is not None:
            self.fields["entity"].queryset = Entity.objects.visible_to(user)
            self.fields["entity"].required = not is_central_user(user)
        if "file" in self.fields:
            self.fields["file"].help_text = imports.upload_help()
        if "kind" in self.fields:
            self.fields["kind"].help_text = template_help()

    def clean_file(self):  # type: ignore[no-untyped-def]
        return imports.validate_upload(self.cleaned_data["file"])


@admin.register(ImportJob)
class ImportJobAdmin(EntityScopedAdminMixin, admin.ModelAdmin):
    """Imports run by workers: check first (dry run), then import; progress and a row-level
    error report are shown here."""

    form = ImportJobForm
    list_display = ["__str__", "entity", "dry_run", "state", "progress_display", "new_rows",
                    "updated_rows", "error_rows", "created_at"]  # fmt: skip
    list_filter = ["state", "kind", "dry_run"]
    actions = ["import_valid_rows", "import_all"]

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if is_central_user(request.user):
            return queryset
        return queryset.filter(entity__in=Entity.objects.visible_ids(request.user))

    def get_form(self, request, obj=None, **kwargs):  # type: ignore[no-untyped-def]
        form_class = super().get_form(request, obj, **kwargs)

        class BoundForm(form_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, user=request.user, **kw)

        return BoundForm

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in ImportJob._meta.fields] + ["progress_display", "report_link"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["kind", "file", "entity", "dry_run", "import_valid_rows"]
        return ["kind", "file", "entity", "dry_run", "import_valid_rows", "state",
                "progress_display", "total_rows", "new_rows", "updated_rows", "skipped_rows",
                "error_rows", "written_rows", "rows_to_write", "message", "report_link",
                "created_by", "created_at", "finished_at"]  # fmt: skip

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.display(description="progress")
    def progress_display(self, obj: ImportJob) -> str:
        if obj.checked_at is None and obj.total_rows == 0:
            return f"{obj.processed_rows} rows checked"
        shown = f"{obj.processed_rows}/{obj.total_rows} ({obj.progress}%)"
        if obj.rows_to_write:
            shown += f"; written {obj.written_rows}/{obj.rows_to_write} ({obj.write_progress}%)"
        return shown

    @admin.display(description="error report")
    def report_link(self, obj: ImportJob) -> str:
        if not obj.error_report:
            return "—"
        url = reverse("campaigns:import_report", args=[obj.pk])
        return format_html('<a href="{}">Download the error report (CSV)</a>', url)

    def save_model(self, request: HttpRequest, obj: ImportJob, form: Any, change: bool) -> None:
        upload = form.cleaned_data["file"]
        job = imports.create_job(
            kind=obj.kind,
            filename=upload.name,
            content=upload,
            actor=request.user,
            entity=obj.entity,
            dry_run=obj.dry_run,
            import_valid_rows=obj.import_valid_rows,
        )
        obj.pk = job.pk
        obj._state.adding = False

    def _rerun(self, request: HttpRequest, queryset: QuerySet, *, valid_only: bool) -> None:
        queued = 0
        for job in queryset:
            with job.file.open("rb") as handle:
                try:
                    imports.create_job(
                        kind=job.kind,
                        filename=PurePath(job.file.name).name,
                        content=File(handle),
                        actor=request.user,
                        entity=job.entity,
                        dry_run=False,
                        import_valid_rows=valid_only,
                    )
                except imports.ImportFileError as exc:
                    self.message_user(request, f"{job}: {exc}", messages.ERROR)
                    continue
            queued += 1
        self.message_user(request, f"{queued} import(s) queued.", messages.SUCCESS)

    @admin.action(description="Import the file of the selected checks (all rows must be valid)")
    def import_all(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._rerun(request, queryset, valid_only=False)

    @admin.action(description="Import only the valid rows of the selected checks")
    def import_valid_rows(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._rerun(request, queryset, valid_only=True)


class ExecutionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ActivityExecution
    fields = ["activity", "state", "rows_in", "started_at", "finished_at", "error"]
    readonly_fields = fields
    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the run's own visibility applies


class CountInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TransitionCount
    fields = ["transition", "rows"]
    readonly_fields = fields
    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the run's own visibility applies

    verbose_name_plural = "populations per transition"


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "campaign", "simulate", "state", "started_at", "finished_at"]
    list_filter = ["state", "simulate"]
    search_fields = ["campaign__name"]
    list_select_related = ["campaign"]
    readonly_fields = [f.name for f in WorkflowRun._meta.fields] + ["diagram"]
    inlines = [ExecutionInline, CountInline, AuditLogInline]

    @admin.display(description="workflow and populations")
    def diagram(self, obj: WorkflowRun) -> str:
        from campaigns.workflow import diagram

        return diagram.render(obj.campaign, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if is_central_user(request.user):
            return queryset
        return queryset.filter(campaign__entity__in=Entity.objects.visible_ids(request.user))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("campaigns.view_campaign")


class RemovalInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TargetRemoval
    fields = ["contact", "reason", "removed_by", "removed_at"]
    readonly_fields = fields
    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the list's own visibility applies


@admin.register(LocalApproval)
class LocalApprovalAdmin(EntityScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Local target lists: who got which list, its decision, the removals (read-only; the
    review happens on the portal page, which this links to)."""

    list_display = ["__str__", "entity", "mode", "rows", "decision", "deadline", "created_at"]
    list_filter = ["mode"]
    search_fields = ["entity__code", "entity__name", "execution__run__campaign__name"]
    list_select_related = ["entity", "execution__activity", "execution__run__campaign"]
    readonly_fields = ["execution", "entity", "mode", "rows", "deadline", "decision", "review"]
    inlines = [RemovalInline, AuditLogInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        from campaigns.workflow import local_approval

        return (
            super().get_queryset(request).annotate(decision_state=local_approval.decision_state())
        )

    @admin.display(description="decision")
    def decision(self, obj: LocalApproval) -> str:
        return getattr(obj, "decision_state", None) or "—"

    @admin.display(description="review page")
    def review(self, obj: LocalApproval) -> str:
        from campaigns.workflow import local_approval

        return format_html('<a href="{0}">{0}</a>', local_approval.review_url(obj))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("campaigns.view_campaign")


@admin.register(Typology)
class TypologyAdmin(BoundedJSONAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin):
    """Reusable typology rules; the rules JSON is validated on save (problems name the rule)."""

    list_display = ["name", "entity", "purpose", "rule_names", "created_at"]
    search_fields = ["name"]
    list_select_related = ["entity"]

    @admin.display(description="rules")
    def rule_names(self, obj: Typology) -> str:
        return ", ".join(str(rule.get("rule")) for rule in obj.rules if isinstance(rule, dict))


@admin.register(Message)
class MessageAdmin(
    LargeTableAdminMixin, EntityScopedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    """Message rows of the deliveries the user may see: status, excluding rule, errors."""

    list_display = ["contact", "delivery", "channel", "address", "status", "rule", "sent_at"]
    list_filter = ["status", MessageRuleFilter, "channel"]
    search_fields = ["contact__external_id"]  # the help text; get_search_results searches
    search_help_text = "A customer id, exactly."
    sortable_by = ["contact"]
    list_select_related = ["contact", "delivery"]
    raw_id_fields = ["contact", "delivery", "entity"]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):  # type: ignore[no-untyped-def]
        """A customer id, looked up first: the messages are then read through the contact
        history index (contact, sent_at) instead of joining a million contacts."""
        term = search_term.strip()
        if not term:
            return queryset, False
        contacts = list(Contact.objects.filter(external_id=term).values_list("pk", flat=True))
        return queryset.filter(contact_id__in=contacts), False


class StalledFilter(admin.SimpleListFilter):
    """Sending deliveries without progress for DELIVERY_STALL_ALERT_SECONDS (not the hidden
    delivery of a triggered message: it stays "sending" while no trigger comes)."""

    title = "progress"
    parameter_name = "stalled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        minutes = max(1, settings.DELIVERY_STALL_ALERT_SECONDS // 60)
        return [("yes", f"Sending, no progress for {minutes} min")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            limit = timezone.now() - timedelta(seconds=settings.DELIVERY_STALL_ALERT_SECONDS)
            return queryset.filter(state="sending", progress_at__lt=limit, triggered=False)
        return queryset


@admin.register(Delivery)
class DeliveryAdmin(
    BoundedJSONAdminMixin, EntityScopedAdminMixin, ServiceTransitionAdminMixin, admin.ModelAdmin
):
    """Deliveries: a one-off delivery is written here (content validated on save), prepared
    from a saved query and sent with the buttons; workflow deliveries are read-only. The
    figures: targeted, excluded per typology rule, messages by status."""

    list_display = ["label", "campaign", "channel", "dimension", "state", "stalled", "targeted",
                    "prepared_at"]  # fmt: skip
    list_filter = ["state", StalledFilter, "channel"]
    search_fields = ["label", "campaign__name"]
    list_select_related = ["campaign"]
    autocomplete_fields = ["campaign"]
    fields = ["campaign", "label", "channel", "dimension", "saved_query", "typology",
              "category", "sender", "reply_to", "subject", "html_body", "text_body",
              "push_title", "push_data", "columns", "export_format", "track_opens",
              "track_clicks", "requires_approval", "scheduled_at",
              "state", "preparation", "targeted", "exclusions", "by_status", "engagement",
              "prepared_at",
              "sent_at", "progress_at", "export_file", "error", "run", "activity",
              "created_by"]  # fmt: skip
    readonly_fields = ["state", "preparation", "targeted", "exclusions", "by_status",
                       "engagement", "prepared_at", "sent_at", "progress_at", "export_file",
                       "error", "run", "activity", "created_by"]  # fmt: skip
    inlines = [AuditLogInline]
    transition_actions = {
        "start_preparation": (
            "Prepare (target and typology)",
            lambda obj, actor, request: preparation.prepare_one_off(delivery=obj, actor=actor),
        ),
        "send": (
            "Send…",
            lambda obj, actor, request, reason: sending.confirm(
                delivery=obj, actor=actor, reason=reason
            ),
        ),
        "cancel": (
            "Cancel the delivery…",
            lambda obj, actor, request, reason: sending.cancel(
                delivery=obj, actor=actor, reason=reason
            ),
        ),
        "resend_in_doubt": (
            "Send the in-doubt messages again",
            lambda obj, actor, request: sending.resend_in_doubt(delivery=obj, actor=actor),
        ),
    }
    transition_confirmations = {
        "send": sending.send_confirmation,
        "cancel": sending.cancel_confirmation,
    }
    transition_done_messages = {
        "resend_in_doubt": lambda obj, count: (
            f"{counted(count, 'in-doubt message')} sent again (recorded in the history)."
        ),
        "start_preparation": lambda obj, done: (
            "Preparation started: the workers prepare it chunk by chunk; its progress shows below."
        ),
        "send": lambda obj, done: sending.sent_message(obj),
        "cancel": lambda obj, done: sending.cancelled_message(obj),
    }

    class Media:
        js = ["campaigns/delivery_fields.js"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """A saved delivery shows only the fields its channel uses (a push title is not an
        email's); on the add form, the channel's choice hides the others as it changes."""
        fields = list(super().get_fields(request, obj))
        if obj is None:
            return fields
        hidden = delivery_services.fields_hidden(obj.channel)
        return [name for name in fields if name not in hidden]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "channel" and formfield is not None:
            shown = {channel: delivery_services.fields_shown(channel) for channel in Channel}
            formfield.widget.attrs["data-fields"] = json.dumps(
                {"all": list(delivery_services.CHANNEL_ONLY_FIELDS), **shown}
            )
        return formfield

    def available_transition_actions(self, obj: Delivery, request: HttpRequest) -> list[tuple]:
        actions = super().available_transition_actions(obj, request)
        if not (
            is_central_user(request.user) and obj.messages.filter(status="in_doubt").exists()
        ):  # a deliberate choice of the central team, when there is something in doubt
            actions = [(name, label) for name, label in actions if name != "resend_in_doubt"]
        if obj.run_id:  # a workflow's delivery is prepared and sent by its run
            keep = ("cancel", "resend_in_doubt")
            return [(name, label) for name, label in actions if name in keep]
        if obj.state != "prepared":
            actions = [(name, label) for name, label in actions if name != "send"]
        return actions

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: Any = None) -> HttpResponse:  # fmt: skip
        obj = self.get_object(request, object_id)
        since = sending.stalled_since(obj) if obj is not None else None
        if since is not None and request.method == "GET":
            self.message_user(
                request,
                f"No progress since {timezone.localtime(since):%Y-%m-%d %H:%M}: check that the "
                "workers (and beat) are running; recovery re-sends what no live task covers.",
                messages.WARNING,
            )
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(boolean=True, description="stalled")
    def stalled(self, obj: Delivery) -> bool | None:
        return True if sending.stalled_since(obj) else None

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and (obj.run_id or obj.state != "draft"):
            return (
                False
                if request.method == "POST" and "_save" in request.POST
                else (super().has_change_permission(request, obj))
            )
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is not None and (obj.run_id or obj.state != "draft"):
            return self.fields
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Delivery, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="preparation")
    def preparation(self, obj: Delivery) -> str:
        done = preparation.progress(obj) if obj.pk else None
        if not done or not done.chunks:
            return "—"
        return format_html(
            '<progress max="100" value="{}"></progress> {}% · {} of {} chunks, {} of {} rows',
            done.percent, done.percent, done.chunks_done, done.chunks,
            f"{done.rows_done:,}", f"{done.rows:,}",
        )  # fmt: skip

    @admin.display(description="engagement")
    def engagement(self, obj: Delivery) -> str:
        """Its engagement figures (all entities: the admin is the central team's) and a link to
        the report with its charts."""
        from campaigns.delivery import reports

        if not obj.pk or (obj.sent_at is None and obj.state != "sending"):
            return "—"
        f = reports.engagement(obj)
        return format_html(
            "sent {} · delivered {} · bounced {} ({} hard) · opened {} · clicked {} · "
            'click-to-open {} · unsubscribed {} · complaints {} · <a href="{}">report and '
            "charts</a>",
            f.sent, f.delivered, f.bounced, f.bounced_hard, f.opened, f.clicked,
            "—" if f.click_to_open is None else f"{f.click_to_open}%", f.unsubscribed,
            f.complaints, reverse("campaigns:engagement", args=["delivery", obj.pk]),
        )  # fmt: skip

    @admin.display(description="messages by status")
    def by_status(self, obj: Delivery) -> str:
        from django.db.models import Count
        from django.utils.html import format_html_join

        counts = obj.messages.order_by().values_list("status").annotate(n=Count("id"))
        url = reverse("admin:campaigns_message_changelist")
        return (
            format_html_join(
                ", ",
                '<a href="{}?delivery__id__exact={}&amp;status__exact={}">{}: {}</a>',
                ((url, obj.pk, status, status, n) for status, n in counts),
            )
            or "—"
        )


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Engagement events, read-only, for the central team (local entities read their own
    figures in the engagement reports). No full count and no joins: the table is large."""

    list_display = ["id", "kind", "at", "message_id", "delivery_id", "entity_id", "link",
                    "agent", "machine", "detail"]  # fmt: skip
    list_filter = ["kind", "machine", "agent"]
    search_fields = ["=delivery__id", "=message__id"]
    show_full_result_count = False
    ordering = ["-id"]
    list_per_page = 100

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_central_user(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_central_user(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


from campaigns import trigger_admin  # noqa: E402, F401 (registers the triggered messages)
