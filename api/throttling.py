"""Per-token throttling (a session counts as its user): 429 with ``Retry-After``."""

from __future__ import annotations

from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from api.models import ApiToken


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None  # refused anyway (401): nothing to count
        return self.cache_format % {"scope": self.scope, "ident": ident}
