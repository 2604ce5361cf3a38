"""Recording engagement events: one function every source calls (tracking endpoints, provider
webhooks, the bounce mailbox, unsubscribe), so that an event row always carries the same
denormalised columns and the same rules (no IP unless ENGAGEMENT_STORE_IP, a provider's event
id recorded once)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.models import (
    AgentClass,
    EngagementHour,
    Event,
    EventKind,
    Message,
    MessageEngagement,
    Seen,
    SentBlock,
)

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
    try:
        with transaction.atomic():
            event.save()
            summarise([event])
    except IntegrityError:
        if event.ref:  # the provider sent this event already
            return None
        raise
    return event


def record_many(events: Iterable[Event], *, batch_size: int = 2000) -> int:
    """Write built events in bulk (the tracking buffer's flush, without provider refs) and
    their summaries, in one transaction. Returns how many."""
    rows = list(events)
    if rows:
        with transaction.atomic():
            Event.objects.bulk_create(rows, batch_size=batch_size)
            summarise(rows)
    return len(rows)


# --------------------------------------------------------------------------------------------
# Summaries: what the reports read (MessageEngagement, EngagementHour)
# --------------------------------------------------------------------------------------------


def seen_bits(kind: int, machine: bool) -> int:
    """The ``Seen`` bits one event sets on its message."""
    if kind == EventKind.OPEN:
        return Seen.MACHINE_OPENS if machine else Seen.OPENED
    if kind == EventKind.CLICK:
        return Seen.MACHINE_CLICKS if machine else Seen.OPENED | Seen.CLICKED
    return {
        EventKind.DELIVERED: Seen.DELIVERED,
        EventKind.BOUNCE_HARD: Seen.BOUNCED_HARD,
        EventKind.BOUNCE_SOFT: Seen.BOUNCED_SOFT,
        EventKind.UNSUBSCRIBE: Seen.UNSUBSCRIBED,
        EventKind.COMPLAINT: Seen.COMPLAINTS,
    }.get(kind, 0)


CHUNK = 500


def summarise(events: Iterable[Any]) -> None:
    """Add events (``Event`` rows) to the summaries: each message's ``seen`` bits are OR-ed
    in, each hour's opens and clicks added, by upserts (safe beside concurrent writers).
    Call inside the transaction that inserts the events."""
    seen: dict[int, list[Any]] = {}
    hours: dict[tuple, int] = {}
    for event in events:
        if event.message_id is None:
            continue
        kind, machine = int(event.kind), bool(event.machine)
        row = seen.setdefault(event.message_id, [event.delivery_id, event.entity_id, 0])
        row[2] |= seen_bits(kind, machine)
        if kind in (EventKind.OPEN, EventKind.CLICK) and event.delivery_id:
            hour = event.at.replace(minute=0, second=0, microsecond=0)
            key = (event.delivery_id, event.entity_id or 0, hour, kind, machine)
            hours[key] = hours.get(key, 0) + 1
    q = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    table = q(MessageEngagement._meta.db_table)
    rows = [(m, d, e, bits) for m, (d, e, bits) in seen.items()]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            part = rows[start : start + CHUNK]
            cursor.execute(
                f"INSERT INTO {table} (message_id, delivery_id, entity_id, seen) VALUES "
                + ", ".join(["(%s, %s, %s, %s)"] * len(part))
                + f" ON CONFLICT (message_id) DO UPDATE SET seen = {table}.seen | excluded.seen",
                [value for row in part for value in row],
            )
        table = q(EngagementHour._meta.db_table)
        rows = [(d, e, adapt(h), k, m, n) for (d, e, h, k, m), n in hours.items()]
        for start in range(0, len(rows), CHUNK):
            part = rows[start : start + CHUNK]
            cursor.execute(
                f"INSERT INTO {table} (delivery_id, entity_id, hour, kind, machine, events) "
                "VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(part))
                + " ON CONFLICT (delivery_id, hour, entity_id, kind, machine) DO UPDATE SET "
                f"events = {table}.events + excluded.events",
                [value for row in part for value in row],
            )


def delete_with_delivery(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deleted delivery takes its events along (one indexed delete; the event table has no
    foreign key for the database to cascade through)."""
    Event.objects.filter(delivery_id=instance.pk).delete()
    MessageEngagement.objects.filter(delivery_id=instance.pk).delete()
    EngagementHour.objects.filter(delivery_id=instance.pk).delete()
    SentBlock.objects.filter(delivery_id=instance.pk).delete()


def rebuild(delivery_id: int) -> int:
    """The summaries of a delivery computed again from its events, set-based (a repair, and
    the benchmark's set-up), and its sent counts (``sent.refresh``). Returns the number of
    engaged messages."""
    from django.db.models import Case, Count, IntegerField, Max, Value, When
    from django.db.models.functions import Coalesce, TruncHour

    def bit(condition: Q, value: int) -> Max:
        return Max(Case(When(condition, then=Value(value)), default=Value(0),
                        output_field=IntegerField()))  # fmt: skip

    human, machine = Q(machine=False), Q(machine=True)
    bits = [
        bit(Q(kind=EventKind.DELIVERED), Seen.DELIVERED),
        bit(Q(kind=EventKind.BOUNCE_HARD), Seen.BOUNCED_HARD),
        bit(Q(kind=EventKind.BOUNCE_SOFT), Seen.BOUNCED_SOFT),
        bit(human & Q(kind__in=[EventKind.OPEN, EventKind.CLICK]), Seen.OPENED),
        bit(human & Q(kind=EventKind.CLICK), Seen.CLICKED),
        bit(Q(kind=EventKind.UNSUBSCRIBE), Seen.UNSUBSCRIBED),
        bit(Q(kind=EventKind.COMPLAINT), Seen.COMPLAINTS),
        bit(machine & Q(kind=EventKind.OPEN), Seen.MACHINE_OPENS),
        bit(machine & Q(kind=EventKind.CLICK), Seen.MACHINE_CLICKS),
    ]
    seen = bits[0]
    for one in bits[1:]:
        seen = seen + one
    events = Event.objects.filter(delivery_id=delivery_id, message_id__isnull=False).order_by()
    per_message = events.values("message_id").annotate(
        d=Max("delivery_id"), e=Max("entity_id"), s=seen
    )
    sql, params = per_message.query.sql_with_params()
    q = connection.ops.quote_name
    with transaction.atomic():
        MessageEngagement.objects.filter(delivery_id=delivery_id).delete()
        EngagementHour.objects.filter(delivery_id=delivery_id).delete()
        with connection.cursor() as cursor:  # the ORM's SQL as a subquery, parameters bound
            cursor.execute(
                f"INSERT INTO {q(MessageEngagement._meta.db_table)} (message_id, delivery_id, "
                f"entity_id, seen) SELECT message_id, d, e, s FROM ({sql}) per_message",
                params,
            )
            made = cursor.rowcount
        hours = (
            events.filter(kind__in=[EventKind.OPEN, EventKind.CLICK])
            .annotate(hour=TruncHour("at"), owner=Coalesce("entity_id", 0))
            .values("hour", "owner", "kind", "machine")
            .annotate(n=Count("id"))
        )
        EngagementHour.objects.bulk_create(
            [
                EngagementHour(
                    delivery_id=delivery_id,
                    entity_id=row["owner"],
                    hour=row["hour"],
                    kind=row["kind"],
                    machine=row["machine"],
                    events=row["n"],
                )
                for row in hours
            ],
            batch_size=1000,
        )
        from campaigns.engagement.sent import refresh

        refresh(delivery_id)
    return made
