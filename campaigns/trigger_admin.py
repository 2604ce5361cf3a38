"""Admin of API-triggered messages: the central marketer's definitions (publish, pause,
resume, archive through the services; the key shown once published) and the accepted
triggers (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from campaigns import triggers
from campaigns.models import TriggerDefinition, TriggeredMessage, TriggerState
from portal.admin_mixins import (
    AuditLogInline,
    BoundedJSONAdminMixin,
    EntityScopedAdminMixin,
    ReadOnlyAdminMixin,
    ServiceTransitionAdminMixin,
)

CONTENT = ["channel", "kind", "category", "pressure_typology", "sender", "reply_to", "subject",
           "html_body", "text_body", "push_title", "payload_schema"]  # fmt: skip


@admin.register(TriggerDefinition)
class TriggerDefinitionAdmin(
    BoundedJSONAdminMixin, ServiceTransitionAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin
):
    """Templates read ``payload.*`` (described by the JSON Schema) and ``contact.*``; the
    schema and the content are checked on save. Content changes while published wait for a
    pause: a published definition's content is read-only."""

    list_display = ["name", "channel", "kind", "state", "entity", "published_at"]
    list_filter = ["state", "channel", "kind"]
    search_fields = ["name"]
    autocomplete_fields = ["entity"]
    raw_id_fields = ["pressure_typology"]
    inlines = [AuditLogInline]
    fieldsets = [
        (None, {"fields": ["name", "entity", "state", "trigger_url", "delivery_link"]}),
        ("Content", {"fields": CONTENT}),
    ]
    transition_actions = {
        "publish": ("Publish", lambda obj, actor, request: triggers.publish(
            definition=obj, actor=actor)),
        "pause": ("Pause", lambda obj, actor, request: triggers.pause(
            definition=obj, actor=actor)),
        "resume": ("Resume", lambda obj, actor, request: triggers.resume(
            definition=obj, actor=actor)),
        "archive": ("Archive", lambda obj, actor, request: triggers.archive(
            definition=obj, actor=actor)),
    }  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = ["state", "trigger_url", "delivery_link"]
        if obj is not None and obj.state in (TriggerState.PUBLISHED, TriggerState.ARCHIVED):
            return [*fixed, "name", "entity", *CONTENT]
        if obj is not None and obj.delivery_id:
            return [*fixed, "channel"]  # its messages' channel is settled
        return fixed

    def save_model(self, request: HttpRequest, obj: TriggerDefinition, form: Any, change: bool):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="trigger URL")
    def trigger_url(self, obj: TriggerDefinition) -> str:
        if not obj.key:
            return "Given when it is published."
        return f"POST /api/v1/triggers/{obj.key}/"

    @admin.display(description="messages")
    def delivery_link(self, obj: TriggerDefinition) -> str:
        if not obj.delivery_id:
            return "—"
        url = reverse("admin:campaigns_delivery_change", args=[obj.delivery_id])
        return format_html('<a href="{}">Report of its messages</a>', url)


@admin.register(TriggeredMessage)
class TriggeredMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Accepted triggers: who, which key, which message."""

    list_display = ["id", "definition", "owner", "idempotency_key", "message", "created_at"]
    list_filter = ["definition"]
    search_fields = ["idempotency_key"]
    list_select_related = ["definition", "owner", "message"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).visible_to(request.user)
