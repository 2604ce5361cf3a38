"""Recording engagement events: one function every source calls (tracking endpoints, provider
webhooks, the bounce mailbox, unsubscribe), so that an event row always carries the same
denormalised columns and the same rules (no IP unless ENGAGEMENT_STORE_IP, a provider's event
id recorded once)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.models import AgentClass, Event, EventKind, Message

DETAIL_MAX = 255
REF_MAX = 100


def store_ip() -> bool:
    return bool(getattr(settings, "ENGAGEMENT_STORE_IP", False))


def build_event(
    *, message_id: int | None, delivery_id: int | None, entity_id: int | None, kind: Any,
    link: int | None = None, at: datetime | None = None, agent_class: Any = "",
    machine: bool = False, ip: str | None = None, detail: str = "", ref: str = "",
) -> Event:  # fmt: skip
    """An unsaved event row (for bulk writes), its columns normalised."""
    return Event(
        message_id=message_id,
        delivery_id=delivery_id,
        entity_id=entity_id,
        kind=EventKind.parse(kind),
        link=link,
        at=at or timezone.now(),
        agent=AgentClass.parse(agent_class),
        machine=bool(machine),
        ip=(ip or None) if store_ip() else None,
        detail=(detail or "")[:DETAIL_MAX],
        ref=(ref or "")[:REF_MAX],
    )


def record_event(
    message: Message | None, kind: Any, *, link: int | None = None, at: datetime | None = None,
    agent_class: Any = "", machine: bool = False, ip: str | None = None, detail: str = "",
    ref: str = "", delivery_id: int | None = None,
) -> Event | None:  # fmt: skip
    """Record one event of ``message`` (None: an event we could not match to a message, kept
    with its ``detail``). ``kind``: an ``EventKind`` or its name ("delivered", "open",
    "click", "bounce_hard", "bounce_soft", "complaint", "unsubscribe"). ``ref``: the
    provider's id of the event; a second event of the same kind and ref is not recorded
    (returns None)."""
    event = build_event(
        message_id=message.pk if message else None,
        delivery_id=message.delivery_id if message else delivery_id,
        entity_id=(message.entity_id or message.contact.entity_id) if message else None,
        kind=kind, link=link, at=at, agent_class=agent_class, machine=machine, ip=ip,
        detail=detail, ref=ref,
    )  # fmt: skip
    if event.ref:
        try:
            with transaction.atomic():
                event.save()
        except IntegrityError:
            return None
        return event
    event.save()
    return event


def record_many(events: Iterable[Event], *, batch_size: int = 2000) -> int:
    """Write built events in bulk (the tracking buffer's flush). Returns how many."""
    rows = list(events)
    if rows:
        Event.objects.bulk_create(rows, batch_size=batch_size, ignore_conflicts=True)
    return len(rows)


def delete_with_delivery(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted delivery takes its events along (one indexed delete; the event table has no
    foreign key for the database to cascade through)."""
    Event.objects.filter(delivery_id=instance.pk).delete()
