"""Delivery status notifications (RFC 3464) from the bounce mailbox, and its IMAP poller.

A DSN is a ``multipart/report; report-type=delivery-status`` email: a human-readable part, a
``message/delivery-status`` part (per-message fields such as ``Original-Envelope-Id``, then
one block per recipient: ``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``)
and the original message or its headers (``message/rfc822`` or ``text/rfc822-headers``),
whose ``Message-ID`` names our message. ``Action: failed`` with a ``5.x.x`` status is a hard
bounce, with a ``4.x.x`` status a soft one; ``delayed``, ``delivered``, ``relayed`` and
``expanded`` are not bounces. Abuse reports (RFC 5965 ``report-type=feedback-report``,
``Feedback-Type: abuse``) are complaints.

The poller (``poll_mailbox``, run by beat when ``DELIVERY_BOUNCE_IMAP_URL`` is set) reads the
unseen mails, records each report through ``bounces.record`` (its event id is the DSN's own
Message-ID, or a hash of it, and the recipient: reading a mail twice records nothing twice),
then marks it seen, or deletes it with ``DELIVERY_BOUNCE_IMAP_DELETE``. A mail that is not a
report (an auto-reply) is marked seen and left for a person to read.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import imaplib
import logging
import re
import ssl
from dataclasses import dataclass
from email.message import Message as EmailMessage
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value, parsedate_to_datetime
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from campaigns.engagement import bounces
from campaigns.engagement.bounces import Report
from campaigns.models import BounceKind, BounceProvider

logger = logging.getLogger(__name__)
STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True)
class Notification:
    """One recipient's outcome in a report."""

    kind: str  # a BounceKind
    recipient: str
    status: str
    action: str
    diagnostic: str
    message_id: str  # the original message's Message-ID
    envelope_id: str


def _address(value: str | None) -> str:
    """``rfc822; user@example.com`` → ``user@example.com``."""
    _, _, address = (value or "").rpartition(";")
    return address.strip().strip("<>").strip()


def _blocks(part: EmailMessage) -> list[EmailMessage]:
    """The header blocks of a message/delivery-status (or feedback-report) part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, EmailMessage)]
    text = payload if isinstance(payload, str) else ""
    if part.get("Content-Transfer-Encoding", "").lower() in ("base64", "quoted-printable"):
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    chunks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [HeaderParser().parsestr(chunk + "\n") for chunk in chunks if chunk.strip()]


def _original_headers(report: EmailMessage) -> EmailMessage | None:
    for part in report.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return inner[0]
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            raw = part.get_payload(decode=True) or b""
            return HeaderParser().parsestr(raw.decode("utf-8", "replace"))
    return None


def parse(raw: bytes) -> list[Notification]:
    """The bounces and complaints a report mail carries (empty when it is not a report)."""
    report = email.message_from_bytes(raw, policy=email.policy.compat32)
    if report.get_content_type() != "multipart/report":
        return []
    report_type = str(collapse_rfc2231_value(report.get_param("report-type") or "")).lower()
    original = _original_headers(report)
    message_id = str(original.get("Message-ID", "")).strip() if original is not None else ""
    if report_type == "feedback-report":
        return _feedback(report, message_id)
    if report_type != "delivery-status":
        return []
    part = next((p for p in report.walk() if p.get_content_type() == "message/delivery-status"),
                None)  # fmt: skip
    if part is None:
        return []
    blocks = _blocks(part)
    if not blocks:
        return []
    per_message, per_recipient = blocks[0], blocks[1:]
    envelope_id = str(per_message.get("Original-Envelope-Id", "")).strip()
    found = []
    for block in per_recipient:
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = str(block.get("Action", "")).strip().lower()
        status_match = STATUS.search(str(block.get("Status", "")))
        if not recipient or action != "failed" or not status_match:
            continue
        status = status_match[0]
        kind = {"5": BounceKind.HARD, "4": BounceKind.SOFT}.get(status_match[1])
        if kind is None:
            continue
        found.append(
            Notification(
                kind=kind, recipient=recipient, status=status, action=action,
                diagnostic=" ".join(str(block.get("Diagnostic-Code", "")).split()),
                message_id=message_id or envelope_id, envelope_id=envelope_id,
            )
        )  # fmt: skip
    return found


def _feedback(report: EmailMessage, message_id: str) -> list[Notification]:
    part = next((p for p in report.walk() if p.get_content_type() == "message/feedback-report"),
                None)  # fmt: skip
    if part is None:
        return []
    fields = _blocks(part)
    if not fields or str(fields[0].get("Feedback-Type", "")).strip().lower() != "abuse":
        return []
    recipient = _address(fields[0].get("Original-Rcpt-To"))
    return [
        Notification(
            kind=BounceKind.COMPLAINT, recipient=recipient, status="", action="abuse",
            diagnostic=str(fields[0].get("User-Agent", "")).strip(), message_id=message_id,
            envelope_id="",
        )
    ]  # fmt: skip


def reports(raw: bytes) -> list[Report]:
    """``parse`` as reports for ``bounces.record``."""
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    own_id = str(mail.get("Message-ID", "")).strip() or hashlib.sha256(raw).hexdigest()
    try:
        at = parsedate_to_datetime(str(mail.get("Date", "")))
    except (TypeError, ValueError):
        at = None
    if at is not None and at.tzinfo is None:
        at = None
    return [
        Report(
            provider=BounceProvider.DSN,
            event_id=f"{own_id}:{found.recipient.lower()}",
            kind=found.kind, recipient=found.recipient, message_id=found.message_id,
            detail=" ".join(filter(None, (found.status, found.diagnostic))), at=at,
            by_recipient=False,
        )
        for found in parse(raw)
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The IMAP poller
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    host: str
    port: int
    user: str
    password: str
    folder: str
    tls: bool  # imaps:// (implicit TLS); imap:// uses STARTTLS


def mailbox(url: str) -> Mailbox:
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise ImproperlyConfigured(
            "DELIVERY_BOUNCE_IMAP_URL must look like imaps://user:password@host:993/INBOX"
        )
    tls = parts.scheme == "imaps"
    return Mailbox(
        host=parts.hostname, port=parts.port or (993 if tls else 143),
        user=unquote(parts.username), password=unquote(parts.password or ""),
        folder=unquote(parts.path.lstrip("/")) or "INBOX", tls=tls,
    )  # fmt: skip


def _connect(box: Mailbox) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    if box.tls:
        return imaplib.IMAP4_SSL(box.host, box.port, ssl_context=context, timeout=30)
    connection = imaplib.IMAP4(box.host, box.port, timeout=30)
    connection.starttls(ssl_context=context)
    return connection


def poll_mailbox(url: str | None = None) -> dict[str, int]:
    """Read the unseen mails of the bounce mailbox (at most ``DELIVERY_BOUNCE_IMAP_BATCH``)
    and record their reports. Counts of mails read, reports recorded and replayed."""
    url = url if url is not None else settings.DELIVERY_BOUNCE_IMAP_URL
    counts = {"mails": 0, "reports": 0, "recorded": 0, "replayed": 0, "unmatched": 0}
    if not url:
        return counts
    box = mailbox(url)
    connection = _connect(box)
    try:
        connection.login(box.user, box.password)
        status, _ = connection.select(f'"{box.folder}"')
        if status != "OK":
            raise imaplib.IMAP4.error(f"cannot select {box.folder}")
        status, data = connection.uid("SEARCH", None, "UNSEEN")
        uids = (data[0] or b"").split()[: settings.DELIVERY_BOUNCE_IMAP_BATCH]
        deleted = False
        for uid in uids:
            status, fetched = connection.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched or [] if isinstance(item, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                continue
            counts["mails"] += 1
            found = reports(raw)
            for key, value in bounces.record_all(found).items():
                if key in counts:  # a DSN reports no deliveries ("delivered": 0)
                    counts[key] += value
            counts["reports"] += len(found)
            if found and settings.DELIVERY_BOUNCE_IMAP_DELETE:
                connection.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
                deleted = True
            else:
                connection.uid("STORE", uid, "+FLAGS", "(\\Seen)")
        if deleted:
            connection.expunge()
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            connection.logout()
    logger.info("Bounce mailbox: %s", counts)
    return counts
