"""Bounces and complaints: one rule, whatever reported them (a provider's signed webhook or
a delivery status notification read from the bounce mailbox).

``record(report)`` writes the provider's event, matches it to one of our messages and applies
the effects, in one transaction:

- a **hard bounce** quarantines the message's address;
- **soft bounces** are counted: ``DELIVERY_SOFT_BOUNCE_LIMIT`` soft bounces of distinct
  messages to one address within ``DELIVERY_SOFT_BOUNCE_DAYS`` quarantine it;
- a **complaint** (the recipient marked the message as spam) unsubscribes the contact from
  the channel through the consent path of the unsubscribe link (audited, on the contact's
  history, waiting messages excluded) and quarantines the address.

A report is matched by the Message-ID header the portal sets (``<d{delivery}.m{message}@…>``,
both ids must agree), else (signed webhooks only) by recipient and delivery, else by the
recipient's latest sent email. A report that matches none of our messages is recorded as
unmatched and changes nothing else (a stranger's bounce must not quarantine our contacts).
The provider's event id is unique: a replay records nothing and has no second effect.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Upper
from django.utils import timezone

from api import webhooks
from api.choices import WebhookEvent
from campaigns.choices import Channel
from campaigns.engagement.events import record_event
from campaigns.models import (
    BounceKind,
    Contact,
    Message,
    MessageStatus,
    ProviderEvent,
    Quarantine,
)
from portal import services as portal_services

# The Message-ID the sending code sets: <d{delivery id}.m{message id}@{SITE_URL host}>.
OUR_MESSAGE_ID = re.compile(r"<?\s*d(\d{1,18})\.m(\d{1,18})@[^>\s]+\s*>?")
# The kind of a provider's delivery notification (the receiving server accepted the message):
# not a bounce kind, no ProviderEvent, only a "delivered" engagement event.
DELIVERED = "delivered"
SENT_STATUSES = (MessageStatus.SENT, MessageStatus.IN_DOUBT, MessageStatus.IN_FLIGHT)


@dataclass(frozen=True)
class Report:
    """One bounce or complaint about one recipient, as a provider reported it."""

    provider: str
    event_id: str
    kind: str
    recipient: str = ""
    message_id: str = ""  # the Message-ID header of the message that bounced
    delivery_id: int | None = None
    reference: str = ""  # the provider's own id of the message
    detail: str = ""
    at: datetime | None = None
    # Match by recipient when no Message-ID matches: only for signed provider webhooks (anyone
    # can mail a bounce mailbox, so a DSN must name our message).
    by_recipient: bool = True


@dataclass(frozen=True)
class Outcome:
    event: ProviderEvent
    created: bool  # False: a replay, nothing done


def our_ids(message_id: str) -> tuple[int, int] | None:
    """(delivery id, message id) from a Message-ID the portal set, else None."""
    found = OUR_MESSAGE_ID.fullmatch((message_id or "").strip())
    return (int(found[1]), int(found[2])) if found else None


def match(report: Report) -> Message | None:
    """The message a report is about: by our Message-ID, else recipient and delivery, else
    the recipient's latest sent email."""
    ids = our_ids(report.message_id)
    if ids:
        delivery_id, message_id = ids
        found = (
            Message.objects.select_related("contact")
            .filter(pk=message_id, delivery_id=delivery_id)
            .first()
        )
        if found is not None:
            return found
    recipient = report.recipient.strip()
    if not report.by_recipient or not recipient or "@" not in recipient:
        return None
    contacts = Contact.objects.annotate(upper=Upper("email")).filter(upper=recipient.upper())
    messages = Message.objects.filter(
        contact__in=contacts.values("pk"), channel=Channel.EMAIL, status__in=SENT_STATUSES,
        address__iexact=recipient,
    )  # fmt: skip
    if report.delivery_id:
        messages = messages.filter(delivery_id=report.delivery_id)
    return messages.select_related("contact").order_by("-sent_at", "-pk").first()


def quarantine(*, channel: str, address: str, reason: str, contact: Contact | None = None,
               extra: dict | None = None) -> bool:  # fmt: skip
    """Put ``address`` in quarantine on ``channel`` (deliveries skip it); returns whether it
    was not already. Audited on the contact when one is given."""
    if not address:
        return False
    _, created = Quarantine.objects.get_or_create(
        channel=channel, address=address, defaults={"reason": reason[:255]}
    )
    if created and contact is not None:
        portal_services.record_audit(
            obj=contact, action="quarantined", comment=f"{address} quarantined: {reason}"[:1000],
            extra={"channel": channel, "address": address, **(extra or {})},
        )  # fmt: skip
    return created


def soft_bounces(*, recipient: str, since: datetime) -> int:
    """Soft bounces of distinct messages to ``recipient`` since ``since``."""
    return (
        ProviderEvent.objects.filter(
            recipient=recipient.lower(), kind=BounceKind.SOFT, unmatched=False, at__gte=since
        )
        .values("message_id")
        .distinct()
        .count()
    )


def _apply(event: ProviderEvent, message: Message) -> None:
    """The effects of a matched event (caller's transaction)."""
    from campaigns.engagement import services

    contact = message.contact
    label = f"{event.get_kind_display().lower()} reported by {event.get_provider_display()}"
    reason = f"{label}: {event.detail}" if event.detail else label
    extra = {"provider": event.provider, "event": event.pk, "message": message.pk}
    channel = message.channel
    if event.kind == BounceKind.COMPLAINT:
        event.unsubscribed = services.unsubscribe(
            message=message, source=f"complaint ({event.provider})"
        )
    elif event.kind == BounceKind.SOFT:
        since = event.at - timedelta(days=settings.DELIVERY_SOFT_BOUNCE_DAYS)
        count = soft_bounces(recipient=event.recipient, since=since)
        if count < settings.DELIVERY_SOFT_BOUNCE_LIMIT:
            return
        reason = f"{count} soft bounces in {settings.DELIVERY_SOFT_BOUNCE_DAYS} days ({reason})"
    event.quarantined = quarantine(
        channel=channel, address=message.address, reason=reason, contact=contact, extra=extra
    )
    ProviderEvent.objects.filter(pk=event.pk).update(
        quarantined=event.quarantined, unsubscribed=event.unsubscribed
    )


def _event_id(value: str) -> str:
    value = (value or "").strip()
    return value if len(value) <= 255 else hashlib.sha256(value.encode()).hexdigest()


def record(report: Report) -> Outcome:
    """Record a provider's report and apply its effects; a replay (same provider and event
    id) does nothing and returns the first record."""
    if report.kind not in BounceKind.values:
        raise ValueError(f"Unknown bounce kind {report.kind!r}.")
    event_id = _event_id(report.event_id)
    if not event_id:
        raise ValueError("A provider event needs an id.")
    existing = ProviderEvent.objects.filter(provider=report.provider, event_id=event_id)
    with transaction.atomic():
        first = existing.first()
        if first is not None:
            return Outcome(first, False)
        message = match(report)
        try:
            with transaction.atomic():
                event = ProviderEvent.objects.create(
                    provider=report.provider, event_id=event_id, kind=report.kind,
                    message=message, recipient=report.recipient.strip().lower()[:255],
                    reference=(report.message_id or report.reference).strip()[:255],
                    detail=report.detail.strip()[:500], unmatched=message is None,
                    at=report.at or timezone.now(),
                )  # fmt: skip
        except IntegrityError:  # a concurrent replay recorded it first
            return Outcome(existing.get(), False)
        if message is not None:
            _apply(event, message)
            # The engagement figures (reports, charts) read the event stream.
            record_event(
                message, report.kind, at=event.at, detail=event.detail,
                ref=f"{event.provider}:{event.event_id}"[:64],
            )  # fmt: skip
            webhooks.emit(
                WebhookEvent.MESSAGE_COMPLAINED if event.kind == BounceKind.COMPLAINT
                else WebhookEvent.MESSAGE_BOUNCED,
                obj=message.contact or message,
                extra={"message": message.pk, "delivery": message.delivery_id,
                       "kind": event.kind, "provider": event.provider,
                       "quarantined": event.quarantined},
            )  # fmt: skip
    return Outcome(event, True)


def record_delivered(report: Report) -> bool:
    """Record a provider's delivery notification as a ``delivered`` engagement event of the
    message it matches (matched like a bounce: our Message-ID first). One that matches none
    of our messages is ignored, and a replay (same provider and event id) records nothing.
    Returns whether an event was recorded."""
    event_id = _event_id(report.event_id)
    if not event_id:
        raise ValueError("A provider event needs an id.")
    ref = f"{report.provider}:{event_id}"
    if len(ref) > 100:  # the event's ref column
        ref = f"{report.provider}:{hashlib.sha256(event_id.encode()).hexdigest()}"
    message = match(report)
    if message is None:
        return False
    return record_event(message, DELIVERED, at=report.at, ref=ref) is not None


def record_all(reports: list[Report]) -> dict[str, int]:
    """Record several reports; the counts of new, replayed and unmatched bounces and
    complaints, and of delivery notifications recorded (``delivered``: unmatched ones and
    replays are not counted)."""
    counts = {"recorded": 0, "replayed": 0, "unmatched": 0, "delivered": 0}
    for report in reports:
        if report.kind == DELIVERED:
            counts["delivered"] += record_delivered(report)
            continue
        outcome = record(report)
        counts["recorded" if outcome.created else "replayed"] += 1
        counts["unmatched"] += outcome.created and outcome.event.unmatched
    return counts
