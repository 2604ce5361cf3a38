"""A large, deterministic synthetic audience for benchmarks and demos: contacts, bookings and
subscriptions written with COPY on PostgreSQL and bulk inserts elsewhere."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import Booking, Contact, Store, Subscription
from portal.models import Entity

PRODUCTS = ["City break", "Ski week", "Beach stay", "Cruise", "Road trip"]
DESTINATIONS = ["Lisbon", "Chamonix", "Crete", "Norway", "Tuscany", "Seville", "Iceland"]
STATUSES = ["confirmed", "completed", "completed", "cancelled"]
LANGUAGES = ["en", "fr", "es", "de"]
BATCH = 20_000


@dataclass(frozen=True)
class Generated:
    contacts: int
    bookings: int
    subscriptions: int


def _copy(model: type, columns: Sequence[str], rows: Iterator[tuple]) -> int:
    """Write rows with COPY (PostgreSQL) or batched bulk inserts (SQLite)."""
    written = 0
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        names = ", ".join(quote(column) for column in columns)
        with (
            connection.cursor() as cursor,
            cursor.copy(  # type: ignore[attr-defined]
                f"COPY {table} ({names}) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
                written += 1
        return written
    batch: list = []
    for row in rows:
        batch.append(model(**dict(zip(columns, row, strict=True))))
        if len(batch) >= BATCH:
            model.objects.bulk_create(batch)
            written += len(batch)
            batch = []
    model.objects.bulk_create(batch)
    return written + len(batch)


def generate(
    *,
    contacts: int,
    bookings_per_contact: float = 3.0,
    subscription_share: float = 0.3,
    entities: Sequence[Entity] | None = None,
    seed: int = 1,
    prefix: str = "S",
) -> Generated:
    """Add ``contacts`` synthetic contacts spread over the local entities, with on average
    ``bookings_per_contact`` bookings each. Deterministic for a seed; external ids and booking
    references start with ``prefix``. Refuses to run twice with the same prefix."""
    entities = list(entities or Entity.objects.filter(kind="local", active=True).order_by("pk"))
    if not entities:
        raise ValueError("Create local entities first (seed_demo does).")
    if Contact.objects.filter(external_id__startswith=f"{prefix}-").exists():
        raise ValueError(f"A synthetic audience with prefix {prefix!r} exists already.")
    rng = random.Random(seed)
    today = date.today()
    now = timezone.now()
    stores = {
        entity.pk: Store.objects.get_or_create(
            code=f"{prefix}-ST-{entity.code}", defaults={"name": entity.name, "entity": entity}
        )[0].pk
        for entity in entities
    }
    contact_columns = (
        "external_id", "first_name", "last_name", "email", "phone", "push_token", "language",
        "birth_date", "entity_id", "email_consent", "email_consent_source", "sms_consent",
        "sms_consent_source", "push_consent", "push_consent_source", "blocklisted",
        "created_at", "updated_at",
    )  # fmt: skip

    def contact_rows() -> Iterator[tuple]:
        for number in range(contacts):
            entity = entities[number % len(entities)]
            yield (
                f"{prefix}-{number:08d}", f"First{number % 997}", f"Last{number % 1009}",
                f"c{number}@{prefix.lower()}.example", f"+336{number:08d}", "",
                rng.choice(LANGUAGES), today - timedelta(days=rng.randint(6570, 29200)),
                entity.pk, rng.random() < 0.8, "synthetic", rng.random() < 0.5, "synthetic",
                rng.random() < 0.3, "synthetic", rng.random() < 0.01, now, now,
            )  # fmt: skip

    with transaction.atomic():
        written = _copy(Contact, contact_columns, contact_rows())
        ids = Contact.objects.filter(external_id__startswith=f"{prefix}-").order_by("pk")
        pairs = list(ids.values_list("pk", "entity_id"))

        def booking_rows() -> Iterator[tuple]:
            for contact_id, entity_id in pairs:
                for index in range(rng.randint(0, round(2 * bookings_per_contact))):
                    yield (
                        contact_id, stores[entity_id], f"{prefix}-B{contact_id}-{index}",
                        rng.choice(PRODUCTS), rng.choice(DESTINATIONS),
                        today - timedelta(days=rng.randint(0, 1095)),
                        Decimal(rng.randint(100, 5000)), rng.choice(STATUSES),
                    )  # fmt: skip

        def subscription_rows() -> Iterator[tuple]:
            for contact_id, _entity_id in pairs:
                if rng.random() < subscription_share:
                    start = today - timedelta(days=rng.randint(0, 1500))
                    yield (contact_id, "Travel club", start, None, "active")

        booked = _copy(
            Booking,
            ("contact_id", "store_id", "reference", "product", "destination", "booking_date",
             "amount", "status"),
            booking_rows(),
        )  # fmt: skip
        subscribed = _copy(
            Subscription,
            ("contact_id", "product", "start_date", "end_date", "status"),
            subscription_rows(),
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (Contact, Booking, Subscription):
                cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return Generated(contacts=written, bookings=booked, subscriptions=subscribed)
