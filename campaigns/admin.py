"""Central workspace for campaigns: reference campaigns with their personalisation fields, and
the list of child campaigns associated with each parent."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django_fsm import can_proceed

from campaigns import services
from campaigns.models import Campaign, PersonalisationField, ScheduledRun
from portal import services as portal_services
from portal.admin_mixins import (
    AuditLogInline,
    EntityScopedAdminMixin,
    ServiceTransitionAdminMixin,
)


class PersonalisationFieldInline(admin.StackedInline):
    model = PersonalisationField
    extra = 0
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
        "link",
        "entity",
        "state",
        "created_at",
        "last_run_at",
        "targeted_count",
        "sent_count",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).select_related("entity")

    @admin.display(description="campaign")
    def link(self, obj: Campaign) -> str:
        url = reverse("admin:campaigns_campaign_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.name)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _campaign_action(name: str):  # type: ignore[no-untyped-def]
    def call(obj: Campaign, actor: Any, request: HttpRequest) -> Campaign:
        return services.run_campaign_transition(campaign=obj, name=name, actor=actor)

    return call


@admin.register(Campaign)
class CampaignAdmin(ServiceTransitionAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin):
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
        "order",
        "created_by",
        "created_at",
        "updated_at",
        "last_run_at",
        "targeted_count",
        "sent_count",
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
        "mark_ready": ("Mark ready", _campaign_action("mark_ready")),
        "pause": ("Pause", _campaign_action("pause")),
        "stop": ("Stop", _campaign_action("stop")),
    }

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        from django.db.models import Count

        return super().get_queryset(request).annotate(children_total=Count("children"))

    @admin.display(description="children", ordering="children_total")
    def child_count(self, obj: Campaign) -> int:
        return obj.children_total

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list:
        inlines: list = []
        if obj is None or obj.kind == "reference":
            inlines.append(PersonalisationFieldInline)
        if obj is not None and obj.kind in ("reference", "parent"):
            inlines.append(ChildCampaignInline)
        if obj is not None:
            inlines.append(AuditLogInline)
        return inlines

    def available_transition_actions(self, obj: Campaign, request: HttpRequest) -> list[tuple]:
        return [
            (name, label)
            for name, (label, _call) in self.transition_actions.items()
            if can_proceed(getattr(obj, name))
        ]

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
    list_display = ["campaign", "entity", "order", "run_at", "state", "created_at"]
    list_filter = ["state", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["campaign__name", "entity__code"]
    list_select_related = ["campaign", "entity", "order__package"]
    readonly_fields = [f.name for f in ScheduledRun._meta.fields]
    inlines = [AuditLogInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
