"""Reports computed from the message rows (one aggregate query each): per delivery and
entity, per campaign (with its child campaigns), per package, per contact."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Min, Q, QuerySet, Sum

from campaigns.models import (
    Campaign,
    Delivery,
    EngagementHour,
    Event,
    EventKind,
    Message,
    MessageEngagement,
    MessageStatus,
    Seen,
    SentBlock,
)
from portal import spreadsheets

STATUSES = [status.value for status in MessageStatus]


@dataclass
class Figures:
    """Messages by status. Once a delivery is finished they add up: targeted = sent + in
    doubt + failed + excluded + cancelled (``accounted``)."""

    targeted: int = 0
    excluded: int = 0
    pending: int = 0
    sending: int = 0
    in_flight: int = 0
    in_doubt: int = 0
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def prepared(self) -> int:
        """Messages left to send after the typology (the rest were excluded)."""
        return self.targeted - self.excluded

    @property
    def waiting(self) -> int:
        """Still to be sent, or being sent right now."""
        return self.pending + self.sending + self.in_flight

    @property
    def accounted(self) -> int:
        return self.sent + self.in_doubt + self.failed + self.excluded + self.cancelled


def _counts() -> dict[str, Any]:
    return {
        "targeted": Count("id"),
        **{status: Count("id", filter=Q(status=status)) for status in STATUSES},
    }


def _figures(row: dict[str, Any], by_rule: dict[str, int] | None = None) -> Figures:
    return Figures(
        targeted=row["targeted"], excluded=row["excluded"], pending=row["pending"],
        sending=row["sending"], in_flight=row["in_flight"], in_doubt=row["in_doubt"],
        sent=row["sent"], failed=row["failed"], cancelled=row["cancelled"],
        by_rule=by_rule or {},
    )  # fmt: skip


def delivery_figures(delivery: Delivery) -> Figures:
    row = Message.objects.filter(delivery=delivery).aggregate(**_counts())
    by_rule = dict(
        Message.objects.filter(delivery=delivery, status=MessageStatus.EXCLUDED)
        .order_by()
        .values_list("rule")
        .annotate(n=Count("id"))
    )
    return _figures(row, by_rule)


def in_doubt(delivery: Delivery, limit: int = 50) -> QuerySet:
    """The delivery's in-doubt messages (the provider may or may not have accepted them)."""
    return (
        Message.objects.filter(delivery=delivery, status=MessageStatus.IN_DOUBT)
        .select_related("contact")
        .order_by("id")[:limit]
    )


def by_entity(messages: QuerySet) -> list[tuple[str, str, Figures]]:
    """Figures per entity (code, name), for the messages given (already scoped)."""
    rows = (
        messages.order_by()
        .values("entity__code", "entity__name")
        .annotate(**_counts())
        .order_by("entity__code")
    )
    return [(row["entity__code"] or "—", row["entity__name"] or "", _figures(row)) for row in rows]


def campaign_deliveries(campaign: Campaign) -> QuerySet:
    """The campaign's deliveries and its child campaigns' (a parent sees its children)."""
    return Delivery.objects.filter(Q(campaign=campaign) | Q(campaign__parent=campaign))


def totals(deliveries: QuerySet) -> Figures:
    """The messages of several deliveries added up (one aggregate query)."""
    return _figures(Message.objects.filter(delivery__in=deliveries).aggregate(**_counts()))


# Report levels that other apps add (``register_report_subject``; the report view reads
# them): the package level is the packages app's, so campaigns does not import packages.
ReportSubjectLoader = Callable[[Any, int], tuple[Any, Any, str]]
REPORT_SUBJECTS: dict[str, ReportSubjectLoader] = {}


def register_report_subject(level: str, loader: ReportSubjectLoader) -> None:
    """Let ``level`` be an engagement report's subject: ``loader(user, pk)`` returns (the
    object, its deliveries, its title), raising Http404 for what the user may not read."""
    REPORT_SUBJECTS[level] = loader


def package_deliveries(package: Any) -> QuerySet:
    """A package's deliveries: those of its reference campaign and of the child campaigns
    created from its orders."""
    return Delivery.objects.filter(
        Q(campaign=package.reference_campaign) | Q(campaign__order__package=package)
    )


def history(contact_id: int) -> QuerySet:
    """A contact's communication history, newest first (also what pressure rules count)."""
    return (
        Message.objects.filter(contact_id=contact_id)
        .exclude(status=MessageStatus.EXCLUDED)
        .select_related("delivery__campaign")
        .order_by("-sent_at", "-id")
    )


def entity_csv(delivery: Delivery, messages: QuerySet) -> bytes:
    out = io.StringIO()
    writer = spreadsheets.csv_writer(out)
    writer.writerow(["entity", "name", "targeted", "excluded", "sent", "failed", "pending",
                     "in_doubt", "cancelled"])  # fmt: skip
    for code, name, figures in by_entity(messages):
        writer.writerow([code, name, figures.targeted, figures.excluded, figures.sent,
                         figures.failed, figures.waiting, figures.in_doubt,
                         figures.cancelled])  # fmt: skip
    return out.getvalue().encode()


# --------------------------------------------------------------------------------------------
# Engagement: what the events say (campaigns.models.Event), at every level
# --------------------------------------------------------------------------------------------
#
# Every level is "some deliveries, seen by someone": a delivery; a campaign and its child
# campaigns; a package (its reference campaign and the orders' children); an entity (the
# deliveries its contacts received). ``entities`` narrows the figures to the messages of those
# entities' contacts (a local user's own), None: all. Unique counts count messages: a message
# opened three times is one open. A human click also counts as an open (images blocked, the
# reader clicked). Machine events (see ``campaigns.engagement.tracking``) are kept out of the
# opened and clicked figures and shown apart.

HOURS = 72  # the timeline: per hour over the first three days from the first send


@dataclass
class Engagement:
    """Engagement figures of a set of messages."""

    sent: int = 0
    delivered: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    complaints: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0

    @property
    def bounced(self) -> int:
        return self.bounced_hard + self.bounced_soft

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return round(100 * part / whole, 1) if whole else None

    @property
    def open_rate(self) -> float | None:
        """Unique human opens per message sent, in percent."""
        return self._rate(self.opened, self.sent)

    @property
    def click_rate(self) -> float | None:
        return self._rate(self.clicked, self.sent)

    @property
    def click_to_open(self) -> float | None:
        """Unique human clicks per unique human open, in percent."""
        return self._rate(self.clicked, self.opened)

    @property
    def unsubscribe_rate(self) -> float | None:
        return self._rate(self.unsubscribed, self.sent)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in ENGAGEMENT_COLUMNS},
            "open_rate": self.open_rate, "click_rate": self.click_rate,
            "click_to_open": self.click_to_open,
        }  # fmt: skip


ENGAGEMENT_COLUMNS = ["sent", "delivered", "bounced_hard", "bounced_soft", "opened", "clicked",
                      "unsubscribed", "complaints", "machine_opens", "machine_clicks"]  # fmt: skip


EVENT_FIGURES = [c for c in ENGAGEMENT_COLUMNS if c != "sent"]


def _ids(deliveries: Any) -> list[int]:
    if isinstance(deliveries, Delivery):
        return [deliveries.pk]
    if isinstance(deliveries, QuerySet):
        return list(deliveries.order_by().values_list("pk", flat=True))
    return [d if isinstance(d, int) else d.pk for d in deliveries]


def _events(ids: list[int], entities: Any) -> QuerySet:
    events = Event.objects.filter(delivery_id__in=ids).order_by()
    return events if entities is None else events.filter(entity_id__in=_entity_ids(entities))


def _entity_ids(entities: Any) -> list[int]:
    if isinstance(entities, QuerySet):
        return list(entities.order_by().values_list("pk", flat=True))
    return [e if isinstance(e, int) else e.pk for e in entities]


def _sent(ids: list[int], entities: Any) -> QuerySet:
    messages = Message.objects.filter(delivery_id__in=ids, status=MessageStatus.SENT).order_by()
    return messages if entities is None else messages.filter(entity_id__in=_entity_ids(entities))


def _sent_per_entity(ids: list[int], entities: Any) -> dict[int | None, int]:
    """Sent messages per entity (None: none) of the deliveries: from their sent blocks (kept
    by the sending code, see ``campaigns.engagement.sent``), counted from the messages only
    for deliveries without blocks (sent before the blocks existed)."""
    counted = set(
        SentBlock.objects.filter(delivery_id__in=ids).order_by()
        .values_list("delivery_id", flat=True).distinct()
    )  # fmt: skip
    found: dict[int | None, int] = {}
    if counted:
        blocks = SentBlock.objects.filter(delivery_id__in=counted).order_by()
        if entities is not None:
            blocks = blocks.filter(entity_id__in=_entity_ids(entities))
        for entity_id, n in blocks.values_list("entity_id").annotate(n=Sum("sent")):
            found[entity_id or None] = found.get(entity_id or None, 0) + n
    rest = [pk for pk in ids if pk not in counted]
    if rest:
        scanned = _sent(rest, entities).values_list("entity_id").annotate(n=Count("id"))
        for entity_id, n in scanned:
            found[entity_id] = found.get(entity_id, 0) + n
    return found


def _first_send(ids: list[int], entities: Any) -> Any:
    """When the deliveries' first message was sent (the chart's start), or None."""
    blocks = SentBlock.objects.filter(delivery_id__in=ids).order_by()
    counted = set(blocks.values_list("delivery_id", flat=True).distinct())
    if entities is not None:
        blocks = blocks.filter(entity_id__in=_entity_ids(entities))
    times = [blocks.aggregate(first=Min("first_sent_at"))["first"]] if counted else []
    rest = [pk for pk in ids if pk not in counted]
    if rest:
        times.append(_sent(rest, entities).aggregate(first=Min("sent_at"))["first"])
    times = [at for at in times if at is not None]
    return min(times) if times else None


def _summaries(ids: list[int], entities: Any) -> QuerySet:
    rows = MessageEngagement.objects.filter(delivery_id__in=ids).order_by()
    return rows if entities is None else rows.filter(entity_id__in=_entity_ids(entities))


def engagement(deliveries: Any, *, entities: Any = None) -> Engagement:
    """The engagement figures of ``deliveries`` (a delivery, a queryset or ids), for the
    contacts of ``entities`` (None: all). Read from summaries, never from the messages: the
    sent counts per block of messages (kept by the sending code), and the messages'
    engagement summaries (one narrow row per engaged message, kept by every event write).
    A message a human clicked counts as opened even without a recorded open (images
    blocked), as Mailchimp and Salesforce Marketing Cloud count it: click-to-open never
    exceeds 100%."""
    ids = _ids(deliveries)
    figures = Engagement(sent=sum(_sent_per_entity(ids, entities).values()))
    _tally(_summaries(ids, entities).values("seen"), lambda row: figures)
    return figures


def _tally(grouped: QuerySet, figures_of: Any) -> None:
    """Add up the engagement summaries grouped by ``seen`` (and what else ``grouped`` is a
    ``values()`` of): the database counts the messages per distinct ``seen`` value (at most
    512 of them, one small hash aggregate over narrow rows), and each figure adds up the
    counts of the values that have its bit, here. ``figures_of(row)``: the ``Engagement``
    a row adds to. Bit tests per row and figure in SQL cost more than the scan itself."""
    bits = [(name, Seen[name.upper()].value) for name in EVENT_FIGURES]
    for row in grouped.annotate(n=Count("*")).order_by():
        figures, seen, n = figures_of(row), row["seen"], row["n"]
        for name, bit in bits:
            if seen & bit:
                setattr(figures, name, getattr(figures, name) + n)


def engagement_by_entity(
    deliveries: Any, *, entities: Any = None
) -> list[tuple[str, str, Engagement]]:
    """Figures per entity of the contacts (the central view of a package: the entities that
    ordered it, side by side), sorted by entity code."""
    from portal.models import Entity

    ids = _ids(deliveries)
    found: dict[int | None, Engagement] = {}
    for entity_id, sent in _sent_per_entity(ids, entities).items():
        found.setdefault(entity_id, Engagement()).sent = sent
    _tally(
        _summaries(ids, entities).values("entity_id", "seen"),
        lambda row: found.setdefault(row["entity_id"], Engagement()),
    )
    known = Entity.objects.filter(pk__in=[pk for pk in found if pk])
    names = {pk: (code, name) for pk, code, name in known.values_list("pk", "code", "name")}
    rows = [(*names.get(pk, ("—", "")), figures) for pk, figures in found.items()]
    return sorted(rows, key=lambda row: row[0])


def added_up(rows: list[tuple[str, str, Engagement]]) -> Engagement:
    """The total of ``engagement_by_entity``'s rows (each message has one entity): the page
    gets both from one pass."""
    total = Engagement()
    for *_, row in rows:
        for name in ENGAGEMENT_COLUMNS:
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return total


def link_clicks(deliveries: Any, *, entities: Any = None) -> list[dict[str, Any]]:
    """Clicks per tracked link: all clicks, unique human clicks (messages), machine clicks;
    most clicked first."""
    ids = _ids(deliveries)
    links = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "tracked_links"))
    rows = (
        _events(ids, entities)
        .filter(kind=EventKind.CLICK)
        .values("delivery_id", "link")
        .annotate(  # columns of the clicks index only (no table read)
            clicks=Count("message_id"),
            human=Count("message_id", distinct=True, filter=Q(machine=False)),
            machine=Count("message_id", filter=Q(machine=True)),
        )
    )
    table = []
    for row in rows:
        frozen = links.get(row["delivery_id"]) or []
        link = row["link"]
        url = frozen[link] if link is not None and link < len(frozen) else "?"
        table.append({**row, "url": url})
    return sorted(table, key=lambda row: (-row["human"], -row["clicks"], row["url"]))


def timeline(deliveries: Any, *, entities: Any = None, hours: int = HOURS) -> dict[str, Any]:
    """Human opens, human clicks and machine events per hour, over the first ``hours`` hours
    from the hour of the first send (the chart's data: hour 0 is the send, quiet hours
    included)."""
    from datetime import timedelta

    ids = _ids(deliveries)
    hours_rows = EngagementHour.objects.filter(delivery_id__in=ids).order_by()
    if entities is not None:
        hours_rows = hours_rows.filter(entity_id__in=_entity_ids(entities))
    # The send's first hour; without a sent message (events recorded by hand), the first
    # hour with opens or clicks.
    started = _first_send(ids, entities) or hours_rows.aggregate(first=Min("hour"))["first"]
    if started is None:
        return {"labels": [], "opens": [], "clicks": [], "machine": []}
    start = started.replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=hours)
    rows = (
        hours_rows.filter(hour__gte=start, hour__lt=end)
        .values("hour", "kind", "machine")
        .annotate(n=Sum("events"))
    )
    series = {"opens": [0] * hours, "clicks": [0] * hours, "machine": [0] * hours}
    for row in rows:
        hour = row["hour"]
        index = int((hour - start).total_seconds() // 3600) if hour else -1
        if not 0 <= index < hours:
            continue
        if row["machine"]:
            series["machine"][index] += row["n"]
        else:
            series["opens" if row["kind"] == EventKind.OPEN else "clicks"][index] += row["n"]
    labels = [(start + timedelta(hours=n)).strftime("%m-%d %H:00") for n in range(hours)]
    return {"labels": labels, **series}


def engagement_csv(deliveries: Any, *, entities: Any = None) -> bytes:
    """The engagement figures per entity, a total line, then the per-link clicks."""
    out = io.StringIO()
    writer = spreadsheets.csv_writer(out)
    writer.writerow(["entity", "name", *ENGAGEMENT_COLUMNS, "open_rate", "click_rate",
                     "click_to_open"])  # fmt: skip

    def line(code: str, name: str, figures: Engagement) -> list[Any]:
        values = figures.as_dict()
        return [code, name, *[values[c] for c in ENGAGEMENT_COLUMNS], figures.open_rate,
                figures.click_rate, figures.click_to_open]  # fmt: skip

    rows = engagement_by_entity(deliveries, entities=entities)
    for code, name, figures in rows:
        writer.writerow(line(code, name, figures))
    writer.writerow(line("TOTAL", "", added_up(rows)))
    writer.writerow([])
    writer.writerow(["link", "clicks", "unique_human_clicks", "machine_clicks"])
    for row in link_clicks(deliveries, entities=entities):
        writer.writerow([row["url"], row["clicks"], row["human"], row["machine"]])
    return out.getvalue().encode()


def entity_deliveries(entity: Any) -> QuerySet:
    """The deliveries that reached an entity's contacts (its report)."""
    ids = Message.objects.filter(entity=entity).order_by().values("delivery_id").distinct()
    return Delivery.objects.filter(pk__in=ids)
