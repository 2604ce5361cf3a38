"""Errors as RFC 9457 problem details (``application/problem+json``), bounded JSON parsing.

Every error the API answers has ``type``, ``title``, ``status``, ``detail`` and ``instance``;
a 400 also lists each problem with its path (``errors: [{"path": "rows/3/email", …}]``), and
a 429 carries ``Retry-After``. Refusals by services (``DomainError``) answer 409 with their
message; Django's ``ValidationError`` and ``PermissionDenied`` answer 400 and 403.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from campaigns.targeting import TargetingError
from portal.exceptions import DomainError
from portal.validation import InputError, load_json

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request was refused."
    default_code = "refused"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"

    def __init__(self) -> None:
        super().__init__(
            f"The request body is larger than {settings.API_MAX_BODY_BYTES:,} bytes; "
            "send fewer rows per request."
        )


class ProblemValidationError(exceptions.ValidationError):
    """A 400 whose problems already carry their paths."""

    def __init__(
        self, errors: list[dict[str, str]], detail: str = "The request is invalid."
    ) -> None:
        super().__init__({"errors": errors})
        self.errors = errors
        self.summary = detail


def _paths(data: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error structure into ``{"path", "message"}`` items."""
    found: list[dict[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            name = "" if key == "non_field_errors" else str(key)
            path = f"{prefix}/{name}" if prefix and name else (prefix or name)
            found += _paths(value, path)
    elif isinstance(data, list):
        if all(not isinstance(item, dict | list) for item in data):
            found += [{"path": prefix, "message": str(item)} for item in data]
        else:
            for index, item in enumerate(data):
                if item:
                    found += _paths(item, f"{prefix}/{index}" if prefix else str(index))
    else:
        found.append({"path": prefix, "message": str(data)})
    return found


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, DomainError):
        return Conflict(exc.message)
    if isinstance(exc, TargetingError):
        return ProblemValidationError(exc.as_json(), "The conditions are invalid.")
    if isinstance(exc, InputError):
        return ProblemValidationError(exc.as_json())
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, DjangoPermissionDenied):
        message = str(exc) or "You may not do this."
        return exceptions.PermissionDenied(message)
    return exc


def problem(status_code: int, detail: str, *, instance: str = "", **extra: Any) -> dict[str, Any]:
    phrase = HTTPStatus(status_code).phrase
    body = {"type": "about:blank", "title": phrase, "status": status_code, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Any:
    exc = _translate(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's 500 handling and logging
    request = context.get("request")
    instance = request.get_full_path() if request is not None else ""
    extra: dict[str, Any] = {}
    if isinstance(exc, ProblemValidationError):
        detail = exc.summary
        extra["errors"] = exc.errors
    elif isinstance(exc, exceptions.ValidationError):
        detail = "The request is invalid."
        extra["errors"] = _paths(exc.detail)
    else:
        data = response.data
        detail = str(data.get("detail", "")) if isinstance(data, dict) else str(data)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        extra["retry_after"] = int(exc.wait + 0.999)
    response.data = problem(response.status_code, detail, instance=instance, **extra)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


@csrf_exempt  # it changes nothing: a POST to no endpoint is a 404 too, not a CSRF page
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any path under /api/ that names nothing."""
    return JsonResponse(
        problem(404, "No API endpoint here.", instance=request.get_full_path()),
        status=404,
        content_type=PROBLEM_CONTENT_TYPE,
    )


class BoundedJSONParser(JSONParser):
    """JSON bodies up to ``API_MAX_BODY_BYTES`` (413 beyond) nested at most 64 levels (400)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ParseError("The body is not UTF-8.") from None
        try:
            return load_json(text)
        except InputError as exc:
            raise exceptions.ParseError(exc.message) from None


class BodyLimitMixin:
    """Refuse a declared body over the limit before anything reads it."""

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.API_MAX_BODY_BYTES:
            raise RequestTooLarge()
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
