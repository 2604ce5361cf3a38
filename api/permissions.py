"""Scopes: reading needs a token's ``read`` scope, changing anything its ``write`` scope.

A view may name another scope with ``required_scopes = {"action": "scope"}``. A logged-in
session (the interactive docs) has every scope; the user's own rights still apply.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions

from api.models import ApiToken, Scope


def required_scope(request: Any, view: Any) -> str:
    action = getattr(view, "action", None)
    mapping = getattr(view, "required_scopes", {}) or {}
    if action in mapping:
        return mapping[action]
    return Scope.READ if request.method in permissions.SAFE_METHODS else Scope.WRITE


class HasScope(permissions.IsAuthenticated):
    message = "This token lacks the scope this request needs."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not super().has_permission(request, view):
            return False
        if isinstance(request.auth, ApiToken):
            scope = required_scope(request, view)
            if not request.auth.has_scope(scope):
                self.message = f"This token lacks the “{scope}” scope."
                return False
        return True
