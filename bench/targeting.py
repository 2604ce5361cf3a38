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
from campaigns.models import Booking, Contact, WorkTableRow  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=60, help="local entities (stores)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument("--only", default="", help="run the operations whose name has this")
    parser.add_argument("--recipients", type=int, default=100_000, help="messages to prepare")
    parser.add_argument("--sends", type=int, default=20_000, help="emails to send to the sink")
    parser.add_argument("--workers", default="1,2", help="numbers of sending workers to measure")
    parser.add_argument("--broker", default="", help="the sending workers' broker (Redis)")
    args = parser.parse_args()
    ensure_audience(args.contacts, args.entities)

    q = connection.ops.quote_name
    contact, booking, wt = (
        q(Contact._meta.db_table),
        q(Booking._meta.db_table),
        q(WorkTableRow._meta.db_table),
    )
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

    def measure(
        name: str, product: Callable, baseline: Callable, *, per_second: bool = False
    ) -> None:
        if args.only.lower() not in name.lower():
            return
        product_ms, product_rows = timed(product, args.repeat)
        raw_ms, raw_rows = timed(baseline, args.repeat)
        rate = f"{product_rows / product_ms * 1000:,.0f}/s" if per_second and product_ms else ""
        raw_rate = f"{raw_rows / raw_ms * 1000:,.0f}/s" if per_second and raw_ms else ""
        rows.append({
            "operation": name, "product_ms": round(product_ms, 1), "raw_ms": round(raw_ms, 1),
            "ratio": round(product_ms / raw_ms, 2) if raw_ms else None,
            "rows": product_rows, "raw_rows": raw_rows, "rate": rate, "raw_rate": raw_rate,
        })  # fmt: skip
        print(
            f"{name:<42} product {product_ms:9.1f} ms   raw {raw_ms:9.1f} ms   rows {product_rows}"
            f" {rate}"
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

    def product_materialise() -> int:
        queryset = targeting.target_queryset("contact", segment)
        return targeting.materialise(queryset, dimension="contact", run_key="bench", name="seg")

    def raw_materialise() -> int:
        with transaction.atomic():
            raw(f"DELETE FROM {wt} WHERE run_key = %s AND name = %s", ["bench-raw", "seg"])
            return raw(
                f"INSERT INTO {wt} (run_key, name, contact_id, secondary_id, entity_id, "
                "created_at) SELECT %s, %s, c.id, NULL, c.entity_id, CURRENT_TIMESTAMP "
                f"FROM {contact} c "
                f"WHERE EXISTS (SELECT 1 FROM {booking} b WHERE b.contact_id = c.id "
                "AND b.product = %s AND b.booking_date >= %s AND b.booking_date <= %s)",
                ["bench-raw", "seg", "Ski week", since, date.today()],
            )

    measure("work-table materialisation", product_materialise, raw_materialise)

    def product_distribute() -> int:
        report = targeting.distribute(
            run_key="bench", source="seg", target="dist", default_limit=1000
        )
        return report.kept

    def raw_distribute() -> int:
        with transaction.atomic():
            raw(f"DELETE FROM {wt} WHERE run_key = %s AND name = %s", ["bench-raw", "dist"])
            return raw(
                f"INSERT INTO {wt} (run_key, name, contact_id, secondary_id, entity_id, "
                "created_at) SELECT run_key, %s, contact_id, secondary_id, entity_id, "
                "CURRENT_TIMESTAMP "
                "FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY entity_id ORDER BY id) AS rn "
                f"FROM {wt} WHERE run_key = %s AND name = %s AND entity_id IS NOT NULL) ranked "
                "WHERE rn <= %s",
                ["dist", "bench-raw", "seg", 1000],
            )

    measure("per-entity distribution (limit 1000)", product_distribute, raw_distribute)

    # Multi-level: one row per booking (its contact, the booking as secondary record, the
    # contact's entity), conditions on the booking and on its contact.
    per_booking = {"and": [
        {"field": "product", "op": "eq", "value": "Ski week"},
        {"field": "booking_date", "op": "in_last_days", "value": 365},
        {"field": "contact.email_consent", "op": "eq", "value": True},
    ]}  # fmt: skip

    def product_per_booking() -> int:
        queryset = targeting.target_queryset("booking", per_booking)
        return targeting.materialise(
            queryset, dimension="booking", run_key="bench", name="bookings"
        )

    def raw_per_booking() -> int:
        with transaction.atomic():
            raw(f"DELETE FROM {wt} WHERE run_key = %s AND name = %s", ["bench-raw", "bookings"])
            return raw(
                f"INSERT INTO {wt} (run_key, name, contact_id, secondary_id, entity_id, "
                "created_at) SELECT %s, %s, b.contact_id, b.id, c.entity_id, CURRENT_TIMESTAMP "
                f"FROM {booking} b JOIN {contact} c ON c.id = b.contact_id "
                "WHERE b.product = %s AND b.booking_date >= %s AND b.booking_date <= %s "
                "AND c.email_consent",
                ["bench-raw", "bookings", "Ski week", since, date.today()],
            )

    measure("per-booking multi-level target", product_per_booking, raw_per_booking)
    WorkTableRow.objects.filter(run_key__in=["bench", "bench-raw"]).delete()

    def wanted(*names: str) -> bool:
        return any(args.only.lower() in name for name in names)

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
        "| operation | product (ms) | raw (ms) | ratio | rows | product rate | raw rate |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['operation']} | {r['product_ms']} | {r['raw_ms']} | {r['ratio']} | {r['rows']} "
        f"| {r['rate']} | {r['raw_rate']} |"
        for r in rows
    ]
    (RESULTS / f"targeting-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    slow = [r for r in rows if r["ratio"] and r["ratio"] > args.threshold]
    mismatched = [r for r in rows if r["rows"] != r["raw_rows"]]
    for r in mismatched:
        print(f"MISMATCH {r['operation']}: product {r['rows']} rows, raw {r['raw_rows']}")
    for r in slow:
        print(f"SLOW {r['operation']}: ratio {r['ratio']} > {args.threshold}")
    return 1 if slow or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
