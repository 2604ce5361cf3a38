"""Per-token throttling (a session counts as its user): 429 with ``Retry-After``.

A fixed-window counter (one cache ``add`` + ``incr`` per request) instead of DRF's sliding
history: DRF keeps, reads and writes back the list of every request time in the window, a
cost that grows with the rate (60,000 entries a minute for a busy trigger token)."""

from __future__ import annotations

import math
import time
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

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        bucket = f"{key}:{window}"
        self.cache.add(bucket, 0, self.duration + 1)
        try:
            count = self.cache.incr(bucket)
        except ValueError:  # evicted between add and incr: count this one
            self.cache.set(bucket, 1, self.duration + 1)
            count = 1
        self._wait = (window + 1) * self.duration - now
        return count <= self.num_requests

    def wait(self) -> float | None:
        return max(1, math.ceil(getattr(self, "_wait", self.duration)))
