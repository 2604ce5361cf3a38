"""Preparation: the target becomes one message row per recipient (one INSERT … SELECT that
skips rows already there, so preparing twice never duplicates), then the typology's rules
mark what they exclude, each with its count."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import CharField, DateTimeField, F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.choices import Channel
from campaigns.delivery.typology import apply_rules
from campaigns.models import Delivery, Message, MessageStatus
from campaigns.targeting.worktables import insert_select
from portal import services as portal_services
from portal.exceptions import DomainError

ADDRESS = {
    Channel.EMAIL: "contact__email",
    Channel.SMS: "contact__phone",
    Channel.PUSH: "contact__push_token",
    Channel.DIRECT_MAIL: "contact__external_id",
}
COLUMNS = ("delivery_id", "contact_id", "secondary_id", "entity_id", "channel", "address",
           "status", "rule", "data", "error", "attempts", "created_at")  # fmt: skip


def insert_messages(delivery: Delivery, rows: QuerySet) -> int:
    """One message per work-table row not yet in the delivery (one statement)."""
    select = (
        rows.order_by()
        .annotate(
            _m_delivery=Value(delivery.pk),
            _m_secondary=Coalesce(F("secondary_id"), Value(0)),
            _m_channel=Value(delivery.channel, output_field=CharField()),
            _m_address=Coalesce(F(ADDRESS[delivery.channel]), Value(""), output_field=CharField()),
            _m_status=Value(MessageStatus.PENDING.value, output_field=CharField()),
            _m_empty=Value("", output_field=CharField()),
            _m_zero=Value(0),
            _m_now=Value(timezone.now(), output_field=DateTimeField()),
        )
        .values_list(
            "_m_delivery",
            "contact_id",
            "_m_secondary",
            "entity_id",
            "_m_channel",
            "_m_address",
            "_m_status",
            "_m_empty",
            "data",
            "_m_empty",
            "_m_zero",
            "_m_now",
        )
    )
    return insert_select(Message, COLUMNS, select, ignore_conflicts=True)


def prepare(*, delivery: Delivery, rows: QuerySet | None = None, actor: Any = None) -> Delivery:
    """Prepare (or prepare again) a delivery from its target rows: insert the missing
    messages, put back the rows earlier rules excluded, apply the typology, record counts."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if rows is not None:
            insert_messages(delivery, rows)
        Message.objects.filter(delivery=delivery, status=MessageStatus.EXCLUDED).update(
            status=MessageStatus.PENDING, rule=""
        )
        rules = delivery.typology.rules if delivery.typology_id else []
        exclusions = apply_rules(delivery, rules)
        targeted = Message.objects.filter(delivery=delivery).count()
        portal_services.transition(
            obj=delivery,
            name="prepare",
            actor=actor,
            check_permission=False,
            extra={"targeted": targeted, "exclusions": exclusions},
            targeted=targeted,
            exclusions=exclusions,
            at=timezone.now(),
        )
    return delivery


def prepare_one_off(*, delivery: Delivery, actor: Any) -> Delivery:
    """A one-off delivery: its saved query (within its campaign's entity) is its target."""
    from campaigns import targeting
    from campaigns.delivery.sending import check_may_send

    check_may_send(delivery, actor)
    query = delivery.saved_query
    if query is None:
        raise DomainError("Choose the saved query this delivery targets first.")
    if query.dimension != delivery.dimension:
        raise DomainError(
            f"The saved query targets {query.get_dimension_display().lower()}; the delivery "
            f"sends {delivery.get_dimension_display().lower()}."
        )
    run_key = f"delivery-{delivery.pk}"
    with transaction.atomic():
        targeting.materialise(
            targeting.target_queryset(query.dimension, query.conditions,
                                      entity=delivery.campaign.entity),
            dimension=query.dimension, run_key=run_key, name="target",
        )  # fmt: skip
        return prepare(delivery=delivery, rows=targeting.work_table(run_key, "target"), actor=actor)
