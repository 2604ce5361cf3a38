"""Bounce and complaint webhooks of email providers, each one signature-verified.

- **Amazon SES through SNS** (``/webhooks/bounces/ses/``): SNS signs each message with an
  RSA key whose certificate it serves from ``https://sns.<region>.amazonaws.com/…pem``
  (SignatureVersion 1: SHA1, 2: SHA256). The certificate URL must be on such a host; the
  certificate is fetched once and cached. The topic must be one of
  ``DELIVERY_BOUNCE_SES_TOPIC_ARNS`` (anyone can sign an SNS message from their own topic).
  A SubscriptionConfirmation is confirmed by visiting its SubscribeURL, only on an SNS host.
- **SendGrid** (``/webhooks/bounces/sendgrid/``): the Event Webhook's ECDSA (P-256, SHA256)
  signature of timestamp + body, checked with ``DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY``.
- **Mailgun** (``/webhooks/bounces/mailgun/``): HMAC-SHA256 of timestamp + token with
  ``DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY``.
- **Postmark** (``/webhooks/bounces/postmark/`` with basic auth, or
  ``/webhooks/bounces/postmark/<token>/``): ``DELIVERY_BOUNCE_POSTMARK_TOKEN``.

A provider whose secret is not set answers 404; a bad or missing signature 403 (logged); a
malformed body 400; a bounce that matches none of our messages is recorded as unmatched
(200). Delivery notifications (SES ``Delivery``, SendGrid ``delivered``, Mailgun
``delivered``, Postmark ``Delivery``: the recipient's server accepted the message) record a
``delivered`` engagement event of the message they match, once per provider event id; one
matching none of our messages is ignored (200). Other events (deferred, open, click…) are
acknowledged and ignored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import re
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import HeaderParser
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from campaigns.engagement import bounces
from campaigns.engagement.bounces import Report
from campaigns.models import BounceKind, BounceProvider

logger = logging.getLogger(__name__)


class BadSignature(Exception):
    """The request is not signed by the provider (403)."""


class Malformed(Exception):
    """The body is not what the provider sends (400)."""


class Unavailable(Exception):
    """We cannot check the request now (the certificate cannot be fetched): 503, retried."""


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise Malformed("the body is not JSON") from None


def _text(value: Any, name: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool) or (required and value == ""):
        raise Malformed(f"“{name}” must be a non-empty string")
    return str(value)


def _when(value: Any) -> datetime | None:
    """An ISO 8601 string or a Unix timestamp; None when absent or unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            found = parse_datetime(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if found is not None and found.tzinfo is None:
            found = found.replace(tzinfo=UTC)
        return found
    return None


def _detail(*parts: Any) -> str:
    return " ".join(str(p).strip() for p in parts if p not in (None, ""))[:500]


def _delivery_id(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


# --------------------------------------------------------------------------------------------
# Amazon SES through SNS
# --------------------------------------------------------------------------------------------

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
SNS_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
SNS_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
CERT_CACHE_SECONDS = 24 * 3600
CERT_MAX_BYTES = 64 * 1024


def is_sns_url(url: Any, *, path_suffix: str = "") -> bool:
    """An https URL on an SNS host (sns.<region>.amazonaws.com)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and not parts.username
        and SNS_HOST.fullmatch(parts.hostname or "") is not None
        and parts.path.endswith(path_suffix)
    )


def fetch(url: str) -> bytes:
    """GET an SNS URL (the signing certificate, a subscription confirmation)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(CERT_MAX_BYTES)


def sns_public_key(url: str) -> rsa.RSAPublicKey:
    key = f"sns-cert:{hashlib.sha256(url.encode()).hexdigest()}"
    pem = cache.get(key)
    if pem is None:
        try:
            pem = fetch(url)
        except OSError as error:
            raise Unavailable(f"the SNS certificate cannot be fetched: {error}") from None
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BadSignature("the signing certificate is not a PEM certificate") from None
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise BadSignature("the signing certificate is not valid now")
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise BadSignature("the signing certificate has no RSA key")
    cache.set(key, pem, CERT_CACHE_SECONDS)
    return public


def sns_string_to_sign(payload: dict[str, Any]) -> bytes:
    fields = SNS_SIGNED_FIELDS.get(payload.get("Type"))  # type: ignore[arg-type]
    if fields is None:
        raise Malformed("unknown SNS message Type")
    lines = []
    for name in fields:
        value = payload.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise Malformed(f"the SNS message has no {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def verify_sns(payload: dict[str, Any]) -> None:
    algorithm = SNS_HASHES.get(str(payload.get("SignatureVersion", "")))
    if algorithm is None:
        raise BadSignature("unknown or missing SignatureVersion")
    url = payload.get("SigningCertURL") or payload.get("SigningCertUrl")
    if not is_sns_url(url, path_suffix=".pem"):
        raise BadSignature("the certificate URL is not on an SNS host")
    try:
        signature = base64.b64decode(str(payload.get("Signature") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("the signature is not base64") from None
    if not signature:
        raise BadSignature("no signature")
    data = sns_string_to_sign(payload)
    try:
        sns_public_key(url).verify(signature, data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise BadSignature("the SNS signature does not match") from None


def _ses_headers(mail: dict[str, Any]) -> dict[str, str]:
    found = {}
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and isinstance(header.get("name"), str):
            found.setdefault(header["name"].lower(), str(header.get("value") or ""))
    return found


def ses_reports(notification: Any, sns_id: str) -> list[Report]:
    """The bounce or complaint reports of one SES notification (the SNS ``Message``)."""
    if not isinstance(notification, dict):
        raise Malformed("the SNS Message is not a JSON object")
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind not in ("Bounce", "Complaint", "Delivery"):
        return []  # sends, opens…: not ours to record here
    mail = notification.get("mail")
    mail = mail if isinstance(mail, dict) else {}
    headers = _ses_headers(mail)
    common = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    message_id = headers.get("message-id") or str(common.get("messageId") or "")
    delivery_id = _delivery_id(headers.get("x-portal-delivery"))
    reference = str(mail.get("messageId") or "")
    if kind == "Delivery":
        body = notification.get("delivery")
        if not isinstance(body, dict) or not isinstance(body.get("recipients"), list):
            raise Malformed("a Delivery notification needs delivery.recipients")
        # One delivery per recipient of one SES message: the id holds across SNS retries.
        mail_id = reference or sns_id
        return [
            Report(
                provider=BounceProvider.SES,
                event_id=f"{mail_id}:delivered:{_text(address, 'recipients').lower()}",
                kind=bounces.DELIVERED, recipient=address, message_id=message_id,
                delivery_id=delivery_id, reference=reference, at=_when(body.get("timestamp")),
            )
            for address in body["recipients"]
        ]  # fmt: skip
    if kind == "Bounce":
        body = notification.get("bounce")
        if not isinstance(body, dict) or not isinstance(body.get("bouncedRecipients"), list):
            raise Malformed("a Bounce notification needs bounce.bouncedRecipients")
        permanent = body.get("bounceType") == "Permanent"
        event_kind = BounceKind.HARD if permanent else BounceKind.SOFT
        recipients = body["bouncedRecipients"]
    else:
        body = notification.get("complaint")
        if not isinstance(body, dict) or not isinstance(body.get("complainedRecipients"), list):
            raise Malformed("a Complaint notification needs complaint.complainedRecipients")
        if body.get("complaintFeedbackType") == "not-spam":
            return []
        event_kind = BounceKind.COMPLAINT
        recipients = body["complainedRecipients"]
    feedback = str(body.get("feedbackId") or sns_id)
    reports = []
    for recipient in recipients:
        if not isinstance(recipient, dict):
            raise Malformed("each recipient must be an object")
        address = _text(recipient.get("emailAddress"), "emailAddress")
        reports.append(
            Report(
                provider=BounceProvider.SES, event_id=f"{feedback}:{address.lower()}",
                kind=event_kind, recipient=address, message_id=message_id,
                delivery_id=delivery_id, reference=reference,
                detail=_detail(body.get("bounceType"), body.get("bounceSubType"),
                               recipient.get("status"), recipient.get("diagnosticCode"),
                               body.get("complaintFeedbackType")),
                at=_when(body.get("timestamp")),
            )
        )  # fmt: skip
    return reports


def confirm_subscription(url: str) -> None:
    """Visit a SubscribeURL (outside any transaction: a network call)."""
    fetch(url)


def handle_ses(request: HttpRequest) -> dict[str, Any]:
    if not settings.DELIVERY_BOUNCE_SES_TOPIC_ARNS:
        raise Http404
    payload = _json(request.body)
    if not isinstance(payload, dict):
        raise Malformed("the body must be a JSON object")
    verify_sns(payload)
    if payload.get("TopicArn") not in settings.DELIVERY_BOUNCE_SES_TOPIC_ARNS:
        raise BadSignature(f"topic {str(payload.get('TopicArn'))[:200]!r} is not configured")
    kind = payload["Type"]
    if kind == "SubscriptionConfirmation":
        url = payload.get("SubscribeURL")
        if not is_sns_url(url):
            raise Malformed("the SubscribeURL is not on an SNS host")
        try:
            confirm_subscription(url)
        except OSError as error:
            raise Unavailable(f"the subscription cannot be confirmed: {error}") from None
        logger.info("SES bounces: subscribed to %s", payload["TopicArn"])
        return {"subscribed": payload["TopicArn"]}
    if kind == "UnsubscribeConfirmation":
        return {"unsubscribed": payload["TopicArn"]}
    reports = ses_reports(_json(str(payload["Message"]).encode()), str(payload["MessageId"]))
    return bounces.record_all(reports)


# --------------------------------------------------------------------------------------------
# SendGrid
# --------------------------------------------------------------------------------------------

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


@functools.lru_cache(maxsize=4)
def sendgrid_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or a PEM."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = serialization.load_der_public_key(base64.b64decode(text))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve key")
    return key


def verify_sendgrid(request: HttpRequest) -> None:
    signature = request.headers.get(SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(SENDGRID_TIMESTAMP, "")
    if not signature or not timestamp:
        raise BadSignature("the signature or timestamp header is missing")
    try:
        key = sendgrid_public_key(settings.DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY)
    except (ValueError, binascii.Error):
        raise Unavailable("DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY is not a public key") from None
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + request.body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise BadSignature("the SendGrid signature does not match") from None


def sendgrid_reports(events: Any) -> list[Report]:
    if not isinstance(events, list):
        raise Malformed("the body must be a JSON array of events")
    reports = []
    for event in events:
        if not isinstance(event, dict):
            raise Malformed("each event must be an object")
        name = event.get("event")
        if name not in ("bounce", "spamreport", "delivered"):
            continue  # deferred, open, click, dropped…
        address = _text(event.get("email"), "email")
        if name == "delivered":
            kind = bounces.DELIVERED
        elif name == "spamreport":
            kind = BounceKind.COMPLAINT
        else:
            kind = BounceKind.SOFT if event.get("type") == "blocked" else BounceKind.HARD
        event_id = _text(event.get("sg_event_id"), "sg_event_id", required=False) or (
            f"{event.get('sg_message_id')}:{name}:{address.lower()}:{event.get('timestamp')}"
        )
        reports.append(
            Report(
                provider=BounceProvider.SENDGRID, event_id=event_id, kind=kind,
                recipient=address, message_id=str(event.get("smtp-id") or ""),
                delivery_id=_delivery_id(event.get("portal_delivery")),
                reference=str(event.get("sg_message_id") or ""),
                detail=_detail(event.get("type"), event.get("status"), event.get("reason")),
                at=_when(event.get("timestamp")),
            )
        )  # fmt: skip
    return reports


def handle_sendgrid(request: HttpRequest) -> dict[str, Any]:
    if not settings.DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY:
        raise Http404
    verify_sendgrid(request)
    return bounces.record_all(sendgrid_reports(_json(request.body)))


# --------------------------------------------------------------------------------------------
# Mailgun
# --------------------------------------------------------------------------------------------


def verify_mailgun(payload: dict[str, Any]) -> None:
    signed = payload.get("signature")
    if not isinstance(signed, dict):
        raise BadSignature("no signature")
    timestamp, token, signature = (
        str(signed.get(name) or "") for name in ("timestamp", "token", "signature")
    )
    if not (timestamp and token and signature):
        raise BadSignature("the signature is incomplete")
    expected = hmac.new(
        settings.DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY.encode(),
        (timestamp + token).encode(),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BadSignature("the Mailgun signature does not match")


def mailgun_reports(payload: dict[str, Any]) -> list[Report]:
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise Malformed("the body needs an event-data object")
    name = data.get("event")
    if name == "complained":
        kind = BounceKind.COMPLAINT
    elif name == "failed":
        kind = BounceKind.HARD if data.get("severity") == "permanent" else BounceKind.SOFT
    elif name == "delivered":
        kind = bounces.DELIVERED
    else:
        return []
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    variables = data.get("user-variables")
    variables = variables if isinstance(variables, dict) else {}
    return [
        Report(
            provider=BounceProvider.MAILGUN, event_id=_text(data.get("id"), "event-data.id"),
            kind=kind, recipient=_text(data.get("recipient"), "event-data.recipient"),
            message_id=str(headers.get("message-id") or ""),
            delivery_id=_delivery_id(variables.get("portal_delivery")),
            detail=_detail(data.get("severity"), data.get("reason"), status.get("code"),
                           status.get("description") or status.get("message")),
            at=_when(data.get("timestamp")),
        )
    ]  # fmt: skip


def handle_mailgun(request: HttpRequest) -> dict[str, Any]:
    if not settings.DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY:
        raise Http404
    payload = _json(request.body)
    if not isinstance(payload, dict):
        raise Malformed("the body must be a JSON object")
    verify_mailgun(payload)
    return bounces.record_all(mailgun_reports(payload))


# --------------------------------------------------------------------------------------------
# Postmark
# --------------------------------------------------------------------------------------------

POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked"})


def verify_postmark(request: HttpRequest, token: str | None) -> None:
    expected = settings.DELIVERY_BOUNCE_POSTMARK_TOKEN.encode()
    if token is not None:
        if not hmac.compare_digest(token.encode(), expected):
            raise BadSignature("the token in the URL does not match")
        return
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credentials:
        raise BadSignature("no basic authentication")
    try:
        user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        raise BadSignature("the basic authentication is not readable") from None
    username = settings.DELIVERY_BOUNCE_POSTMARK_USERNAME.encode()
    if not (hmac.compare_digest(user.encode(), username)
            & hmac.compare_digest(password.encode(), expected)):  # fmt: skip
        raise BadSignature("the basic authentication does not match")


def postmark_reports(payload: Any) -> list[Report]:
    if not isinstance(payload, dict):
        raise Malformed("the body must be a JSON object")
    record_type, kind_name = payload.get("RecordType"), payload.get("Type")
    if record_type == "SpamComplaint" or kind_name == "SpamComplaint":
        kind = BounceKind.COMPLAINT
    elif record_type == "Bounce" and kind_name in POSTMARK_HARD:
        kind = BounceKind.HARD
    elif record_type == "Bounce" and kind_name in POSTMARK_SOFT:
        kind = BounceKind.SOFT
    elif record_type == "Delivery":
        return [postmark_delivery(payload)]
    else:
        return []  # opens, clicks, auto-replies…
    content = payload.get("Content")
    message_id = ""
    if isinstance(content, str) and content:
        message_id = str(HeaderParser().parsestr(content, headersonly=True).get("Message-ID", ""))
    metadata = payload.get("Metadata") if isinstance(payload.get("Metadata"), dict) else {}
    return [
        Report(
            provider=BounceProvider.POSTMARK, event_id=_text(payload.get("ID"), "ID"),
            kind=kind, recipient=_text(payload.get("Email"), "Email"), message_id=message_id,
            delivery_id=_delivery_id(metadata.get("portal_delivery")),
            reference=str(payload.get("MessageID") or ""),
            detail=_detail(kind_name, payload.get("Description"), payload.get("Details")),
            at=_when(payload.get("BouncedAt")),
        )
    ]  # fmt: skip


def postmark_delivery(payload: dict[str, Any]) -> Report:
    """A Postmark Delivery webhook: no event id nor our Message-ID in it; one delivery per
    Postmark message and recipient, matched by recipient (and delivery, from the metadata)."""
    recipient = _text(payload.get("Recipient"), "Recipient")
    reference = _text(payload.get("MessageID"), "MessageID")
    metadata = payload.get("Metadata") if isinstance(payload.get("Metadata"), dict) else {}
    return Report(
        provider=BounceProvider.POSTMARK,
        event_id=f"{reference}:delivered:{recipient.lower()}",
        kind=bounces.DELIVERED,
        recipient=recipient,
        reference=reference,
        delivery_id=_delivery_id(metadata.get("portal_delivery")),
        at=_when(payload.get("DeliveredAt")),
    )


def handle_postmark(request: HttpRequest, token: str | None = None) -> dict[str, Any]:
    if not settings.DELIVERY_BOUNCE_POSTMARK_TOKEN:
        raise Http404
    verify_postmark(request, token)
    return bounces.record_all(postmark_reports(_json(request.body)))


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def _webhook(provider: str, handle: Callable[..., dict[str, Any]]) -> Callable[..., HttpResponse]:
    @csrf_exempt
    @require_POST
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            result = handle(request, **kwargs)
        except BadSignature as error:
            logger.warning("%s bounce webhook: refused a request from %s: %s", provider,
                           request.META.get("REMOTE_ADDR", "?"), error)  # fmt: skip
            return JsonResponse({"error": "forbidden"}, status=403)
        except Malformed as error:
            return JsonResponse({"error": str(error)}, status=400)
        except Unavailable as error:
            logger.error("%s bounce webhook: %s", provider, error)
            return JsonResponse({"error": "try again later"}, status=503)
        return JsonResponse(result)

    view.__name__ = f"{provider}_bounces"
    return view


ses = _webhook("SES", handle_ses)
sendgrid = _webhook("SendGrid", handle_sendgrid)
mailgun = _webhook("Mailgun", handle_mailgun)
postmark = _webhook("Postmark", handle_postmark)
