"""Import benchmark: check + commit of a contacts file and a bookings file through the product
(an ImportJob run as the worker runs it), against the physical limit of the same file.

    DATABASE_URL=postgres://… python -m bench.imports --contacts 1000000 --bookings 3000000

The physical limit (PostgreSQL only) is the staged write any loader must do at least: the file
COPYed into an unlogged staging table of text columns, then one ``INSERT … SELECT … ON
CONFLICT (key) DO UPDATE`` (casting the text, resolving the entity / contact / store codes by
join) into a copy of the product's table holding the same rows, all of its indexes and its
(deferred) foreign keys.
Each timed section starts after a CHECKPOINT, so that neither pays for flushing the other's
writes. Each file holds new keys (a fresh prefix per run), so both sides insert the same rows.
Prints one line per operation and writes Markdown and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.files import File  # noqa: E402
from django.db import DatabaseError, connection  # noqa: E402

from campaigns import imports  # noqa: E402
from campaigns.models import Booking, Contact, Store  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONTACT_HEADER = [
    "external_id", "first_name", "last_name", "email", "phone", "language", "birth_date",
    "entity", "email_consent", "sms_consent", "blocklisted",
]  # fmt: skip
BOOKING_HEADER = [
    "reference", "contact", "store", "product", "destination", "booking_date", "amount",
    "status",
]  # fmt: skip
PRODUCTS = ["Ski week", "Cruise", "City break", "Safari", "Beach"]
DESTINATIONS = ["Alps", "Nile", "Rome", "Kenya", "Crete"]


def write_contacts(path: Path, prefix: str, count: int, entities: list[str]) -> None:
    rng = random.Random(7)
    start = date(1950, 1, 1)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(CONTACT_HEADER)
        for number in range(count):
            out.writerow([
                f"{prefix}C{number}", f"First{number % 997}", f"Last{number % 1009}",
                f"{prefix.lower()}p{number}@example.com", f"+3361{number:08d}",
                rng.choice(["en", "fr", "de"]),
                (start + timedelta(days=rng.randrange(20000))).isoformat(),
                entities[number % len(entities)], rng.choice("01"), rng.choice("01"), "0",
            ])  # fmt: skip


def write_bookings(
    path: Path, prefix: str, count: int, contacts: int, stores: dict[str, list[str]],
    entities: list[str],
) -> None:  # fmt: skip
    rng = random.Random(11)
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(BOOKING_HEADER)
        for number in range(count):
            contact = number % contacts
            entity = entities[contact % len(entities)]
            out.writerow([
                f"{prefix}B{number}", f"{prefix}C{contact}", rng.choice(stores[entity]),
                rng.choice(PRODUCTS), rng.choice(DESTINATIONS),
                (date(2024, 1, 1) + timedelta(days=rng.randrange(900))).isoformat(),
                f"{rng.randrange(10000, 900000) / 100:.2f}", "confirmed",
            ])  # fmt: skip


def ensure_stores(entity_codes: list[str]) -> dict[str, list[str]]:
    from portal.models import Entity

    entities = {entity.code: entity for entity in Entity.objects.filter(code__in=entity_codes)}
    Store.objects.bulk_create(
        [
            Store(code=f"BENCH-ST-{code}-{n}", name=f"Store {n}", city="Lille", entity=entity)
            for code, entity in entities.items()
            for n in range(3)
        ],
        ignore_conflicts=True,
    )
    stores: dict[str, list[str]] = {}
    for code, entity_code in Store.objects.filter(entity__code__in=entity_codes).values_list(
        "code", "entity__code"
    ):
        stores.setdefault(entity_code, []).append(code)
    return stores


def checkpoint() -> None:
    """Start a timed section with no dirty pages left by the previous one (its writes would
    otherwise be flushed during this one). Needs the pg_checkpoint role or a superuser."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError as exc:
            print(f"(no CHECKPOINT before the timed section: {exc})".strip(), file=sys.stderr)


def product(kind: str, path: Path) -> tuple[float, dict]:
    with path.open("rb") as handle:
        job = imports.create_job(
            kind=kind, filename=path.name, content=File(handle, name=path.name), actor=None,
            dry_run=False, enqueue=False, size_limit=False,
        )  # fmt: skip
    checkpoint()
    started = time.perf_counter()
    job = imports.run_import(job_id=job.pk)
    seconds = time.perf_counter() - started
    if job.state != "done" or job.error_rows:
        raise SystemExit(f"The {kind} import did not succeed: {job.state} {job.message}")
    return seconds, {"new": job.new_rows, "errors": job.error_rows}


LIMIT_SQL = {
    "contacts": (
        "external_id",
        """INSERT INTO {copy} (external_id, first_name, last_name, email, phone, push_token,
            language, birth_date, entity_id, email_consent, email_consent_source, sms_consent,
            sms_consent_source, push_consent, push_consent_source, blocklisted, created_at,
            updated_at)
        SELECT s.external_id, s.first_name, s.last_name, s.email, s.phone, '', s.language,
            s.birth_date::date, e.id, s.email_consent::boolean, '', s.sms_consent::boolean, '',
            false, '', s.blocklisted::boolean, now(), now()
        FROM {stage} s JOIN portal_entity e ON e.code = s.entity
        ON CONFLICT (external_id) DO UPDATE SET first_name = EXCLUDED.first_name,
            last_name = EXCLUDED.last_name, email = EXCLUDED.email, phone = EXCLUDED.phone,
            language = EXCLUDED.language, birth_date = EXCLUDED.birth_date,
            entity_id = EXCLUDED.entity_id, email_consent = EXCLUDED.email_consent,
            sms_consent = EXCLUDED.sms_consent, blocklisted = EXCLUDED.blocklisted,
            updated_at = EXCLUDED.updated_at""",
    ),
    "bookings": (
        "reference",
        """INSERT INTO {copy} (reference, contact_id, store_id, product, destination,
            booking_date, amount, status)
        SELECT s.reference, c.id, st.id, s.product, s.destination, s.booking_date::date,
            s.amount::numeric, s.status
        FROM {stage} s JOIN campaigns_contact c ON c.external_id = s.contact
        LEFT JOIN campaigns_store st ON st.code = s.store
        ON CONFLICT (reference) DO UPDATE SET contact_id = EXCLUDED.contact_id,
            store_id = EXCLUDED.store_id, product = EXCLUDED.product,
            destination = EXCLUDED.destination, booking_date = EXCLUDED.booking_date,
            amount = EXCLUDED.amount, status = EXCLUDED.status""",
    ),
}


def limit(kind: str, path: Path, header: list[str]) -> tuple[float, int]:
    """COPY into an unlogged staging table + one upsert into a copy of the table (with its
    rows and indexes, built before the clock starts)."""
    table = {"contacts": Contact, "bookings": Booking}[kind]._meta.db_table
    copy, stage = f"bench_limit_{kind}", f"bench_limit_{kind}_stage"
    _, upsert = LIMIT_SQL[kind]
    with connection.cursor() as cursor:  # autocommit: each statement commits
        cursor.execute(f"DROP TABLE IF EXISTS {copy}, {stage}")
        cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
        cursor.execute(f"INSERT INTO {copy} SELECT * FROM {table}")
        # LIKE copies the indexes, not the foreign keys: the same (deferred) ones as the
        # product's table, or the limit would skip the reference checks the product pays for
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        for name, definition in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {copy} ADD CONSTRAINT {name}_copy {definition}")
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {copy}")
        cursor.execute(f"ALTER TABLE {copy} ALTER COLUMN id RESTART WITH {cursor.fetchone()[0]}")
        cursor.execute(f"ANALYZE {copy}")
    checkpoint()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        columns = ", ".join(f"{name} text" for name in header)
        cursor.execute(f"CREATE UNLOGGED TABLE {stage} ({columns})")
        with (
            path.open("rb") as handle,
            cursor.cursor.copy(f"COPY {stage} FROM STDIN (FORMAT csv, HEADER true)") as pipe,
        ):
            while data := handle.read(1 << 20):
                pipe.write(data)
        cursor.execute(upsert.format(copy=copy, stage=stage))
        rows = cursor.rowcount
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {copy}, {stage}")
    return seconds, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--bookings", type=int, default=3_000_000)
    parser.add_argument("--entities", type=int, default=50)
    args = parser.parse_args()
    from bench.targeting import ensure_entities

    settings.IMPORT_MAX_ROWS = max(args.contacts, args.bookings) + 1
    entity_codes = [entity.code for entity in ensure_entities(args.entities)]
    stores = ensure_stores(entity_codes)
    prefix = f"IMP{int(time.time())}-"
    postgres = connection.vendor == "postgresql"
    results = []
    with tempfile.TemporaryDirectory() as folder:
        contacts_file = Path(folder) / "contacts.csv"
        bookings_file = Path(folder) / "bookings.csv"
        write_contacts(contacts_file, prefix, args.contacts, entity_codes)
        write_bookings(bookings_file, prefix, args.bookings, args.contacts, stores, entity_codes)
        for kind, path, header, rows in (
            ("contacts", contacts_file, CONTACT_HEADER, args.contacts),
            ("bookings", bookings_file, BOOKING_HEADER, args.bookings),
        ):
            if postgres:  # the limit first: the product's own rows are not in its copy
                limit_s, written = limit(kind, path, header)
                if written != rows:
                    raise SystemExit(f"The {kind} limit wrote {written} rows, not {rows}.")
            seconds, counts = product(kind, path)
            if counts["new"] != rows:
                raise SystemExit(f"The {kind} import made {counts['new']} rows, not {rows}.")
            line = {
                "operation": f"import {rows:,} {kind} (check + commit)",
                "rows": rows,
                "product_s": round(seconds, 2),
                "product_rows_per_s": round(rows / seconds),
            }
            if postgres:
                line.update(
                    limit_s=round(limit_s, 2),
                    limit_rows_per_s=round(rows / limit_s),
                    ratio=round(seconds / limit_s, 2),
                )
            results.append(line)
            print(json.dumps(line), flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"imports-{stamp}.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"Imports on {connection.vendor} ({os.cpu_count()} CPUs), {time.strftime('%F %T')}",
        "",
        "| operation | product | physical limit | product ÷ limit |",
        "|---|---|---|---|",
    ]
    for line in results:
        limit_cell = (
            f"{line['limit_s']} s ({line['limit_rows_per_s']:,} rows/s)" if postgres else "—"
        )
        lines.append(
            f"| {line['operation']} | {line['product_s']} s ({line['product_rows_per_s']:,} "
            f"rows/s) | {limit_cell} | {line.get('ratio', '—')}x |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / f"imports-{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
