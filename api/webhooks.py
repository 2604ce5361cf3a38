"""Outgoing webhooks: emit an event (an outbox row per subscribed endpoint, written in the
caller's transaction), sign it (HMAC-SHA256 over "timestamp.body") and POST it from a Celery
task with retries and exponential backoff, the way the notifications outbox sends email.

Endpoint URLs must not reach the portal's own network (SSRF): private, loopback, link-local
and reserved addresses are refused when the endpoint is saved and again, on the resolved
address actually connected to, at every send, unless ``WEBHOOK_ALLOW_PRIVATE_HOSTS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from api.choices import WebhookEvent
from api.models import WebhookDelivery, WebhookEndpoint
from portal import outbox
from portal import services as portal_services
from portal.models import is_central_user

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature"
USER_AGENT = "DistributedMarketingPortal-Webhooks/1"
RESPONSE_KEEP = 1000  # characters of the receiver's answer kept in the log


class UnsafeUrl(ValueError):
    """An endpoint URL the portal refuses to call."""


# --------------------------------------------------------------------------------------------
# URLs (SSRF)
# --------------------------------------------------------------------------------------------


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def resolve(url: str) -> tuple[str, int, str]:
    """(host, port, address to connect to) of an allowed URL, else ``UnsafeUrl``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Use an http:// or https:// address.")
    if parts.username or parts.password:
        raise UnsafeUrl("The address must not carry a user name or password.")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("The address has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl("The address has an invalid port.") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"The host “{host}” cannot be resolved.") from exc
    addresses = [info[4][0] for info in infos]
    if not settings.WEBHOOK_ALLOW_PRIVATE_HOSTS:
        blocked = [a for a in addresses if _forbidden(a)]
        if blocked:
            raise UnsafeUrl(
                f"The host “{host}” is a private, loopback or reserved address ({blocked[0]}); "
                "webhooks go to public addresses only."
            )
    return host, port, addresses[0]


def check_url(url: str) -> None:
    resolve(url)


# --------------------------------------------------------------------------------------------
# Endpoints (central admins)
# --------------------------------------------------------------------------------------------


def _check_admin(actor: Any) -> None:
    if not (is_central_user(actor) or getattr(actor, "is_superuser", False)):
        raise PermissionDenied("Only central admins manage webhook endpoints.")


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def create_endpoint(
    *, actor: Any, name: str, url: str, events: Iterable[str], active: bool = True
) -> WebhookEndpoint:
    """Register an endpoint; its secret (``endpoint.secret``) is shown to the admin once."""
    _check_admin(actor)
    endpoint = WebhookEndpoint(
        name=(name or "").strip(),
        url=url,
        events=sorted(set(events)),
        active=active,
        secret=new_secret(),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    endpoint.full_clean()
    with transaction.atomic():
        endpoint.save()
        portal_services.record_audit(
            obj=endpoint,
            action="create_webhook_endpoint",
            actor=actor,
            extra={"url": endpoint.url, "events": endpoint.events},
        )
    return endpoint


def rotate_secret(*, endpoint: WebhookEndpoint, actor: Any) -> WebhookEndpoint:
    """A new secret (shown once); deliveries sent from now on are signed with it."""
    _check_admin(actor)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.secret = new_secret()
        endpoint.save(update_fields=["secret"])
        portal_services.record_audit(obj=endpoint, action="rotate_webhook_secret", actor=actor)
    return endpoint


# --------------------------------------------------------------------------------------------
# Emitting
# --------------------------------------------------------------------------------------------


def _entity_code(obj: Any) -> str | None:
    entity = getattr(obj, "entity", None)
    return entity.code if entity is not None else None


def describe(obj: Any) -> dict[str, Any]:
    """The payload's ``data`` for the objects events are about (ids, codes, states)."""
    from campaigns.models import Campaign, Contact, Delivery
    from packages.models import Order, Package

    if isinstance(obj, Package):
        return {
            "package": {
                "id": obj.pk,
                "label": obj.label,
                "state": obj.state,
                "registration_deadline": obj.registration_deadline,
                "audience": sorted(obj.audience.values_list("code", flat=True)),
            }
        }
    if isinstance(obj, Order):
        return {
            "order": {
                "id": obj.pk,
                "package": obj.package_id,
                "entity": _entity_code(obj),
                "state": obj.state,
                "values": obj.values,
            }
        }
    if isinstance(obj, Campaign):
        return {
            "campaign": {
                "id": obj.pk,
                "name": obj.name,
                "kind": obj.kind,
                "state": obj.state,
                "entity": _entity_code(obj),
                "parent": obj.parent_id,
                "order": obj.order_id,
            }
        }
    if isinstance(obj, Delivery):
        from campaigns.delivery.reports import delivery_figures

        return {
            "delivery": {
                "id": obj.pk,
                "campaign": obj.campaign_id,
                "channel": obj.channel,
                "state": obj.state,
                "sent_at": obj.sent_at,
                "figures": dataclasses.asdict(delivery_figures(obj)),
            }
        }
    if isinstance(obj, Contact):
        return {"contact": {"id": obj.pk, "external_id": obj.external_id}}
    raise TypeError(f"No webhook description for {type(obj).__name__}.")


def enqueue_deliveries(delivery_ids: Iterable[int]) -> None:
    """Hand deliveries to the broker; an outage loses nothing (the sweep enqueues them)."""
    from api.tasks import send_webhook

    outbox.enqueue_each(send_webhook.delay, delivery_ids, "webhook delivery")


# Event ids of events emitted once per object (``emit(once=…)``): derived from the object, so
# a second emission finds the first one's rows.
ONCE_NAMESPACE = uuid.UUID("5b0f3c7e-2f7a-4b7e-9a43-6f1d0a1e8c11")


def emit(
    event: WebhookEvent | str,
    *,
    obj: Any,
    extra: dict[str, Any] | None = None,
    once: str = "",
) -> int:
    """Write one outbox row per active endpoint subscribed to ``event``, in the caller's
    transaction; they are POSTed after it commits. Returns the number of rows written.

    ``once`` names what the event is about (e.g. ``delivery-12``): its id is then derived
    from it, and an endpoint that already has the event gets no second row (a delivery sent
    again after in-doubt messages were resent is still *sent* once to each receiver)."""
    event = WebhookEvent(event)
    endpoints = WebhookEndpoint.objects.subscribed_to(event.value)
    if not endpoints:
        return 0
    event_id = uuid.uuid5(ONCE_NAMESPACE, f"{event.value}:{once}") if once else uuid.uuid4()
    if once:
        done = set(
            WebhookDelivery.objects.filter(event_id=event_id).values_list("endpoint_id", flat=True)
        )
        endpoints = [endpoint for endpoint in endpoints if endpoint.pk not in done]
        if not endpoints:
            return 0
    body = json.dumps(
        {
            "id": str(event_id),
            "event": event.value,
            "created_at": timezone.now(),
            "data": {**describe(obj), **(extra or {})},
        },
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
        sort_keys=True,
    )
    rows = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(endpoint=endpoint, event=event.value, event_id=event_id, body=body)
            for endpoint in endpoints
        ]
    )
    ids = [row.pk for row in rows]
    transaction.on_commit(partial(enqueue_deliveries, ids))
    return len(ids)


# --------------------------------------------------------------------------------------------
# Signing and sending
# --------------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300) -> bool:
    """What a receiver does (documented in the README): recompute, compare in constant time,
    refuse a timestamp older than ``tolerance`` seconds (a replay)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), fields.get("v1", ""))


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    ms: int


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to a second DNS answer (rebinding)."""

    def __init__(self, host: str, port: int, address: str, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, **kwargs: Any) -> None:
        super().__init__(host, port, context=ssl.create_default_context(), **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, *, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` (no redirect followed); raise ``UnsafeUrl`` or ``OSError`` on failure."""
    host, port, address = resolve(url)
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = cls(host, port, address, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
    started = time.perf_counter()
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read(RESPONSE_KEEP * 4).decode("utf-8", "replace")[:RESPONSE_KEEP]
        return Answer(response.status, text, int((time.perf_counter() - started) * 1000))
    finally:
        connection.close()


Outcome = outbox.Outcome


def _request_headers(delivery: WebhookDelivery, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Portal-Event": delivery.event,
        "X-Portal-Delivery": str(delivery.event_id),
        "X-Portal-Attempt": str(delivery.attempts),
        SIGNATURE_HEADER: signature_header(delivery.endpoint.secret, body),
    }


class WebhookSender(outbox.Sender):
    """The webhook outbox: an attempt is one signed POST; a 2xx answer delivers the row,
    anything else is retried. A refused address or a deactivated endpoint fails at once
    (retrying would not help). The answer (status, body start, time) is kept on the row."""

    model = WebhookDelivery
    done_transition = "mark_delivered"
    done_outcome = "delivered"
    related = ("endpoint",)

    def max_attempts(self) -> int:
        return settings.WEBHOOK_MAX_ATTEMPTS

    def retry_base_seconds(self) -> int:
        return settings.WEBHOOK_RETRY_BASE_SECONDS

    def stuck_after(self) -> timedelta:
        return settings.WEBHOOK_STUCK_AFTER

    def attempt(self, row: WebhookDelivery) -> outbox.Attempt:
        if not row.endpoint.active:
            return outbox.Attempt(error="The endpoint is deactivated.", final=True)
        if not row.endpoint.secret:
            return outbox.Attempt(
                error="The signing secret cannot be decrypted: check WEBHOOK_SECRET_KEYS.",
                final=True,
            )
        body = row.body.encode("utf-8")
        try:
            answer = post(row.endpoint.url, body=body, headers=_request_headers(row, body))
        except UnsafeUrl as exc:
            return outbox.Attempt(error=f"Refused: {exc}", final=True)
        except (OSError, http.client.HTTPException) as exc:
            return outbox.Attempt(error=f"{type(exc).__name__}: {exc}"[:2000])
        recorded = {"response_status": answer.status, "response_body": answer.body,
                    "ms": answer.ms}  # fmt: skip
        if not 200 <= answer.status < 300:
            return outbox.Attempt(
                error=f"The endpoint answered HTTP {answer.status}.", answer=recorded
            )
        return outbox.Attempt(answer=recorded)

    def enqueue(self, ids: Iterable[int]) -> None:
        enqueue_deliveries(ids)


WEBHOOKS = WebhookSender()


def deliver(*, delivery_id: int) -> Outcome:
    """POST one pending delivery; safe to call twice (the second call is a no-op). The outbox
    loop (``portal/outbox.py``): claimed in a short transaction, POSTed outside any, recorded
    in another; retried with exponential backoff until ``WEBHOOK_MAX_ATTEMPTS``, then failed.
    """
    return WEBHOOKS.deliver(delivery_id)


def resend(*, delivery: WebhookDelivery, actor: Any) -> WebhookDelivery:
    """Put a failed delivery back in the queue (a central admin's decision)."""
    return WEBHOOKS.resend(delivery, actor=actor)


def resend_stuck(*, batch_size: int = 500) -> dict[str, int]:
    """Release sends abandoned by a dead worker and enqueue pending rows that are overdue."""
    return WEBHOOKS.sweep(batch_size=batch_size)
