"""Preparation: the target becomes one message row per recipient, chunk by chunk (each an
INSERT … SELECT that skips rows already there, so preparing twice never duplicates), then
the typology's rules mark what they exclude, each with its count."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import (
    CharField,
    Count,
    DateTimeField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.choices import Channel
from campaigns.delivery.typology import apply_rules
from campaigns.models import (
    Delivery,
    DeliveryState,
    Message,
    MessageStatus,
    PreparationChunk,
)
from campaigns.targeting.worktables import find, id_ranges, insert_select, work_table
from portal import services as portal_services
from portal.exceptions import DomainError

logger = logging.getLogger(__name__)

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


def prepare(
    *,
    delivery: Delivery,
    run_key: str,
    table: str,
    actor: Any = None,
    background: bool = False,
) -> Delivery:
    """Prepare (or prepare again) a delivery from the work table (run_key, table).

    The table is cut into id ranges, one ``PreparationChunk`` each; every chunk inserts its
    missing messages, and the last one done applies the typology and records the counts.
    In the ``background`` the chunks are Celery tasks enqueued when the transaction commits
    (the delivery shows its progress meanwhile); otherwise they run now, in order."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        target = find(run_key, table)
        if target is not None:  # the chunks read the table by id range
            target.ensure_index("id")
        ranges = id_ranges(work_table(run_key, table), settings.DELIVERY_PREPARE_CHUNK_SIZE)
        size = {"chunks": len(ranges), "rows": sum(rows for _, _, rows in ranges)}
        portal_services.transition(
            obj=delivery,
            name="start_preparation",
            actor=actor,
            check_permission=False,
            extra=size,
        )
        delivery.preparation_chunks.all().delete()
        chunks = PreparationChunk.objects.bulk_create(
            PreparationChunk(delivery=delivery, run_key=run_key, table=table, first_id=first,
                             last_id=last, rows=rows)
            for first, last, rows in ranges
        )  # fmt: skip
        # Prepared again: the rows earlier rules excluded are judged afresh.
        Message.objects.filter(delivery=delivery, status=MessageStatus.EXCLUDED).update(
            status=MessageStatus.PENDING, rule=""
        )
        ids = [chunk.pk for chunk in chunks]
        if background:
            transaction.on_commit(partial(enqueue_preparation, delivery.pk, ids))
            return delivery
        for chunk_id in ids:
            prepare_chunk(chunk_id)
        return finish_preparation(delivery.pk)


def enqueue_preparation(delivery_id: int, chunk_ids: list[int]) -> None:
    from campaigns.tasks import prepare_chunk as task

    for chunk_id in chunk_ids:
        task.delay(chunk_id)
    if not chunk_ids:
        finish_preparation(delivery_id)


def run_chunk(chunk_id: int) -> int:
    """The chunk task's body: the chunk, then the end of the preparation if it was the last.
    An error fails the delivery with its message rather than leaving it preparing."""
    delivery_id = (
        PreparationChunk.objects.filter(pk=chunk_id).values_list("delivery_id", flat=True).first()
    )
    if delivery_id is None:
        return 0
    try:
        inserted = prepare_chunk(chunk_id)
        finish_preparation(delivery_id)
    except Exception as exc:
        logger.exception("Preparing delivery %s failed", delivery_id)
        fail_preparation(delivery_id, f"Preparation failed: {type(exc).__name__}: {exc}")
        return 0
    return inserted


def fail_preparation(delivery_id: int, error: str) -> None:
    from campaigns.delivery.sending import wake_workflow

    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.state == DeliveryState.PREPARING:
            portal_services.transition(obj=delivery, name="fail", error=error[:2000])
            wake_workflow(delivery)


def prepare_chunk(chunk_id: int) -> int:
    """Insert one chunk's messages; returns how many it added. Runs once per chunk: a task
    delivered twice (or re-run after its worker died) finds the chunk done."""
    with transaction.atomic():
        chunk = (
            PreparationChunk.objects.select_for_update(of=("self",))  # chunks run side by side
            .select_related("delivery")
            .filter(pk=chunk_id, done=False)
            .first()
        )
        if chunk is None or chunk.delivery.state != DeliveryState.PREPARING:
            return 0
        rows = work_table(chunk.run_key, chunk.table).filter(
            id__gte=chunk.first_id, id__lte=chunk.last_id
        )
        chunk.inserted = insert_messages(chunk.delivery, rows)
        chunk.done = True
        chunk.save(update_fields=["inserted", "done"])
    return chunk.inserted


def finish_preparation(delivery_id: int) -> Delivery:
    """Once every chunk is done: apply the typology, record the counts, and (for a
    workflow's delivery) send it, as ``sending.confirm`` decides. Before that, or when
    already finished, nothing."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if (
            delivery.state != DeliveryState.PREPARING
            or delivery.preparation_chunks.filter(done=False).exists()
        ):
            return delivery
        rules = delivery.typology.rules if delivery.typology_id else []
        exclusions = apply_rules(delivery, rules)
        targeted = Message.objects.filter(delivery=delivery).count()
        portal_services.transition(
            obj=delivery,
            name="prepare",
            extra={"targeted": targeted, "exclusions": exclusions},
            targeted=targeted,
            exclusions=exclusions,
            at=timezone.now(),
        )
        if delivery.run_id and delivery.activity_id:
            from campaigns.delivery import sending

            delivery = sending.confirm(delivery=delivery, actor=None)
    return delivery


def recover_stalled(*, now: Any = None) -> int:
    """Beat: chunks still undone longer than the lease after they were cut (their task was
    lost) are enqueued again, a chunk done meanwhile being skipped by its task; and a
    delivery whose chunks are all done but which is still preparing (its worker died
    between its last chunk and the end) is finished. Returns how many of both."""
    from campaigns.tasks import prepare_chunk as task

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.DELIVERY_CLAIM_LEASE_SECONDS)
    chunk_ids = PreparationChunk.objects.filter(
        done=False, created_at__lt=stale, delivery__state=DeliveryState.PREPARING
    ).values_list("pk", flat=True)
    count = 0
    for chunk_id in chunk_ids:
        task.delay(chunk_id)
        count += 1
    undone = PreparationChunk.objects.filter(delivery=OuterRef("pk"), done=False)
    finished = Delivery.objects.filter(state=DeliveryState.PREPARING).exclude(Exists(undone))
    for delivery_id in finished.values_list("pk", flat=True):
        finish_preparation(delivery_id)
        count += 1
    return count


def progress(delivery: Delivery) -> Progress:
    """How far the preparation is: chunks and rows done out of all."""
    totals = delivery.preparation_chunks.aggregate(
        all_chunks=Count("id"),
        done_chunks=Count("id", filter=Q(done=True)),
        all_rows=Coalesce(Sum("rows"), 0),
        done_rows=Coalesce(Sum("rows", filter=Q(done=True)), 0),
    )
    return Progress(
        chunks=totals["all_chunks"],
        chunks_done=totals["done_chunks"],
        rows=totals["all_rows"],
        rows_done=totals["done_rows"],
    )


@dataclass(frozen=True)
class Progress:
    chunks: int
    chunks_done: int
    rows: int
    rows_done: int

    @property
    def percent(self) -> int:
        return round(100 * self.rows_done / self.rows) if self.rows else 100


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
        return prepare(
            delivery=delivery, run_key=run_key, table="target", actor=actor, background=True
        )
