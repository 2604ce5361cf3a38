"""Delivery benchmark: message preparation (typology with consent, blocklist and pressure,
Jinja2 rendering, bulk insert) against the equivalent hand-written baseline (raw SQL and a
plain Jinja2 loop). Sending is measured by ``bench.sending``, with real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from campaigns import targeting
from campaigns.delivery import preparation, rendering, sending
from campaigns.models import Campaign, Contact, Delivery, Message, Typology
from portal.models import Entity

NAME = "Bench deliveries"
HISTORY = "Bench history"
RULES = [{"rule": "consent"}, {"rule": "blocklist"}, {"rule": "pressure", "max": 3, "days": 7}]
SUBJECT = "Hello {{ contact.first_name }}, news from {{ entity.name }}"
TEXT = "Dear {{ contact.first_name }} {{ contact.last_name }}, our offers are in store."


def ensure_history(central: Entity, *, last_recipient: int, raw: Callable[..., int]) -> None:
    """What the pressure rule reads, made once per database: one email sent two days ago to
    every contact, and two more to every fourth recipient, who thereby reaches the limit."""
    if Campaign.objects.filter(name=HISTORY).exists():
        return
    started = time.perf_counter()
    campaign = Campaign.objects.create(name=HISTORY, kind="parent", entity=central)
    sent_at = timezone.now() - timedelta(days=2)
    q = connection.ops.quote_name
    message, contact = q(Message._meta.db_table), q(Contact._meta.db_table)
    everyone, every_fourth = "", "WHERE c.id <= %s AND c.id %% 4 = 0"
    for index, where in enumerate([everyone, every_fourth, every_fourth]):
        delivery = Delivery.objects.create(campaign=campaign, label=f"History {index}")
        raw(
            f"INSERT INTO {message} (delivery_id, contact_id, secondary_id, entity_id, channel, "
            "address, status, rule, error, attempts, sent_at, created_at) SELECT %s, c.id, 0, "
            f"c.entity_id, 'email', COALESCE(c.email, ''), 'sent', '', '', 1, %s, %s "
            f"FROM {contact} c {where}",
            [delivery.pk, sent_at, sent_at] + ([last_recipient] if where else []),
        )
    total = Message.objects.filter(delivery__campaign=campaign).count()
    print(f"Made a history of {total} sent messages in {time.perf_counter() - started:.1f} s")


def measure_deliveries(
    measure: Callable[..., None], raw: Callable[..., int], recipients: int
) -> None:
    central = Entity.objects.get(kind="central")
    Campaign.objects.filter(name=NAME).delete()
    campaign = Campaign.objects.create(name=NAME, kind="parent", entity=central)
    typology, _ = Typology.objects.get_or_create(
        name=NAME, defaults={"entity": central, "rules": RULES}
    )
    first = list(Contact.objects.order_by("id").values_list("id", flat=True)[:recipients])
    run_key = "bench-deliveries"
    targeting.drop_run(run_key)
    targeting.materialise(
        Contact.objects.filter(pk__in=first), dimension="contact", run_key=run_key, name="t"
    )
    q = connection.ops.quote_name
    ensure_history(central, last_recipient=first[-1] if first else 0, raw=raw)
    if connection.vendor == "postgresql":  # dead rows of earlier runs would slow every insert
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {q(Message._meta.db_table)}")
    message, contact = q(Message._meta.db_table), q(Contact._meta.db_table)
    wt = q(targeting.worktables.find(run_key, "t").table_name)

    def render_all(delivery: Delivery) -> int:
        """What sending renders, chunk by chunk: the chunks are id ranges of the pending
        messages (as `enqueue_chunks` cuts them) read as the chunk tasks read them."""
        renderer = sending.Renderer(delivery)
        pending = Message.objects.filter(delivery=delivery, status="pending")
        ids = list(pending.order_by("id").values_list("id", flat=True))
        done = 0
        for start in range(0, len(ids), 2000):
            chunk = ids[start : start + 2000]
            for recipient in renderer.rows(pending.filter(id__gte=chunk[0], id__lte=chunk[-1])):
                renderer.render(recipient)
                done += 1
        return done

    def product_prepare() -> int:
        delivery = Delivery.objects.create(
            campaign=campaign, label="Bench", channel="email", typology=typology,
            subject=SUBJECT, text_body=TEXT,
        )  # fmt: skip
        preparation.prepare(delivery=delivery, run_key=run_key, table="t")
        rendered = render_all(delivery)
        made.append(delivery.pk)
        return rendered

    def raw_prepare() -> int:
        delivery = Delivery.objects.create(campaign=campaign, label="Raw", channel="email")
        now = timezone.now()
        with transaction.atomic():
            raw(
                f"INSERT INTO {message} (delivery_id, contact_id, secondary_id, entity_id, "
                "channel, address, status, rule, error, attempts, created_at) SELECT %s, "
                f"w.contact_id, 0, w.entity_id, 'email', COALESCE(c.email, ''), 'pending', '', "
                f"'', 0, %s FROM {wt} w JOIN {contact} c ON c.id = w.contact_id",
                [delivery.pk, now],
            )
            raw(
                f"UPDATE {message} SET status = 'excluded', rule = 'consent' WHERE "
                f"delivery_id = %s AND status = 'pending' AND contact_id IN (SELECT id FROM "
                f"{contact} WHERE NOT email_consent)",
                [delivery.pk],
            )
            raw(
                f"UPDATE {message} SET status = 'excluded', rule = 'blocklist' WHERE "
                f"delivery_id = %s AND status = 'pending' AND contact_id IN (SELECT id FROM "
                f"{contact} WHERE blocklisted)",
                [delivery.pk],
            )
            raw(
                f"UPDATE {message} SET status = 'excluded', rule = 'pressure' WHERE "
                "delivery_id = %s AND status = 'pending' AND (SELECT COUNT(*) FROM "
                f"{message} h WHERE h.contact_id = {message}.contact_id AND h.status = 'sent' "
                "AND h.sent_at >= %s AND h.delivery_id <> %s) >= 3",
                [delivery.pk, now - timedelta(days=7), delivery.pk],
            )
        subject = rendering.TEXT.from_string(SUBJECT)
        text = rendering.TEXT.from_string(TEXT)
        rendered = 0
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT c.first_name, c.last_name, e.name FROM {message} m JOIN {contact} c "
                "ON c.id = m.contact_id JOIN portal_entity e ON e.id = c.entity_id "
                "WHERE m.delivery_id = %s AND m.status = 'pending'",
                [delivery.pk],
            )
            for first_name, last_name, entity in cursor:
                context = {"contact": {"first_name": first_name, "last_name": last_name},
                           "entity": {"name": entity}}  # fmt: skip
                subject.render(**context)
                text.render(**context)
                rendered += 1
        made.append(delivery.pk)
        return rendered

    made: list[int] = []  # deleted after the timings
    measure("message preparation + rendering", product_prepare, raw_prepare, per_second=True)
    Message.objects.filter(delivery_id__in=made).delete()
    Delivery.objects.filter(pk__in=made).delete()

    targeting.drop_run(run_key)
    campaign.delete()
