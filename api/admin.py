import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from api import webhooks
from api.choices import WebhookEvent
from api.models import ApiToken, WebhookDelivery, WebhookEndpoint
from api.services import revoke_token
from portal import services as portal_services
from portal.admin_mixins import (
    AuditLogInline,
    BoundedJSONAdminMixin,
    LargeTableAdminMixin,
    ReadOnlyAdminMixin,
    ResendActionMixin,
)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created by their owners (the secret is shown to them once); central admins
    list and revoke them here. No secret is stored, so none can be shown."""

    list_display = ["name", "user", "prefix", "scopes", "expires_at", "last_used_at", "status"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = [f.name for f in ApiToken._meta.fields]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset:
            revoke_token(token=token, actor=request.user)
        messages.success(request, f"{queryset.count()} token(s) revoked.")


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=WebhookEvent.choices, widget=forms.CheckboxSelectMultiple
    )

    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "events", "active"]


def _show_secret(request: HttpRequest, endpoint: WebhookEndpoint) -> None:
    messages.warning(
        request,
        f"Signing secret of “{endpoint}”: {endpoint.secret} — copy it into the receiving "
        "system now; it is not shown again.",
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(BoundedJSONAdminMixin, admin.ModelAdmin):
    """Central admins register the URLs that receive signed events. The signing secret is
    generated here and shown once; private and loopback addresses are refused (SSRF)."""

    form = WebhookEndpointForm
    list_display = ["name", "url", "events", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "url"]
    readonly_fields = ["created_at", "created_by"]
    actions = ["rotate_secret"]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list:
        return [AuditLogInline] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool):
        if not change:
            endpoint = webhooks.create_endpoint(
                actor=request.user,
                name=obj.name,
                url=obj.url,
                events=obj.events,
                active=obj.active,
            )
            obj.pk, obj.secret = endpoint.pk, endpoint.secret
            _show_secret(request, endpoint)
            return
        super().save_model(request, obj, form, change)
        portal_services.record_audit(
            obj=obj,
            action="change_webhook_endpoint",
            actor=request.user,
            extra={"changed": form.changed_data, "url": obj.url, "events": obj.events},
        )

    @admin.action(description="New signing secret (shown once)", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet) -> None:
        for endpoint in queryset:
            try:
                _show_secret(request, webhooks.rotate_secret(endpoint=endpoint, actor=request.user))
            except PermissionDenied as exc:
                self.message_user(request, str(exc), messages.ERROR)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(
    ResendActionMixin, LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    """The delivery log: each event sent to each endpoint, its attempts and last answer.

    A large table (one row per event and endpoint, kept for months): an estimated, bounded
    paginator, no facet counts, filters whose choices cost no scan (fixed status, event and
    date choices; endpoints from their own table), a search on exact keys through their
    indexes (the event id a receiver sees in ``X-Portal-Delivery``, or the row id), and sorts
    on the indexed creation time only."""

    list_display = [
        "created_at",
        "event",
        "endpoint",
        "status",
        "attempts",
        "response_status",
        "duration_ms",
        "delivered_at",
    ]
    list_filter = ["status", "event", "endpoint", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["event_id"]  # shows the box; get_search_results does the search
    search_help_text = "An event id (the X-Portal-Delivery header) or a delivery number, exactly."
    sortable_by = ["created_at"]
    list_select_related = ["endpoint"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["resend"]
    inlines = [AuditLogInline]

    resend_noun = "delivery(ies)"
    resend_permission = "api.resend_webhookdelivery"

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):  # type: ignore[no-untyped-def]
        """Exact keys only, each through its index: an event id, or a delivery number."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit() and len(term) <= 18:
            return queryset.filter(pk=int(term)), False
        try:
            event_id = uuid.UUID(term)
        except ValueError:
            return queryset.none(), False
        return queryset.filter(event_id=event_id), False

    def resend_row(self, row: Any, actor: Any) -> None:
        webhooks.resend(delivery=row, actor=actor)
