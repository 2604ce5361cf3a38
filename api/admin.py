from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from api.models import ApiToken
from api.services import revoke_token


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
