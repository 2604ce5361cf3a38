"""The parent's table of child campaigns (entity, child, state, targeted, sent, last run),
as the admin and the portal build it: one query whatever the number of children.

    DATABASE_URL=postgres://… python -m bench.children --children 300 --messages 500

Builds (once, under the ``BCH`` prefix) a parent with N child campaigns of N local entities,
each with a real run and a delivery of M messages (90 % sent), then prints the median and
p95 time of listing the whole table and the number of queries it took.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from campaigns import services  # noqa: E402
from campaigns.models import Campaign, Delivery, Message, WorkflowRun  # noqa: E402
from portal.models import Entity  # noqa: E402

PREFIX = "BCH"
PARENT = "Bench parent with children"


def build(children: int, messages: int) -> Campaign:
    parent = Campaign.objects.filter(name=PARENT).first()
    if parent and parent.children.count() == children:
        return _settled(parent)
    with transaction.atomic():
        central = Entity.objects.filter(kind="central").first() or Entity.objects.create(
            code=f"{PREFIX}_HQ", name="Bench HQ", kind="central"
        )
        if parent is None:
            parent = Campaign.objects.create(
                name=PARENT, kind="reference", collaborative_type="by_campaign", entity=central
            )
        for n in range(parent.children.count(), children):
            code = f"{PREFIX}_{n:05d}"
            entity = Entity.objects.filter(code=code).first() or Entity.objects.create(
                code=code, name=f"Bench store {n}", kind="local", parent=central
            )
            child = Campaign.objects.create(
                name=f"{PARENT} — {code}", kind="child", collaborative_type="by_campaign",
                entity=entity, parent=parent, state="completed",
            )  # fmt: skip
            run = WorkflowRun.objects.create(campaign=child, state="completed")
            delivery = Delivery.objects.create(
                campaign=child, run=run, label="Bench", targeted=messages, state="sent"
            )
            rows = [
                Message(delivery=delivery, contact_id=10_000_000 + i, entity=entity,
                        channel="email", status="sent" if i % 10 else "failed")
                for i in range(messages)
            ]  # fmt: skip
            Message.objects.bulk_create(rows, batch_size=5000)
    return _settled(parent)


def _settled(parent: Campaign) -> Campaign:
    """The tables as autovacuum leaves them: fresh statistics and visibility map."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("campaigns_message", "campaigns_delivery", "campaigns_campaign",
                          "campaigns_workflowrun", "portal_entity"):  # fmt: skip
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(table)}")
    return parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=300)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    parent = build(args.children, args.messages)
    timings = []
    for _ in range(args.repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            rows = [
                (r.entity.code, r.state, r.targeted, r.sent, r.last_run)
                for r in services.children_overview(parent)
            ]
            timings.append(time.perf_counter() - started)
    assert len(rows) == args.children, len(rows)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    print(
        f"children table: {len(rows)} children x {args.messages} messages — "
        f"{len(captured)} query, median {statistics.median(timings) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms ({connection.vendor})"
    )


if __name__ == "__main__":
    main()
