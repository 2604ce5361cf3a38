"""Helpers shared by the portal views of every app."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

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


def file_response(path: str, filename: str) -> FileResponse:
    """Download a stored file (the caller has checked the rights on its owner)."""
    if not path or not default_storage.exists(path):
        raise Http404("The file is no longer available.")
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(path, "rb"), as_attachment=True, filename=filename)
    response["Content-Type"] = content_type
    response["X-Content-Type-Options"] = "nosniff"
    return response


def stored_value_response(values: Mapping[str, Any], name: str) -> FileResponse:
    """Download the file a personalisation value describes ({"name", "path", …})."""
    value = values.get(name)
    if not isinstance(value, Mapping):
        raise Http404
    return file_response(str(value.get("path", "")), str(value.get("name", "file")))


def counted(count: int, singular: str, plural: str = "") -> str:
    """“1 entity”, “5 entities”: a count and its noun, for messages that say what happened."""
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"
