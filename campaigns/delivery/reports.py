"""Reports computed from the message rows (one aggregate query each): per delivery and
entity, per campaign (with its child campaigns), per package, per contact."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q, QuerySet

from campaigns.models import Campaign, Delivery, Message, MessageStatus
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
