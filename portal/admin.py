"""The central team's workspace for entities, operators, the audit log and the outbox."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from portal import bearer, exports, services
from portal.admin_mixins import (
    AuditLogInline,
    EntityScopedAdminMixin,
    ReadOnlyAdminMixin,
    ResendActionMixin,
    register_site_titles,
    use_labelled_autocomplete,
)
from portal.models import AuditLog, Entity, ExportJob, Membership, Notification

register_site_titles(admin.site, settings.SITE_NAME)
use_labelled_autocomplete(admin.site)
User = get_user_model()


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["entity", "user"]
    fields = ["user", "entity", "role", "created_at"]
    readonly_fields = ["created_at"]


class EntityMembershipInline(MembershipInline):
    fields = ["user", "role", "created_at"]


class UserMembershipInline(MembershipInline):
    fields = ["entity", "role", "created_at"]


@admin.register(Entity)
class EntityAdmin(EntityScopedAdminMixin, admin.ModelAdmin):
    list_display = ["indented_name", "code", "kind", "parent", "contact_email", "active"]
    list_filter = ["kind", "active", ("parent", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["code", "name", "contact_email"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["path", "group", "created_at"]
    fields = ["code", "name", "kind", "parent", "contact_email", "sender_name", "sender_address",
              "reply_to", "postal_address", "active", *readonly_fields]  # fmt: skip
    inlines = [EntityMembershipInline, AuditLogInline]
    list_select_related = ["parent"]
    list_per_page = 100

    @admin.display(description="name", ordering="path")
    def indented_name(self, obj: Entity) -> str:
        return f"{'— ' * max(obj.depth, 0)}{obj.name}"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "code"] if obj else fields

    def save_model(self, request: HttpRequest, obj: Entity, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.record_audit(
            obj=obj,
            action="change_entity" if change else "create_entity",
            actor=request.user,
            extra={"changed": form.changed_data},
        )


class UserAdmin(BaseUserAdmin):
    inlines = [UserMembershipInline]
    list_display = ["username", "email", "first_name", "last_name", "is_staff", "roles"]
    list_filter = [*BaseUserAdmin.list_filter, "memberships__role"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("memberships__entity")

    @admin.display(description="roles")
    def roles(self, obj: Any) -> str:
        return ", ".join(f"{m.get_role_display()} ({m.entity.code})" for m in obj.memberships.all())


admin.site.unregister(User)
admin.site.register(User, UserAdmin)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "actor_display",
        "content_type",
        "object_repr",
        "action",
        "from_state",
        "to_state",
        "entity",
    ]
    list_filter = ["action", "content_type", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["object_repr", "actor_repr", "comment", "object_id"]
    date_hierarchy = "created_at"
    list_select_related = ["content_type", "entity"]
    readonly_fields = [f.name for f in AuditLog._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).visible_to(request.user)


@admin.register(ExportJob)
class ExportJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A user's own exports: progress while a worker writes the file (polled by
    ``export_progress.js``; the page refreshes itself without JavaScript), then its download
    link. Another user's export answers 404, as everywhere."""

    list_display = ["__str__", "state", "progress_display", "created_at", "download_link"]
    list_filter = ["state", "kind"]
    fields = ["progress_panel", "kind", "file_format", "columns", "filters", "state",
              "total_rows", "done_rows", "message", "created_at", "started_at", "finished_at",
              "expires_at"]  # fmt: skip
    readonly_fields = fields
    inlines = [AuditLogInline]

    class Media:
        js = ["portal/export_progress.js"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).visible_to(request.user).filter(owner=request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_staff  # rows: the user's own only

    @admin.display(description="progress")
    def progress_display(self, obj: ExportJob) -> str:
        return f"{obj.done_rows}/{obj.total_rows} ({obj.progress}%)"

    @admin.display(description="file")
    def download_link(self, obj: ExportJob) -> str:
        if obj.state != "done" or not obj.file:
            return "—"
        url = reverse("portal:export_download", args=[obj.pk])
        return format_html('<a href="{}">Download</a>', url)

    @admin.display(description="progress")
    def progress_panel(self, obj: ExportJob) -> str:
        status = exports.status(obj)
        text = {
            "queued": "The export is being prepared: waiting for a worker.",
            "running": f"The export is being prepared: {obj.done_rows} of {obj.total_rows} "
            "rows written.",
            "done": f"The export is ready: {obj.done_rows} rows.",
        }.get(obj.state, obj.message or obj.get_state_display())
        return format_html(
            '<div data-export-status="{}"><p role="status" data-export-text>{}</p>'
            '<p><progress max="100" value="{}" data-export-progress>{}%</progress> '
            '<span data-export-count>{} / {}</span> rows</p>'
            '<p data-export-download{}><a class="button" href="{}" download>Download the file'
            "</a></p></div>",
            reverse("portal:export_status", args=[obj.pk]), text, status["progress"],
            status["progress"], obj.done_rows, obj.total_rows,
            "" if status["download_url"] else mark_safe(" hidden"),
            status["download_url"] or "#",
        )  # fmt: skip


@admin.register(Notification)
class NotificationAdmin(
    ResendActionMixin, ReadOnlyAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin
):
    """The outbox as the central team reads it. A secret the email carries (a reset or an
    approval link) is not stored; its place in the text shows as hidden."""

    list_display = [
        "created_at",
        "recipient_email",
        "redacted_subject",
        "kind",
        "status",
        "attempts",
        "sent_at",
    ]
    list_filter = ["status", "kind", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["recipient_email", "subject", "last_error"]
    date_hierarchy = "created_at"
    list_select_related = ["entity"]
    fields = [
        "recipient",
        "recipient_email",
        "entity",
        "kind",
        "redacted_subject",
        "redacted_text",
        "redacted_html",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "sent_at",
        "content_type",
        "object_id",
    ]
    readonly_fields = fields
    actions = ["resend"]
    inlines = [AuditLogInline]

    @admin.display(description="subject", ordering="subject")
    def redacted_subject(self, obj: Notification) -> str:
        return bearer.redact(obj.subject, obj)

    @admin.display(description="text")
    def redacted_text(self, obj: Notification) -> str:
        return bearer.redact(obj.body_text, obj)

    @admin.display(description="HTML (source)")
    def redacted_html(self, obj: Notification) -> str:
        return bearer.redact(obj.body_html, obj)

    resend_noun = "notification(s)"
    resend_permission = "portal.resend_notification"

    def resend_row(self, row: Any, actor: Any) -> None:
        services.resend_notification(notification=row, actor=actor)
