"""Helpers shared by the portal views of every app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import messages
from django.http import HttpRequest

from portal.exceptions import DomainError

T = TypeVar("T")


def attempt(request: HttpRequest, action: Callable[[], T]) -> tuple[bool, T | None]:
    """Run a service call; a refused rule becomes an error message (never a 500).

    ``PermissionDenied`` and ``ValidationError`` propagate: the first is a 403 page, the
    second belongs to the form that called.
    """
    try:
        return True, action()
    except DomainError as exc:
        for problem in exc.problems:
            messages.error(request, problem)
        return False, None


def add_warnings(request: HttpRequest, warnings: list[str]) -> None:
    for warning in warnings:
        messages.warning(request, warning)


def client_ip(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def page_number(request: HttpRequest) -> Any:
    return request.GET.get("page") or 1
