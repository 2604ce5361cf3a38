"""API-triggered messages: ``POST /api/v1/triggers/<key>/`` (token scope "trigger") and the
status of each message. The rules are ``campaigns.triggers``'; this module only maps its
answers to HTTP (problem details)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.problems import (
    PROBLEM_CONTENT_TYPE,
    BodyLimitMixin,
    Conflict,
    ProblemValidationError,
    problem,
)
from api.throttling import TokenRateThrottle
from campaigns import triggers
from campaigns.models import TriggeredMessage


class TriggerRateThrottle(TokenRateThrottle):
    """Triggers have their own budget per token (API_TRIGGER_RATE): an e-commerce site sends
    far more of them than it reads."""

    scope = "trigger"


class RecipientSerializer(serializers.Serializer):
    contact_id = serializers.IntegerField(required=False, help_text="A contact's id.")
    external_id = serializers.CharField(required=False, help_text="A contact's external id.")
    email = serializers.CharField(
        required=False, help_text="Transactional email to someone who is not a contact."
    )
    phone = serializers.CharField(
        required=False, help_text="Transactional SMS to someone who is not a contact."
    )


class TriggerRequestSerializer(serializers.Serializer):
    recipient = RecipientSerializer(help_text="Exactly one of its fields.")
    payload = serializers.JSONField(
        required=False, default=dict, help_text="A JSON object matching the trigger's schema."
    )


class TriggerAcceptedSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    status = serializers.CharField()
    replayed = serializers.BooleanField(
        help_text="True: this Idempotency-Key was seen before; this is the earlier message."
    )
    status_url = serializers.CharField()


class TriggerStatusSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    trigger = serializers.CharField(help_text="The triggered message's name.")
    channel = serializers.CharField()
    address = serializers.CharField()
    contact_id = serializers.IntegerField(allow_null=True)
    status = serializers.CharField(
        help_text="pending, sending, in_flight, sent, failed, in_doubt, cancelled."
    )
    error = serializers.CharField()
    idempotency_key = serializers.CharField()
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)


def _status_url(request: Request, message_id: int) -> str:
    return request.build_absolute_uri(f"/api/v1/triggers/messages/{message_id}/")


class TriggerView(BodyLimitMixin, APIView):
    required_scopes = {None: "trigger"}
    throttle_classes = [TriggerRateThrottle]

    @extend_schema(
        operation_id="trigger_message",
        summary="Trigger a message",
        description=(
            "Send the triggered message published under `key` to one recipient, with a "
            "payload its templates read as `payload.*`. Accepted messages are sent within "
            "seconds on a priority queue. A repeated `Idempotency-Key` (per token owner and "
            "trigger) answers 200 with the earlier message and sends nothing. 400: the payload "
            "breaks the schema (each problem with its JSON path); 404: unknown key or a "
            "recipient outside the caller's contacts; 409: paused; 422: excluded by the "
            "typology (consent, blocklist, quarantine, pressure), nothing sent."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Any text up to 255 characters, unique per business event.",
            )
        ],
        request=TriggerRequestSerializer,
        responses={
            202: TriggerAcceptedSerializer,
            200: OpenApiResponse(TriggerAcceptedSerializer, description="A replay."),
            400: OpenApiResponse(description="Invalid payload or recipient."),
            404: OpenApiResponse(description="Unknown trigger key or recipient."),
            409: OpenApiResponse(description="The trigger is paused."),
            422: OpenApiResponse(description="Excluded by a typology rule."),
        },
        examples=[
            OpenApiExample(
                "Order confirmation",
                value={
                    "recipient": {"external_id": "C-1001"},
                    "payload": {"order_id": "A-42", "total": 59.9},
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, key: str) -> Response:
        data = request.data
        if problems := _body_problems(data):
            raise ProblemValidationError(problems)
        try:
            accepted = triggers.trigger(
                key=key,
                actor=request.user,
                recipient=data.get("recipient") or {},
                payload=data.get("payload", {}),
                idempotency_key=request.headers.get("Idempotency-Key", "").strip(),
            )
        except triggers.TriggerError as exc:
            return _error(request, exc)
        message = accepted.message
        response = Response(
            {
                "message_id": message.pk,
                "status": message.status,
                "replayed": not accepted.created,
                "status_url": _status_url(request, message.pk),
            },
            status=202 if accepted.created else 200,
        )
        if not accepted.created:
            response["Idempotent-Replayed"] = "true"
        return response


def _body_problems(data: Any) -> list[dict[str, str]]:
    """What ``TriggerRequestSerializer`` checks (the documented body), in a few dict looks
    instead of a serializer per request, with DRF's messages."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        return [{"path": "non_field_errors",
                 "message": f"Invalid data. Expected a dictionary, but got {kind}."}]  # fmt: skip
    if "recipient" not in data:
        return [{"path": "recipient", "message": "This field is required."}]
    recipient = data["recipient"]
    if recipient is None:
        return [{"path": "recipient", "message": "This field may not be null."}]
    if not isinstance(recipient, dict):
        kind = type(recipient).__name__
        return [{"path": "recipient",
                 "message": f"Invalid data. Expected a dictionary, but got {kind}."}]  # fmt: skip
    problems = []
    for name in ("contact_id", "external_id", "email", "phone"):
        if name not in recipient:
            continue
        value, path = recipient[name], f"recipient/{name}"
        if value is None:
            problems.append({"path": path, "message": "This field may not be null."})
        elif name == "contact_id":
            if isinstance(value, bool) or not isinstance(value, (int, str, float)):
                problems.append({"path": path, "message": "A valid integer is required."})
            elif not isinstance(value, int):
                try:
                    number = float(value)
                    if number != int(number):
                        raise ValueError(value)
                except (ValueError, OverflowError):
                    problems.append({"path": path, "message": "A valid integer is required."})
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append({"path": path, "message": "Not a valid string."})
        elif str(value).strip() == "":
            problems.append({"path": path, "message": "This field may not be blank."})
    return problems


def _error(request: Request, exc: triggers.TriggerError) -> Response:
    if isinstance(exc, triggers.TriggerRefused):
        body = problem(
            422, exc.detail, instance=request.get_full_path(), rule=exc.rule, reason=exc.detail
        )
        return Response(body, status=422, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, triggers.TriggerNotFound):
        raise exceptions.NotFound(exc.detail)
    if isinstance(exc, triggers.TriggerPaused):
        raise Conflict(exc.detail)
    raise ProblemValidationError(exc.errors, exc.detail)


class TriggerStatusView(APIView):
    required_scopes = {None: "trigger"}

    @extend_schema(
        operation_id="trigger_message_status",
        summary="A triggered message's status",
        responses={200: TriggerStatusSerializer, 404: OpenApiResponse(description="Not yours.")},
    )
    def get(self, request: Request, message_id: int) -> Response:
        record = (
            TriggeredMessage.objects.visible_to(request.user)
            .select_related("message", "definition")
            .filter(message_id=message_id)
            .first()
        )
        if record is None:
            raise exceptions.NotFound("No triggered message of yours has this id.")
        message = record.message
        data: dict[str, Any] = {
            "message_id": message.pk,
            "trigger": record.definition.name,
            "channel": message.channel,
            "address": message.address,
            "contact_id": message.contact_id,
            "status": message.status,
            "error": message.error or message.rule,
            "idempotency_key": record.idempotency_key,
            "created_at": message.created_at,
            "sent_at": message.sent_at,
        }
        return Response(TriggerStatusSerializer(data).data)
