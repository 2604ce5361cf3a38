"""Work tables: populations persisted by ``INSERT … SELECT`` and read back as querysets.

The SELECT is built by the ORM (compiled conditions, window functions), then wrapped in an
INSERT whose table and column names come from the model's metadata: no user input ever
becomes SQL text, and no contact row passes through Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    DateTimeField,
    F,
    Func,
    JSONField,
    QuerySet,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber
from django.utils import timezone

from campaigns.models import WorkTableRow
from campaigns.targeting.registry import DIMENSIONS

COLUMNS = ("run_key", "name", "contact_id", "secondary_id", "entity_id", "data", "created_at")


def _insert_select(select: QuerySet) -> int:
    """INSERT the rows of ``select`` (values in COLUMNS order) into the work table."""
    return insert_select(WorkTableRow, COLUMNS, select)


def insert_select(
    model: type, columns: Sequence[str], select: QuerySet, *, ignore_conflicts: bool = False
) -> int:
    """``INSERT INTO <model> (<columns>) <select>`` (the select's values in column order);
    with ``ignore_conflicts``, rows a unique constraint refuses are skipped. Table and column
    names come from the model's metadata; values are parameters. A select Django knows to be
    empty (``pk__in=[]``: every local list rejected or expired) inserts nothing."""
    try:
        sql, params = select.query.sql_with_params()
    except EmptyResultSet:
        return 0
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(column) for column in columns)
    verb, tail = "INSERT", ""
    if ignore_conflicts:
        if connection.vendor == "sqlite":
            verb = "INSERT OR IGNORE"
        else:
            tail = " ON CONFLICT DO NOTHING"
    with connection.cursor() as cursor:
        cursor.execute(f"{verb} INTO {table} ({names}) {sql}{tail}", params)
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
        _wt_data=Func(template="NULL", output_field=JSONField()),  # SQL NULL, not JSON null
    )
    select = select.values_list(
        "_wt_run", "_wt_name", "_wt_contact", "_wt_secondary", "_wt_entity", "_wt_data", "_wt_now"
    )
    with transaction.atomic():
        WorkTableRow.objects.filter(run_key=run_key, name=name).delete()
        return _insert_select(select)


def work_table(run_key: str, name: str) -> QuerySet:
    return WorkTableRow.objects.filter(run_key=run_key, name=name)


def id_ranges(rows: QuerySet, size: int) -> list[tuple[int, int, int]]:
    """Cut ``rows`` into consecutive id ranges of at most ``size`` rows: (first, last, rows)
    each, in id order. The database numbers the rows and groups them by bucket of ``size``;
    no id is read into Python (a million-row target gives fifty rows back)."""
    sql, params = (
        rows.order_by().annotate(_range_id=F("id")).values("_range_id").query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MIN(_range_id), MAX(_range_id), COUNT(*) FROM (SELECT _range_id, "
            "(ROW_NUMBER() OVER (ORDER BY _range_id) - 1) / %s AS bucket "
            f"FROM ({sql}) AS picked) AS numbered GROUP BY bucket ORDER BY 1",
            [size, *params],
        )
        return [(first, last, count) for first, last, count in cursor.fetchall()]


def copy_rows(rows: QuerySet, *, run_key: str, name: str, data: Any = None) -> int:
    """Write work-table rows selected by ``rows`` (any filter over WorkTableRow, or a union
    grouped by contact) as the table (run_key, name), replacing it. One INSERT … SELECT.

    ``data`` is an expression computing each row's enrichment data (default: kept as is)."""
    select = _constants(rows.order_by(), run_key, name)
    if data is not None:
        select = select.annotate(_wt_data=data)
    select = select.values_list(
        "_wt_run",
        "_wt_name",
        "contact_id",
        "secondary_id",
        "entity_id",
        "data" if data is None else "_wt_data",
        "_wt_now",
    )
    with transaction.atomic():
        work_table(run_key, name).delete()
        hash_joins_only()
        return _insert_select(select)


def hash_joins_only() -> None:
    """For the rest of the transaction, on PostgreSQL, join work tables without nested loops.

    Work tables are read moments after they are written, before their statistics know them:
    the planner would estimate a couple of rows and pick a nested loop that compares every
    pair of rows (minutes at a million contacts). Hash and merge joins are right for set
    operations at every size.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_nestloop = off")


# Orders a distribution may rank rows by (a leading "-" sorts descending); "id" breaks ties.
PRIORITY_FIELDS = frozenset(
    {"id", "contact_id", "contact__created_at", "contact__birth_date", "contact__last_name"}
)


@dataclass(frozen=True)
class EntityShare:
    eligible: int
    kept: int

    @property
    def dropped(self) -> int:
        return self.eligible - self.kept


@dataclass
class DistributionReport:
    shares: dict[int, EntityShare]
    unassigned: int

    @property
    def kept(self) -> int:
        return sum(share.kept for share in self.shares.values())

    def kept_by_entity(self) -> dict[int, int]:
        return {entity: share.kept for entity, share in self.shares.items() if share.kept}


def _priority(order: Sequence[str]) -> list[Any]:
    expressions = []
    for item in [*order, "id"]:
        name = item.lstrip("-")
        if name not in PRIORITY_FIELDS:
            raise ValueError(f"Cannot rank by “{item}”; use one of {sorted(PRIORITY_FIELDS)}.")
        expressions.append(F(name).desc() if item.startswith("-") else F(name).asc())
    return expressions


def distribute(
    *,
    run_key: str,
    source: str,
    target: str,
    limits: Mapping[int, int] | None = None,
    default_limit: int | None = None,
    entities: Sequence[int] | None = None,
    order: Sequence[str] = (),
) -> DistributionReport:
    """Split a work table among entities into ``target``: each entity keeps at most its limit
    (``limits[entity_id]``, else ``default_limit``, else everything) of its rows, ranked by
    ``order`` (deterministic: ties go to the lowest id), optionally only for ``entities``.

    One ``INSERT … SELECT`` with a window function; reports eligible, kept and dropped rows per
    entity, and the rows that have no entity to go to.
    """
    priority = _priority(order)
    limits = dict(limits or {})
    source_rows = work_table(run_key, source)
    eligible_rows = source_rows.filter(entity__isnull=False)
    if entities is not None:
        eligible_rows = eligible_rows.filter(entity_id__in=list(entities))
    rows = eligible_rows
    if limits or default_limit is not None:
        fallback = Value(
            2**62 if default_limit is None else default_limit, output_field=BigIntegerField()
        )
        cap = Case(
            *[When(entity_id=entity, then=Value(limit)) for entity, limit in limits.items()],
            default=fallback,
            output_field=BigIntegerField(),
        )
        rows = rows.annotate(
            _wt_rank=Window(RowNumber(), partition_by=[F("entity_id")], order_by=priority),
            _wt_cap=cap,
        ).filter(_wt_rank__lte=F("_wt_cap"))
    copy_rows(rows, run_key=run_key, name=target)
    eligible = per_entity(eligible_rows)
    kept = per_entity(work_table(run_key, target))
    return DistributionReport(
        shares={
            entity: EntityShare(eligible=total, kept=kept.get(entity, 0))
            for entity, total in eligible.items()
        },
        unassigned=source_rows.filter(entity__isnull=True).count(),
    )


def per_entity(rows: QuerySet) -> dict[int, int]:
    """Rows per entity (one GROUP BY), for work tables and message rows alike."""
    return dict(
        rows.order_by()
        .values_list("entity_id")
        .annotate(total=Count("id"))
        .values_list("entity_id", "total")
    )


def purge_work_tables(*, older_than: timedelta = timedelta(days=7), now: Any = None) -> int:
    """Retention: drop work-table rows older than ``older_than`` (one DELETE)."""
    cutoff = (now or timezone.now()) - older_than
    deleted, _ = WorkTableRow.objects.filter(created_at__lt=cutoff).delete()
    return deleted
