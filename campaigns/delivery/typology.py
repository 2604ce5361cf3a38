"""Typology rules: each is one set-based UPDATE that marks the pending messages it excludes,
so its exclusion count is the number of rows it changed. Rules run in the typology's order;
a recipient is excluded by the first rule that matches.

Pressure and capacity count what other deliveries send in the period: the messages already
sent, and those of every delivery *sending* now (pending or in flight), which will be sent in
the next minutes. They run at preparation, and again when the send starts
(``reapply_at_send``), because other deliveries may have been sent since. The order between
two deliveries is the order in which their sends start: a delivery that is only prepared
(or waits for its approval or its scheduled moment) counts from the moment it starts, so
two prepared deliveries never each exclude the other's recipients: the second to start
excludes the contacts the first one already reached. Starts are serialised by a lock (see
``reapply_at_send``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Mod
from django.utils import timezone

from campaigns.choices import Channel
from campaigns.models import (
    CategoryOptOut,
    Contact,
    Delivery,
    DeliveryState,
    Message,
    MessageStatus,
    Quarantine,
    Typology,
)

CONSENT_FIELDS = {
    Channel.EMAIL: "contact__email_consent",
    Channel.SMS: "contact__sms_consent",
    Channel.PUSH: "contact__push_consent",
}


def _whole(value: Any, name: str, low: int = 0, high: int = 10**9) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f"{name} must be a whole number from {low} to {high}"]
    return []


def _check_pressure(rule: Mapping[str, Any]) -> list[str]:
    problems = _whole(rule.get("max"), "max", 1) + _whole(rule.get("days"), "days", 1, 3650)
    if "category" in rule and not isinstance(rule["category"], str):
        problems.append("category must be text")
    return problems


def _check_capacity(rule: Mapping[str, Any]) -> list[str]:
    problems = _whole(rule.get("max"), "max", 0)
    if rule.get("per", "delivery") not in ("delivery", "day"):
        problems.append("per must be delivery or day")
    return problems


CHECKS: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "consent": lambda rule: [],
    "blocklist": lambda rule: [],
    "quarantine": lambda rule: [],
    "missing_address": lambda rule: [],
    "duplicates": lambda rule: [],
    "pressure": _check_pressure,
    "capacity": _check_capacity,
    "control_group": lambda rule: _whole(rule.get("percent"), "percent", 1, 99),
}


def typology_problems(typology: Typology) -> dict[str, list[str]]:
    """A typology's problems, on its rules (registered as its check in
    ``CampaignsConfig.ready``: the admin's form and any ``full_clean()`` run it)."""
    problems = validate_rules(typology.rules)
    return {"rules": problems} if problems else {}


def validate_rules(rules: Any) -> list[str]:
    """Every problem of a typology's rules, each naming the rule's position."""
    if not isinstance(rules, list):
        return ["rules must be a list"]
    problems = []
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if not isinstance(rule, dict) or rule.get("rule") not in CHECKS:
            problems.append(f"{where}: rule must be one of {', '.join(CHECKS)}")
            continue
        problems += [f"{where} ({rule['rule']}): {p}" for p in CHECKS[rule["rule"]](rule)]
    return problems


def _exclude(pending: QuerySet, name: str) -> int:
    return pending.update(status=MessageStatus.EXCLUDED, rule=name)


def apply_rules(delivery: Delivery, rules: list[Mapping[str, Any]]) -> dict[str, int]:
    """Run the rules over the delivery's pending messages; returns the count per rule."""
    counts: dict[str, int] = {}
    for rule in rules:
        name = rule["rule"]
        pending = Message.objects.filter(delivery=delivery, status=MessageStatus.PENDING)
        excluded = APPLY[name](delivery, pending, rule)
        counts[name] = counts.get(name, 0) + excluded
    return counts


def _by_contact(pending: QuerySet, **conditions: Any) -> QuerySet:
    """Pending messages whose contact matches: ``contact_id IN (SELECT …)``, a semi-join the
    database hashes, rather than a join inside the UPDATE's own subquery."""
    return pending.filter(contact_id__in=Contact.objects.filter(**conditions).values("pk"))


def _consent(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    """No consent on the channel, or opted out of the delivery's category (the preference
    page)."""
    field = CONSENT_FIELDS.get(delivery.channel)
    excluded = 0
    if field:
        refused = _by_contact(pending, **{field.removeprefix("contact__"): False})
        excluded += _exclude(refused, "consent")
    if delivery.category:
        opted_out = CategoryOptOut.objects.filter(category=delivery.category)
        excluded += _exclude(
            pending.filter(contact_id__in=opted_out.values("contact_id")), "consent"
        )
    return excluded


def _blocklist(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    return _exclude(_by_contact(pending, blocklisted=True), "blocklist")


def _quarantine(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    bounced = Quarantine.objects.filter(channel=delivery.channel, address=OuterRef("address"))
    return _exclude(pending.filter(Exists(bounced)), "quarantine")


def _missing_address(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    if delivery.channel == Channel.DIRECT_MAIL:
        return 0
    return _exclude(pending.filter(address=""), "missing_address")


def _duplicates(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    """The same address twice (two contacts sharing an email): the first message stays. In a
    multi-level send, the same address about the same record."""
    earlier = Message.objects.filter(
        delivery=delivery,
        status=MessageStatus.PENDING,
        address=OuterRef("address"),
        secondary_id=OuterRef("secondary_id"),
        id__lt=OuterRef("id"),
    )
    return _exclude(pending.exclude(address="").filter(Exists(earlier)), "duplicates")


def _counted(delivery: Delivery) -> Q:
    """The other deliveries' messages that count in a period: those sent, and those of the
    deliveries sending now that are pending or claimed (they go out in the next minutes).
    A message handed to the provider or in doubt may have reached the contact: it counts as
    sent. Each message is counted once, by its own status."""
    sending = Delivery.objects.filter(state=DeliveryState.SENDING).exclude(pk=delivery.pk)
    maybe_sent = [MessageStatus.SENT, MessageStatus.IN_FLIGHT, MessageStatus.IN_DOUBT]
    return Q(status__in=maybe_sent) | Q(
        status__in=[MessageStatus.PENDING, MessageStatus.SENDING],
        delivery_id__in=sending.values("pk"),
    )


def _pressure(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    """At most ``max`` messages per contact over ``days`` days, across every campaign (of a
    ``category`` if given), counting the messages other deliveries sent in the period or
    are sending now."""
    since = timezone.now() - timedelta(days=rule["days"])
    counted = (
        Message.objects.filter(contact=OuterRef("contact_id"))
        .filter(Q(sent_at__gte=since) | Q(sent_at=None))  # a message on its way: now
        .filter(_counted(delivery))
        .exclude(delivery=delivery)
    )
    if rule.get("category"):
        if delivery.category != rule["category"]:
            return 0
        counted = counted.filter(delivery__category=rule["category"])
    recent = Subquery(counted.order_by().values("contact").annotate(n=Count("id")).values("n")[:1])
    return _exclude(pending.alias(recent=recent).filter(recent__gte=rule["max"]), "pressure")


def _capacity(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    """At most ``max`` messages for this delivery, or per day on this channel (counting what
    other deliveries sent today or are sending now); the first ones (by id) are kept."""
    allowed = rule["max"]
    if rule.get("per") == "day":
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        allowed -= (
            Message.objects.filter(channel=delivery.channel)
            .filter(Q(sent_at__gte=today) | Q(sent_at=None))
            .filter(_counted(delivery))
            .exclude(delivery=delivery)
            .count()
        )
    overflow = pending.order_by("id").values("id")[max(allowed, 0) :]
    return _exclude(Message.objects.filter(id__in=Subquery(overflow)), "capacity")


AT_SEND = ("pressure", "capacity")
SEND_START_LOCK = 0x5E4D_0001  # pg_advisory_xact_lock key: one send start at a time


def reapply_at_send(delivery: Delivery) -> dict[str, int]:
    """When a send starts: the typology's pressure and capacity rules run again over the
    pending messages, counting what was sent since the preparation and what the deliveries
    that started before this one are sending. The messages they exclude are marked with the
    rule (the report lists them under it), added to the delivery's exclusion counts (saved
    with its state change) and audited. Returns the counts per rule.

    Two sends starting at the same moment must not both count without the other: starts are
    serialised by one transaction-scoped lock, held until the starting transaction (which
    also makes the delivery "sending") commits, so the next start sees it. On PostgreSQL it
    is an advisory lock (``pg_advisory_xact_lock``); on SQLite every write transaction
    already holds the database's write lock from its BEGIN (IMMEDIATE mode). The lock is one
    for all starts, not one per typology or category: a rule counts the messages of every
    delivery (of its category, or all), whatever their typology, so two starts can always
    touch the same contacts; a start holds it for one UPDATE per rule.

    The caller holds the transaction through the state change (``sending.begin_sending``
    runs it and the ``start_sending`` transition in one transaction)."""
    rules = [r for r in (delivery.typology.rules if delivery.typology_id else [])
             if isinstance(r, dict) and r.get("rule") in AT_SEND]  # fmt: skip
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEND_START_LOCK])
        if not rules:
            return {}
        counts = apply_rules(delivery, rules)
        excluded = {name: n for name, n in counts.items() if n}
        if excluded:
            from portal import services as portal_services

            delivery.exclusions = {
                **(delivery.exclusions or {}),
                **{name: (delivery.exclusions or {}).get(name, 0) + n
                   for name, n in excluded.items()},
            }  # fmt: skip
            portal_services.record_audit(
                obj=delivery, action="excluded_at_send", extra={"exclusions": excluded},
                comment="Excluded when the send started: "
                + ", ".join(f"{name} {n}" for name, n in excluded.items()),
            )  # fmt: skip
    return counts


def _control_group(delivery: Delivery, pending: QuerySet, rule: Mapping[str, Any]) -> int:
    """A stable pseudo-random ``percent`` of the recipients is held out (and recorded)."""
    bucket = Mod(F("contact_id") * 2654435761 + delivery.pk * 40503, 100)
    held = pending.alias(bucket=bucket).filter(bucket__lt=rule["percent"])
    return _exclude(held, "control_group")


APPLY: dict[str, Callable[[Delivery, QuerySet, Mapping[str, Any]], int]] = {
    "consent": _consent,
    "blocklist": _blocklist,
    "quarantine": _quarantine,
    "missing_address": _missing_address,
    "duplicates": _duplicates,
    "pressure": _pressure,
    "capacity": _capacity,
    "control_group": _control_group,
}
