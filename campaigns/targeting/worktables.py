"""Work tables: populations persisted by ``INSERT … SELECT`` and read back as querysets.

The SELECT is built by the ORM (compiled conditions, window functions), then wrapped in an
INSERT whose table and column names come from the model's metadata: no user input ever
becomes SQL text, and no contact row passes through Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import BigIntegerField, CharField, DateTimeField, F, QuerySet, Value, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from campaigns.models import WorkTableRow
from campaigns.targeting.registry import DIMENSIONS

COLUMNS = ("run_key", "name", "contact_id", "secondary_id", "entity_id", "created_at")


def _insert_select(select: QuerySet) -> int:
    """INSERT the rows of ``select`` (values in COLUMNS order) into the work table."""
    sql, params = select.query.sql_with_params()
    quote = connection.ops.quote_name
    table = quote(WorkTableRow._meta.db_table)
    columns = ", ".join(quote(column) for column in COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({columns}) {sql}", params)
        return cursor.rowcount


def _constants(queryset: QuerySet, run_key: str, name: str) -> QuerySet:
    return queryset.annotate(
        _wt_run=Value(run_key, output_field=CharField()),
        _wt_name=Value(name, output_field=CharField()),
        _wt_now=Value(timezone.now(), output_field=DateTimeField()),
    )


def materialise(
    queryset: QuerySet,
    *,
    dimension: str,
    run_key: str,
    name: str,
    entity_path: str | None = None,
) -> int:
    """Persist the rows of a target queryset under (run_key, name); returns the row count.

    ``entity_path`` says which entity a row is distributed by (default: the contact's owning
    entity; e.g. ``store__entity`` for bookings).
    """
    spec = DIMENSIONS[dimension]
    secondary = (
        Value(None, output_field=BigIntegerField()) if spec.contact_path == "pk" else F("pk")
    )
    select = _constants(queryset.order_by(), run_key, name).annotate(
        _wt_contact=F(spec.contact_path),
        _wt_secondary=secondary,
        _wt_entity=F(entity_path or spec.entity_path),
    )
    select = select.values_list(
        "_wt_run", "_wt_name", "_wt_contact", "_wt_secondary", "_wt_entity", "_wt_now"
    )
    with transaction.atomic():
        WorkTableRow.objects.filter(run_key=run_key, name=name).delete()
        return _insert_select(select)


def work_table(run_key: str, name: str) -> QuerySet:
    return WorkTableRow.objects.filter(run_key=run_key, name=name)


def distribute(
    *,
    run_key: str,
    source: str,
    target: str,
    limit_per_entity: int | None = None,
    entities: Sequence[int] | None = None,
    order: Sequence[str] = ("id",),
) -> dict[int, int]:
    """Split a work table among entities: keep at most ``limit_per_entity`` rows per entity
    (in ``order``), optionally only for ``entities``, into ``target``. One INSERT … SELECT
    with a window function; returns the rows kept per entity."""
    rows = work_table(run_key, source).filter(entity__isnull=False)
    if entities is not None:
        rows = rows.filter(entity_id__in=list(entities))
    rows = _constants(rows.order_by(), run_key, target)
    if limit_per_entity is not None:
        rows = rows.annotate(
            _wt_rank=Window(
                RowNumber(), partition_by=[F("entity_id")], order_by=[F(field) for field in order]
            )
        ).filter(_wt_rank__lte=limit_per_entity)
    select = rows.values_list(
        "_wt_run", "_wt_name", "contact_id", "secondary_id", "entity_id", "_wt_now"
    )
    with transaction.atomic():
        work_table(run_key, target).delete()
        _insert_select(select)
    from django.db.models import Count

    return dict(
        work_table(run_key, target)
        .values_list("entity_id")
        .annotate(total=Count("id"))
        .values_list("entity_id", "total")
    )


def purge_work_tables(*, older_than: timedelta = timedelta(days=7), now: Any = None) -> int:
    """Retention: drop work-table rows older than ``older_than`` (one DELETE)."""
    cutoff = (now or timezone.now()) - older_than
    deleted, _ = WorkTableRow.objects.filter(created_at__lt=cutoff).delete()
    return deleted
