"""Approval requests in the central workspace, with bulk decisions behind a confirmation."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from approvals import services
from approvals.choices import DecisionChannel, RequestState
from approvals.models import ApprovalLink, ApprovalRequest
from portal.admin_mixins import AuditLogInline, EntityScopedAdminMixin, ReadOnlyAdminMixin
from portal.exceptions import DomainError


class ApprovalLinkInline(admin.TabularInline):
    model = ApprovalLink
    fields = ["approver", "expires_at", "used_at", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdminMixin, EntityScopedAdminMixin, admin.ModelAdmin):
    list_display = ["title", "kind", "entity", "state", "deadline", "decided_by", "decided_at"]
    list_filter = ["state", "kind", ("entity", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["title", "entity__code", "entity__name", "decision_comment"]
    date_hierarchy = "created_at"
    list_select_related = ["entity", "decided_by"]
    readonly_fields = [f.name for f in ApprovalRequest._meta.fields if f.name != "id"] + [
        "approvers",
        "who_may_decide",
    ]
    exclude = ["content_type", "object_id"]
    inlines = [ApprovalLinkInline, AuditLogInline]
    actions = ["approve_selected", "reject_selected"]

    @admin.display(description="who may decide now")
    def who_may_decide(self, obj: ApprovalRequest) -> str:
        """The approver rights and the users holding them at this moment."""
        rights = ", ".join(str(right) for right in obj.approver_rights.select_related("entity"))
        users = ", ".join(user.get_username() for user in services.current_approvers(obj))
        return f"{rights or 'superusers only'}: {users or 'nobody'}"

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.decide_approvalrequest")

    @admin.action(description="Approve the selected requests…", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._bulk(request, queryset, approve=True, action="approve_selected")

    @admin.action(description="Reject the selected requests…", permissions=["decide"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._bulk(request, queryset, approve=False, action="reject_selected")

    def _bulk(
        self, request: HttpRequest, queryset: QuerySet, *, approve: bool, action: str
    ) -> HttpResponse | None:
        pending = list(queryset.filter(state=RequestState.PENDING).select_related("entity"))
        skipped = [r.title for r in queryset.exclude(state=RequestState.PENDING)]
        comment = request.POST.get("comment", "").strip()
        error = ""
        if request.POST.get("confirm") == "yes":
            if not approve and not comment:
                error = "Say why you reject: the comment is sent back."
            else:
                done = 0
                for approval in pending:
                    try:
                        services.decide(
                            request=approval,
                            actor=request.user,
                            approve=approve,
                            comment=comment,
                            via=DecisionChannel.ADMIN,
                        )
                        done += 1
                    except (DomainError, PermissionDenied) as exc:
                        self.message_user(request, f"{approval.title}: {exc}", messages.WARNING)
                verb = "approved" if approve else "rejected"
                self.message_user(request, f"{done} request(s) {verb}.", messages.SUCCESS)
                return None
        return TemplateResponse(
            request,
            "approvals/admin_bulk_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": "Confirm the decision",
                "requests": pending,
                "queryset": pending,
                "skipped": skipped,
                "approve": approve,
                "action": action,
                "comment": comment,
                "error": error,
                "opts": self.model._meta,
            },
        )
