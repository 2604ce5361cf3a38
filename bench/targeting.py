"""Targeting benchmark: the product's services against hand-written SQL, in the same run.

    DATABASE_URL=postgres://… python -m bench.targeting --contacts 1000000 --repeat 5

Generates the synthetic audience once (prefix BENCH), then times each operation through the
product and through raw SQL, prints a table (median of N runs) and writes Markdown and JSON
under bench/results/. Exits 1 when a product/raw ratio exceeds --threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402

from campaigns import synthetic, targeting  # noqa: E402
from campaigns.models import Activity, Booking, Contact  # noqa: E402
from campaigns.targeting import worktables  # noqa: E402
from campaigns.workflow import activities  # noqa: E402
from portal.models import Entity  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "BENCH"


def timed(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def raw(sql: str, params: list | tuple = ()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.description:
            return int(cursor.fetchone()[0])
        return cursor.rowcount


def ensure_entities(count: int) -> list[Entity]:
    """At least ``count`` local entities (the demo's, then bench stores under its regions)."""
    from portal import services
    from portal.choices import EntityKind

    if not Entity.objects.filter(kind="local").exists():
        from django.core.management import call_command

        call_command("seed_demo", "--quiet-logins", "--audience-size", "1")
    regions = list(Entity.objects.filter(kind="region").order_by("pk"))
    local = Entity.objects.filter(kind="local", active=True).order_by("pk")
    for number in range(local.count(), count):
        services.save_entity(
            code=f"{PREFIX}-L{number:03d}",
            name=f"Bench store {number}",
            kind=EntityKind.LOCAL,
            parent=regions[number % len(regions)],
        )
    return list(local[:count])


def ensure_audience(contacts: int, entities: int) -> None:
    existing = Contact.objects.filter(external_id__startswith=f"{PREFIX}-").count()
    if existing >= contacts:
        print(f"Using the existing synthetic audience ({existing} contacts).")
        return
    if existing:
        sys.exit(f"A smaller {PREFIX} audience exists ({existing}); use a fresh database.")
    spread = ensure_entities(entities)
    started = time.perf_counter()
    made = synthetic.generate(contacts=contacts, prefix=PREFIX, seed=42, entities=spread)
    print(
        f"Generated {made.contacts} contacts, {made.bookings} bookings, "
        f"{made.subscriptions} subscriptions over {len(spread)} local entities in "
        f"{time.perf_counter() - started:.1f} s"
    )


def ctas(name: str, select: str, params: list | tuple = ()) -> int:
    """The physical way to write rows: ``DROP TABLE IF EXISTS`` then ``CREATE UNLOGGED TABLE
    … AS SELECT`` (an ordinary table on SQLite), in one transaction; returns the rows."""
    q = connection.ops.quote_name
    unlogged = "UNLOGGED " if connection.vendor == "postgresql" else ""
    with transaction.atomic():
        raw(f"DROP TABLE IF EXISTS {q(name)}")
        if connection.vendor == "postgresql":  # as the product does (fresh tables, no stats)
            raw("SET LOCAL enable_nestloop = off")
        rows = raw(f"CREATE {unlogged}TABLE {q(name)} AS {select}", params)
        if rows is None or rows < 0:
            rows = raw(f"SELECT COUNT(*) FROM {q(name)}")
    return rows


def shaped(select: str) -> str:
    """``select`` (columns contact_id, secondary_id, entity_id) in the product's work-table
    shape: a row number as id, typed columns and a data column (the raw-SQL baseline)."""
    return (
        "SELECT CAST(ROW_NUMBER() OVER () AS bigint) AS id, "
        "CAST(x.contact_id AS bigint) AS contact_id, "
        "CAST(x.secondary_id AS bigint) AS secondary_id, "
        "CAST(x.entity_id AS bigint) AS entity_id, CAST(NULL AS jsonb) AS data "
        f"FROM ({select}) x"
    )


def drop_bench_tables(*names: str) -> None:
    q = connection.ops.quote_name
    for name in names:
        raw(f"DROP TABLE IF EXISTS {q(name)}")


def measure_set_operations(measure: Callable, table: Callable[[str], str]) -> None:
    """Split, union, exclusion and dedup, each through its activity type (an unsaved
    activity: the outputs are named from its id), over the bench's work tables."""

    def run(kind: str, number: int, inputs: list[str], settings: dict, output: str) -> int:
        activity = Activity(pk=10**9 + number, type=kind, settings=settings)
        ctx = activities.Context(run_key="bench", activity=activity, input_names=inputs)
        activities.TYPES[kind].run(ctx)
        return worktables.find("bench", activities.output_table(activity, output)).rows

    bucket = "MOD(contact_id * 2654435761, 100)"

    def split(select: Callable[[str], str], prefix: str) -> int:
        half = ctas(
            f"{prefix}_half",
            select(f"SELECT contact_id, secondary_id, entity_id FROM {table('seg')} "
                   f"WHERE {bucket} >= 0 AND {bucket} < 50"),
        )  # fmt: skip
        q = connection.ops.quote_name
        rest = ctas(
            f"{prefix}_rest",
            select(f"SELECT contact_id, secondary_id, entity_id FROM {table('seg')} s "
                   f"WHERE NOT EXISTS (SELECT 1 FROM {q(prefix + '_half')} h "
                   "WHERE h.contact_id = s.contact_id)"),
        )  # fmt: skip
        return half + rest

    branches = {"branches": [{"label": "half", "percent": 50}], "remainder": "rest"}
    measure(
        "split (50 % + remainder)",
        lambda: (
            run("split", 1, ["seg"], branches, "half")
            + worktables.find("bench", "a1000000001.rest").rows
        ),
        lambda: split(shaped, "bench_raw"),
        lambda: split(lambda select: select, "bench_limit"),
    )

    def union_select() -> str:
        return (
            "SELECT contact_id, secondary_id, entity_id FROM (SELECT u.*, ROW_NUMBER() OVER "
            "(PARTITION BY contact_id, secondary_id ORDER BY source, id) AS rn FROM ("
            f"SELECT 0 AS source, id, contact_id, secondary_id, entity_id FROM {table('seg')} "
            f"UNION ALL SELECT 1, id, contact_id, secondary_id, entity_id FROM {table('three')}"
            ") u) ranked WHERE rn = 1"
        )

    measure(
        "union (segment or 3-condition target)",
        lambda: run("union", 2, ["seg", "three"], {}, "out"),
        lambda: ctas("bench_raw_union", shaped(union_select())),
        lambda: ctas("bench_limit_union", union_select()),
    )

    def exclusion_select() -> str:
        return (
            f"SELECT contact_id, secondary_id, entity_id FROM {table('three')} t "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table('seg')} s WHERE s.contact_id = t.contact_id)"
        )

    measure(
        "exclusion (3-condition target minus segment)",
        lambda: run("exclusion", 3, ["three", "seg"], {}, "out"),
        lambda: ctas("bench_raw_minus", shaped(exclusion_select())),
        lambda: ctas("bench_limit_minus", exclusion_select()),
    )

    def dedup_select() -> str:
        bookings = table("bookings")
        return (
            f"SELECT contact_id, secondary_id, entity_id FROM {bookings} WHERE id IN "
            f"(SELECT MIN(id) FROM {bookings} GROUP BY contact_id)"
        )

    measure(
        "dedup (per-booking target by contact)",
        lambda: run("deduplication", 4, ["bookings"], {}, "out"),
        lambda: ctas("bench_raw_dedup", shaped(dedup_select())),
        lambda: ctas("bench_limit_dedup", dedup_select()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=60, help="local entities (stores)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument(
        "--only", default="", help="run the operations whose name has one of these (a, b, …)"
    )
    parser.add_argument("--recipients", type=int, default=100_000, help="messages to prepare")
    parser.add_argument("--sends", type=int, default=20_000, help="emails to send to the sink")
    parser.add_argument("--workers", default="1,2", help="numbers of sending workers to measure")
    parser.add_argument("--broker", default="", help="the sending workers' broker (Redis)")
    args = parser.parse_args()
    ensure_audience(args.contacts, args.entities)

    q = connection.ops.quote_name
    contact, booking = q(Contact._meta.db_table), q(Booking._meta.db_table)
    born_before = date.today() - timedelta(days=40 * 365)
    since = date.today() - timedelta(days=365)
    three = {"and": [
        {"field": "email_consent", "op": "eq", "value": True},
        {"field": "language", "op": "in", "value": ["fr", "en"]},
        {"field": "birth_date", "op": "lt", "value": born_before.isoformat()},
    ]}  # fmt: skip
    segment = {"relation": "bookings", "op": "exists", "where": {"and": [
        {"field": "product", "op": "eq", "value": "Ski week"},
        {"field": "booking_date", "op": "in_last_days", "value": 365},
    ]}}  # fmt: skip
    rows: list[dict] = []

    def chosen(name: str) -> bool:
        """--only: a comma-separated list of words; an operation runs when it has one."""
        words = [word.strip().lower() for word in args.only.split(",")]
        return any(word in name.lower() for word in words)

    def measure(
        name: str,
        product: Callable,
        baseline: Callable,
        limit: Callable | None = None,
        *,
        per_second: bool = False,
    ) -> None:
        if not chosen(name):
            return
        product_ms, product_rows = timed(product, args.repeat)
        raw_ms, raw_rows = timed(baseline, args.repeat)
        limit_ms, limit_rows = timed(limit, args.repeat) if limit else (None, None)
        rate = f"{product_rows / product_ms * 1000:,.0f}/s" if per_second and product_ms else ""
        raw_rate = f"{raw_rows / raw_ms * 1000:,.0f}/s" if per_second and raw_ms else ""
        rows.append({
            "operation": name, "product_ms": round(product_ms, 1), "raw_ms": round(raw_ms, 1),
            "limit_ms": round(limit_ms, 1) if limit_ms is not None else None,
            "ratio": round(product_ms / raw_ms, 2) if raw_ms else None,
            "limit_ratio": round(product_ms / limit_ms, 2) if limit_ms else None,
            "rows": product_rows, "raw_rows": raw_rows,
            "limit_rows": limit_rows if limit else raw_rows,
            "rate": rate, "raw_rate": raw_rate,
        })  # fmt: skip
        shown = f"{limit_ms:9.1f} ms" if limit_ms is not None else f"{'—':>12}"
        print(
            f"{name:<42} product {product_ms:9.1f} ms   raw {raw_ms:9.1f} ms   limit {shown}"
            f"   rows {product_rows} {rate}"
        )

    measure(
        "3-condition exact count",
        lambda: targeting.count("contact", three).rows,
        lambda: raw(
            f"SELECT COUNT(*) FROM {contact} WHERE email_consent AND language IN (%s, %s) "
            "AND birth_date < %s",
            ["fr", "en", born_before],
        ),
    )
    measure(
        "exists-over-bookings segmentation (count)",
        lambda: targeting.count("contact", segment).rows,
        lambda: raw(
            f"SELECT COUNT(*) FROM {contact} c WHERE EXISTS (SELECT 1 FROM {booking} b "
            "WHERE b.contact_id = c.id AND b.product = %s AND b.booking_date >= %s "
            "AND b.booking_date <= %s)",
            ["Ski week", since, date.today()],
        ),
    )

    # Materialising operations: the product (one work table per step), the same statements
    # written by hand in the product's table shape (raw), and the physical limit: the same
    # rows written by a bare CREATE UNLOGGED TABLE … AS SELECT.
    seg_select = (
        "SELECT c.id AS contact_id, CAST(NULL AS bigint) AS secondary_id, c.entity_id "
        f"FROM {contact} c WHERE EXISTS (SELECT 1 FROM {booking} b WHERE b.contact_id = c.id "
        "AND b.product = %s AND b.booking_date >= %s AND b.booking_date <= %s)"
    )
    seg_params = ["Ski week", since, date.today()]

    def product_materialise() -> int:
        queryset = targeting.target_queryset("contact", segment)
        return targeting.materialise(queryset, dimension="contact", run_key="bench", name="seg")

    measure(
        "work-table materialisation",
        product_materialise,
        lambda: ctas("bench_raw_seg", shaped(seg_select), seg_params),
        lambda: ctas("bench_limit_seg", seg_select, seg_params),
    )
    product_materialise()  # the inputs of the next steps, whatever --only measured

    def table(name: str) -> str:
        return q(worktables.find("bench", name).table_name)

    def product_distribute() -> int:
        report = targeting.distribute(
            run_key="bench", source="seg", target="dist", default_limit=1000
        )
        return report.kept

    def distribute_select() -> str:
        return (
            "SELECT contact_id, secondary_id, entity_id FROM (SELECT contact_id, secondary_id, "
            "entity_id, ROW_NUMBER() OVER (PARTITION BY entity_id "
            "ORDER BY contact_id, secondary_id, id) AS rn "
            f"FROM {table('seg')} WHERE entity_id IS NOT NULL) ranked WHERE rn <= 1000"
        )

    measure(
        "per-entity distribution (limit 1000)",
        product_distribute,
        lambda: ctas("bench_raw_dist", shaped(distribute_select())),
        lambda: ctas("bench_limit_dist", distribute_select()),
    )

    # Multi-level: one row per booking (its contact, the booking as secondary record, the
    # contact's entity), conditions on the booking and on its contact.
    per_booking = {"and": [
        {"field": "product", "op": "eq", "value": "Ski week"},
        {"field": "booking_date", "op": "in_last_days", "value": 365},
        {"field": "contact.email_consent", "op": "eq", "value": True},
    ]}  # fmt: skip
    booking_select = (
        "SELECT b.contact_id, b.id AS secondary_id, c.entity_id "
        f"FROM {booking} b JOIN {contact} c ON c.id = b.contact_id "
        "WHERE b.product = %s AND b.booking_date >= %s AND b.booking_date <= %s "
        "AND c.email_consent"
    )

    def product_per_booking() -> int:
        queryset = targeting.target_queryset("booking", per_booking)
        return targeting.materialise(
            queryset, dimension="booking", run_key="bench", name="bookings"
        )

    measure(
        "per-booking multi-level target",
        product_per_booking,
        lambda: ctas("bench_raw_bookings", shaped(booking_select), seg_params),
        lambda: ctas("bench_limit_bookings", booking_select, seg_params),
    )
    product_per_booking()
    targeting.materialise(
        targeting.target_queryset("contact", three), dimension="contact", run_key="bench",
        name="three",
    )  # fmt: skip
    measure_set_operations(measure, table)
    drop_bench_tables(*(
        f"bench_{kind}_{name}" for kind in ("raw", "limit")
        for name in ("seg", "dist", "bookings", "half", "rest", "union", "minus", "dedup")
    ))  # fmt: skip
    targeting.drop_run("bench")

    def wanted(*names: str) -> bool:
        return any(chosen(name) for name in names)

    if wanted("6-activity workflow (simulation)"):
        from bench.workflow import measure_workflow

        measure_workflow(measure, raw, three, segment, born_before, since)
    if wanted("message preparation + rendering"):
        from bench.deliveries import measure_deliveries

        measure_deliveries(measure, raw, recipients=args.recipients)
    if wanted("email sending, 1 worker", "email sending, 2 workers") and args.sends:
        from bench.sending import measure_sending

        counts = tuple(int(n) for n in args.workers.split(",") if n.strip())
        rows += measure_sending(
            sends=args.sends, repeat=args.repeat, workers=counts, broker=args.broker
        )

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"vendor": connection.vendor, "contacts": args.contacts, "repeat": args.repeat}
    (RESULTS / f"targeting-{stamp}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [
        "| operation | product (ms) | raw (ms) | limit, CTAS (ms) | product ÷ raw "
        "| product ÷ limit | rows | product rate | raw rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['operation']} | {r['product_ms']} | {r['raw_ms']} | {r.get('limit_ms') or '—'} "
        f"| {r['ratio']} | {r.get('limit_ratio') or '—'} | {r['rows']} | {r['rate']} "
        f"| {r['raw_rate']} |"
        for r in rows
    ]
    (RESULTS / f"targeting-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    slow = [r for r in rows if r["ratio"] and r["ratio"] > args.threshold]
    mismatched = [
        r for r in rows
        if r["rows"] != r["raw_rows"] or r.get("limit_rows", r["raw_rows"]) != r["raw_rows"]
    ]  # fmt: skip
    for r in mismatched:
        print(
            f"MISMATCH {r['operation']}: product {r['rows']} rows, raw {r['raw_rows']}, "
            f"limit {r.get('limit_rows')}"
        )
    for r in slow:
        print(f"SLOW {r['operation']}: ratio {r['ratio']} > {args.threshold}")
    return 1 if slow or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
