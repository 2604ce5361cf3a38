"""Work tables: one table per step of a run, written by ``CREATE … AS SELECT``.

Every materialised population (a query's target, a distribution, an activity's output) is its
own table, ``wt_<id>``, where ``<id>`` is the id of its registry row
(``campaigns.models.WorkTable``: run key, step name, rows, created at). On PostgreSQL it is
``CREATE UNLOGGED TABLE … AS SELECT`` (no WAL, no per-row index upkeep); on SQLite an
ordinary ``CREATE TABLE … AS SELECT``. Its columns::

    id            bigint   1..n, the row's number within the table (id ranges, tie-breaks)
    contact_id    bigint   the contact
    secondary_id  bigint   the secondary record (booking, subscription) or NULL
    entity_id     bigint   the entity the row is distributed by, or NULL
    data          json     enrichment values (or NULL)

The SELECT is built by the ORM (compiled conditions, window functions) and wrapped in the
CREATE: no user input ever becomes SQL text (table names come from registry ids and are
quoted with ``connection.ops.quote_name``), and no contact row passes through Python.

Reading a table — the small interface the steps use:

- ``work_table(run_key, name)`` → a queryset over the table (``.filter``, ``.exclude``,
  ``Exists(...)``, ``contact__…`` lookups), through a cached unmanaged model
  (``Meta.managed = False``, ``db_table = "wt_<id>"``); an empty queryset when the step has
  no table;
- ``find(run_key, name)`` → the registry row (``WorkTable``) or None, with
  ``queryset()``, ``contact_ids()``, ``count()`` (the rows written), ``ensure_index(column)``
  and ``drop()``.

Indexes are created only when a consumer asks (``ensure_index``): e.g. preparation reads
a table in id ranges and asks for ``id``. Set operations between tables (union, exclusion,
split) use hash joins and need none.

The storage itself (row models, lazy indexes, DROP) sits beside the registry model in
``campaigns.models.audience``, so models import nothing above them.

Tables are dropped (``DROP TABLE IF EXISTS``, never a large DELETE) when the step is
written again, when the run is simulated again or restarted (``drop_run``), and by
retention (``purge_work_tables``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, models, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
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

from campaigns.models import WorkTable
from campaigns.models.audience import (  # the table storage beside its registry model
    _row_model,
    drop,
)
from campaigns.targeting.registry import DIMENSIONS


def find(run_key: str, name: str) -> WorkTable | None:
    return WorkTable.objects.filter(run_key=run_key, name=name).first()


def _empty_model() -> type[models.Model]:
    return _row_model("wt_none")


def work_table(run_key: str, name: str) -> QuerySet:
    """The rows of the step ``name`` of run ``run_key`` (empty when it has no table)."""
    entry = find(run_key, name)
    if entry is None:
        return _empty_model().objects.none()
    return entry.queryset()


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


def _typed(expression: str, kind: str) -> str:
    if kind == "json":
        return f"CAST({expression} AS jsonb)" if connection.vendor == "postgresql" else expression
    return f"CAST({expression} AS {'bigint' if connection.vendor == 'postgresql' else 'INTEGER'})"


def create_table(run_key: str, name: str, sql: str | None, params: Sequence[Any] = ()) -> int:
    """Write the step (run_key, name) as a new table from ``sql``, a SELECT whose columns are
    ``_wt_contact, _wt_secondary, _wt_entity, _wt_data`` (None: an empty table); the step's
    previous table is dropped. Returns the row count."""
    quote = connection.ops.quote_name
    with transaction.atomic(savepoint=False):
        previous = find(run_key, name)
        if previous is not None:
            drop(previous)
        entry = WorkTable.objects.create(run_key=run_key, name=name)
        table = quote(entry.table_name)
        unlogged = "UNLOGGED " if connection.vendor == "postgresql" else ""
        hash_joins_only()
        with connection.cursor() as cursor:
            if sql is None:
                json_type = "jsonb" if connection.vendor == "postgresql" else "text"
                cursor.execute(
                    f"CREATE {unlogged}TABLE {table} (id bigint, contact_id bigint, "
                    f"secondary_id bigint, entity_id bigint, data {json_type})"
                )
                rows = 0
            else:
                cursor.execute(
                    f"CREATE {unlogged}TABLE {table} AS SELECT "
                    f"{_typed('ROW_NUMBER() OVER ()', 'int')} AS id, "
                    f"{_typed('s._wt_contact', 'int')} AS contact_id, "
                    f"{_typed('s._wt_secondary', 'int')} AS secondary_id, "
                    f"{_typed('s._wt_entity', 'int')} AS entity_id, "
                    f"{_typed('s._wt_data', 'json')} AS data FROM ({sql}) s",
                    params,
                )
                rows = cursor.rowcount
                if connection.vendor != "postgresql" or rows is None or rows < 0:
                    cursor.execute(f"SELECT COUNT(*) FROM {table}")
                    rows = cursor.fetchone()[0]
        entry.rows = rows
        entry.save(update_fields=["rows"])
        return rows


def _create_from(run_key: str, name: str, select: QuerySet) -> int:
    try:
        sql, params = select.query.sql_with_params()
    except EmptyResultSet:
        return create_table(run_key, name, None)
    return create_table(run_key, name, sql, params)


def materialise(
    queryset: QuerySet,
    *,
    dimension: str,
    run_key: str,
    name: str,
    entity_path: str | None = None,
) -> int:
    """Persist the rows of a target queryset as the step (run_key, name); returns the row
    count.

    ``entity_path`` says which entity a row is distributed by (default: the contact's owning
    entity; e.g. ``store__entity`` for bookings).
    """
    spec = DIMENSIONS[dimension]
    secondary = (
        Value(None, output_field=BigIntegerField()) if spec.contact_path == "pk" else F("pk")
    )
    select = (
        queryset.order_by()
        .annotate(
            _wt_contact=F(spec.contact_path),
            _wt_secondary=secondary,
            _wt_entity=F(entity_path or spec.entity_path),
            _wt_data=Func(template="NULL", output_field=JSONField()),  # SQL NULL, not JSON null
        )
        .values_list("_wt_contact", "_wt_secondary", "_wt_entity", "_wt_data")
    )
    return _create_from(run_key, name, select)


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
    """Write the work-table rows selected by ``rows`` (any filter over a work table's
    queryset) as the step (run_key, name), replacing it. One CREATE … AS SELECT.

    ``data`` is an expression computing each row's enrichment data (default: kept as is)."""
    select = rows.order_by().annotate(
        _wt_contact=F("contact_id"),
        _wt_secondary=F("secondary_id"),
        _wt_entity=F("entity_id"),
        _wt_data=F("data") if data is None else data,
    )
    select = select.values_list("_wt_contact", "_wt_secondary", "_wt_entity", "_wt_data")
    return _create_from(run_key, name, select)


def union_rows(run_key: str, name: str, sources: Sequence[QuerySet]) -> int:
    """One row per (contact, secondary record) of ``sources``: the first met, in input order
    then row order. One CREATE … AS SELECT over a UNION ALL with a window function."""
    parts, params = [], []
    for position, source in enumerate(sources):
        try:
            sql, part_params = (
                source.order_by()
                .annotate(
                    _wt_source=Value(position, output_field=BigIntegerField()),
                    _wt_row=F("id"),
                    _wt_contact=F("contact_id"),
                    _wt_secondary=F("secondary_id"),
                    _wt_entity=F("entity_id"),
                    _wt_data=F("data"),
                )
                .values_list(
                    "_wt_source",
                    "_wt_row",
                    "_wt_contact",
                    "_wt_secondary",
                    "_wt_entity",
                    "_wt_data",
                )
                .query.sql_with_params()
            )
        except EmptyResultSet:
            continue
        parts.append(f"SELECT * FROM ({sql}) p{position}")
        params.extend(part_params)
    if not parts:
        return create_table(run_key, name, None)
    sql = (
        "SELECT _wt_contact, _wt_secondary, _wt_entity, _wt_data FROM (SELECT u.*, "
        "ROW_NUMBER() OVER (PARTITION BY _wt_contact, _wt_secondary "
        "ORDER BY _wt_source, _wt_row) AS _wt_rank FROM (" + " UNION ALL ".join(parts) + ") u"
        ") ranked WHERE _wt_rank = 1"
    )
    return create_table(run_key, name, sql, params)


def drop_run(run_key: str) -> int:
    """Drop every table of a run (before it is simulated again or restarted); returns the
    rows they held."""
    dropped = 0
    for entry in WorkTable.objects.filter(run_key=run_key):
        dropped += entry.rows
        drop(entry)
    return dropped


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


# Orders a distribution may rank rows by (a leading "-" sorts descending). The default
# priority, and what breaks ties after any other order, is the business order
# DEFAULT_PRIORITY: the longest-standing contacts first (contact ids grow with registration,
# like contact.created_at), then a contact's rows in record order (secondary id); the row's
# number in the work table only settles what is still equal.
PRIORITY_FIELDS = frozenset(
    {"id", "contact_id", "contact__created_at", "contact__birth_date", "contact__last_name"}
)
DEFAULT_PRIORITY = ("contact_id",)
TIE_BREAK = ("contact_id", "secondary_id", "id")


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
    expressions, seen = [], set()
    for item in [*(order or DEFAULT_PRIORITY), *TIE_BREAK]:
        name = item.lstrip("-")
        if name not in PRIORITY_FIELDS and name not in TIE_BREAK:
            raise ValueError(f"Cannot rank by “{item}”; use one of {sorted(PRIORITY_FIELDS)}.")
        if name in seen:
            continue
        seen.add(name)
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
    ``order`` (default ``DEFAULT_PRIORITY``: the longest-standing contacts first; ties go to
    the lowest contact id, then record, then row), optionally only for ``entities``.

    One ``CREATE … AS SELECT`` with a window function; reports eligible, kept and dropped rows per
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
    # One GROUP BY over the source gives every figure: the window keeps exactly
    # min(eligible, cap) rows of each entity, and the NULL group is the unassigned rows.
    counts = per_entity(source_rows)
    wanted = None if entities is None else set(entities)

    def kept(entity: int, total: int) -> int:
        if not limits and default_limit is None:
            return total
        return max(
            0, min(total, limits.get(entity, 2**62 if default_limit is None else default_limit))
        )

    return DistributionReport(
        shares={
            entity: EntityShare(eligible=total, kept=kept(entity, total))
            for entity, total in counts.items()
            if entity is not None and (wanted is None or entity in wanted)
        },
        unassigned=counts.get(None, 0),
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
    """Retention: DROP the work tables older than ``older_than`` (no row is deleted one by
    one); returns the rows they held."""
    cutoff = (now or timezone.now()) - older_than
    dropped = 0
    for entry in WorkTable.objects.filter(created_at__lt=cutoff).order_by("pk"):
        dropped += entry.rows
        drop(entry)
    return dropped
