"""API token services: create (the secret shown once), revoke, authenticate, record use."""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from api.models import ApiToken, Scope
from portal import services as portal_services
from portal.models import is_central_user

TOKEN_PREFIX = "dmp"
# The stored last use is refreshed at most this often, so an API call costs no write.
LAST_USE_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    key: str  # the whole secret, shown to its owner once and never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _clean_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted({str(scope) for scope in scopes})
    unknown = [scope for scope in chosen if scope not in Scope.values]
    if unknown:
        raise ValidationError({"scopes": f"Unknown scope(s): {', '.join(unknown)}."})
    if not chosen:
        raise ValidationError({"scopes": "Choose at least one scope."})
    return chosen


def create_token(
    *,
    user: Any,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
    actor: Any = None,
) -> NewToken:
    """A new token for ``user`` (created by the user, or by a superuser for them). The secret
    is returned once; only its SHA-256 is stored."""
    actor = actor or user
    if actor.pk != user.pk and not actor.is_superuser:
        raise PermissionDenied("You may create tokens for yourself only.")
    if not user.is_active:
        raise ValidationError("An inactive user cannot hold API tokens.")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the token a name."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    active = ApiToken.objects.filter(user=user).active().count()
    if active >= settings.API_MAX_TOKENS_PER_USER:
        raise ValidationError(
            f"A user holds at most {settings.API_MAX_TOKENS_PER_USER} active tokens; "
            "revoke one first."
        )
    prefix = secrets.token_hex(6)
    key = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name[:100],
            prefix=prefix,
            key_hash=hash_key(key),
            scopes=_clean_scopes(scopes),
            expires_at=expires_at,
        )
        portal_services.record_audit(
            obj=token,
            action="create_api_token",
            actor=actor,
            extra={"user": user.get_username(), "scopes": token.scopes},
        )
    return NewToken(token=token, key=key)


def may_manage(*, token: ApiToken, actor: Any) -> bool:
    """The owner, a superuser, or a central user holding the right to change users."""
    if actor is None or not actor.is_authenticated or not actor.is_active:
        return False
    if actor.pk == token.user_id or actor.is_superuser:
        return True
    return is_central_user(actor) and actor.has_perm("api.change_apitoken")


def revoke_token(*, token: ApiToken, actor: Any) -> ApiToken:
    """Revoke a token at once (its owner or a central admin). Revoking twice changes nothing."""
    if not may_manage(token=token, actor=actor):
        raise PermissionDenied("You may not revoke this token.")
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.revoked_by = actor
            token.save(update_fields=["revoked_at", "revoked_by"])
            portal_services.record_audit(
                obj=token,
                action="revoke_api_token",
                actor=actor,
                extra={"user": token.user.get_username()},
            )
    return token


def parse_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 12:
        return None
    return parts[1]


# Tokens proven recently, per process: SHA-256 of the key → (until, token with its user).
# A hot caller (a shop triggering messages) then costs no token query; a revoke, any save of
# the token or of its user clears the entry at once in this process (signals below), and in
# the other processes within API_TOKEN_CACHE_SECONDS. Expiry is checked on every request.
_proven: dict[str, tuple[float, ApiToken]] = {}


def forget_tokens(*, token_id: int | None = None, user_id: int | None = None) -> None:
    """Drop cached tokens (one token, a user's, or all)."""
    if token_id is None and user_id is None:
        _proven.clear()
        return
    for digest, (_until, token) in list(_proven.items()):
        if token.pk == token_id or token.user_id == user_id:
            _proven.pop(digest, None)


def _load(prefix: str, digest: str) -> ApiToken | None:
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    if token is None or not hmac.compare_digest(token.key_hash, digest):
        return None
    if settings.API_TOKEN_CACHE_SECONDS > 0:
        # Scoping needs to know whether the owner is central: asked once per cache life.
        is_central_user(token.user)
        if len(_proven) > 10_000:
            _proven.clear()
        _proven[digest] = (time.monotonic() + settings.API_TOKEN_CACHE_SECONDS, token)
    return token


def authenticate_key(key: str) -> ApiToken | None:
    """The active token whose secret is ``key`` (compared in constant time), else None."""
    prefix = parse_key(key)
    if prefix is None:
        return None
    digest = hash_key(key)
    cached = _proven.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        # A copy per request: what a request caches on its user stays its own.
        token = copy.copy(cached[1])
        token.user = copy.copy(cached[1].user)
    else:
        token = _load(prefix, digest)
        if token is None:
            return None
    if not token.is_active or not token.user.is_active:
        return None
    if record_use(token) and cached is not None:
        cached[1].last_used_at = token.last_used_at
    return token


def record_use(token: ApiToken, *, now: datetime | None = None) -> bool:
    """Record the token's last use, writing at most once per ``LAST_USE_RESOLUTION``."""
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USE_RESOLUTION:
        return False
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    return True
