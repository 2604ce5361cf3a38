"""Brute-force protection: the client's address, the lockout page, password-reset throttling.

Log-ins are counted by django-axes (settings ``AXES_*``): per username and per client address,
in the database, for the portal and the admin alike since both authenticate through Django's
backends. A password-reset request is not an authentication, so it is counted separately with
django-ratelimit, per email address asked for and per client address.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from axes.helpers import (
    get_client_parameters,
    get_client_user_agent,
    get_client_username,
    get_cool_off,
)
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django_ratelimit.core import get_usage

PASSWORD_RESET_WINDOW = "h"


def client_ip(request: HttpRequest) -> str:
    """The client's address: the connection's, or the one the outermost trusted proxy saw.

    With ``TRUSTED_PROXY_COUNT`` proxies, each appending the address it received the request
    from to ``X-Forwarded-For``, the client's is the count-th entry from the right; anything
    left of it was written by the client and is not trusted.
    """
    count = settings.TRUSTED_PROXY_COUNT
    if count:
        forwarded = [
            part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        ]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= count:
            return forwarded[-count]
    return request.META.get("REMOTE_ADDR", "")


def locked_until(request: HttpRequest, credentials: dict | None) -> datetime | None:
    """When the lock on this request's username or address ends (the later of the two)."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    since = timezone.now() - cool_off
    ends = []
    for filters in get_client_parameters(
        get_client_username(request, credentials),
        client_ip(request),
        get_client_user_agent(request),
        request,
        credentials,
    ):
        recent = AccessAttempt.objects.filter(**filters, attempt_time__gte=since).aggregate(
            failures=Sum("failures_since_start"), last=Max("attempt_time")
        )
        if (recent["failures"] or 0) >= settings.AXES_FAILURE_LIMIT:
            ends.append(recent["last"] + cool_off)
    return max(ends, default=None)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    """The page shown instead of the log-in form while the username or address is locked."""
    until = locked_until(request, credentials)
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cool_off_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
        "locked_until": until,
        "minutes_left": _minutes_until(until),
    }
    return render(
        request, "registration/locked_out.html", context, status=settings.AXES_HTTP_RESPONSE_CODE
    )


def _minutes_until(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return max(1, -(-int((moment - timezone.now()).total_seconds()) // 60))


def _reset_email(group: str, request: HttpRequest) -> str:
    return request.POST.get("email", "").strip().lower()


def _reset_client(group: str, request: HttpRequest) -> str:
    return client_ip(request)


def throttle_password_reset(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Refuse a password-reset request past the limit for its email address or client address.

    Every POST counts, whether or not the address belongs to an account, so the answer tells
    nothing about which addresses exist. A refused request sends nothing.
    """

    @wraps(view)
    def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            limits = (
                ("password-reset:email", _reset_email, settings.PASSWORD_RESET_LIMIT_PER_ADDRESS),
                ("password-reset:client", _reset_client, settings.PASSWORD_RESET_LIMIT_PER_CLIENT),
            )
            usages = [
                get_usage(
                    request,
                    group=group,
                    key=key,
                    rate=f"{limit}/{PASSWORD_RESET_WINDOW}",
                    method="POST",
                    increment=True,
                )
                for group, key, limit in limits
            ]
            refused = [usage for usage in usages if usage and usage["should_limit"]]
            if refused:
                seconds = max(usage["time_left"] for usage in refused)
                return render(
                    request,
                    "registration/password_reset_throttled.html",
                    {"minutes_left": max(1, -(-seconds // 60))},
                    status=429,
                )
        return view(request, *args, **kwargs)

    return throttled
