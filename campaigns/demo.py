"""Demo audience: stores, contacts, bookings and subscriptions, loaded through the real import
service (so the demo exercises the same path as a user's CSV), plus saved queries."""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model

from campaigns import imports, synthetic
from campaigns.models import SavedQuery

FIRST = [
    "Alice",
    "Bruno",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Gina",
    "Hugo",
    "Ines",
    "Jules",
    "Karim",
    "Lina",
    "Marc",
    "Nora",
    "Oscar",
    "Paula",
    "Quentin",
    "Rose",
    "Sami",
    "Tara",
]
LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
]
PRODUCTS = ["City break", "Ski week", "Beach stay", "Cruise", "Road trip"]
DESTINATIONS = ["Lisbon", "Chamonix", "Crete", "Norway", "Tuscany", "Seville", "Iceland"]


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _load(kind: str, content: bytes, stdout: Any) -> None:
    job = imports.create_job(
        kind=kind, filename=f"demo-{kind}.csv", content=content, actor=None, dry_run=False,
        enqueue=False,
    )  # fmt: skip
    job = imports.run_import(job_id=job.pk)
    stdout.write(f"Demo {kind}: {job.message}")


def seed(
    *, rng: random.Random, entities: dict[str, Any], admin: Any, stdout: Any, audience_size: int
) -> None:
    stores = [(code, e) for code, e in entities.items() if e.kind == "local"]
    _load(
        "stores",
        _csv(["code", "name", "city", "entity"],
             [[f"ST-{code}", f"{e.name}", e.name.split()[0], code] for code, e in stores]),
        stdout,
    )  # fmt: skip
    today = date.today()
    contacts, bookings, subscriptions = [], [], []
    number = 0
    for code, _entity in stores:
        for _ in range(audience_size):
            number += 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            external = f"C{number:06d}"
            contacts.append([
                external, first, last, f"{first}.{last}.{number}@demo.example".lower(),
                f"+3361{number:07d}", rng.choice(["en", "fr", "es"]),
                (today - timedelta(days=rng.randint(18 * 365, 80 * 365))).isoformat(), code,
                int(rng.random() < 0.8), int(rng.random() < 0.5), int(rng.random() < 0.02),
            ])  # fmt: skip
            for index in range(rng.choice([0, 1, 1, 2, 3])):
                bookings.append([
                    f"B{number:06d}-{index}", external, f"ST-{code}", rng.choice(PRODUCTS),
                    rng.choice(DESTINATIONS),
                    (today - timedelta(days=rng.randint(0, 720))).isoformat(),
                    f"{rng.randint(150, 4000)}.00", rng.choice(["confirmed", "completed",
                                                                "completed", "cancelled"]),
                ])  # fmt: skip
            if rng.random() < 0.3:
                subscriptions.append([external, "Travel club",
                                      (today - timedelta(days=rng.randint(0, 900))).isoformat(),
                                      "", "active"])  # fmt: skip
    _load(
        "contacts",
        _csv(["external_id", "first_name", "last_name", "email", "phone", "language",
              "birth_date", "entity", "email_consent", "sms_consent", "blocklisted"], contacts),
        stdout,
    )  # fmt: skip
    _load(
        "bookings",
        _csv(["reference", "contact", "store", "product", "destination", "booking_date",
              "amount", "status"], bookings),
        stdout,
    )  # fmt: skip
    if not imports.Subscription.objects.exists():
        _load(
            "subscriptions",
            _csv(["contact", "product", "start_date", "end_date", "status"], subscriptions),
            stdout,
        )
    # The bulk of the demo audience comes from the synthetic generator (bulk inserts).
    if not imports.Contact.objects.filter(external_id__startswith="DEMO-").exists():
        made = synthetic.generate(
            contacts=audience_size * 9 * len(stores),
            entities=[entity for _code, entity in stores],
            seed=rng.randint(1, 10**6),
            prefix="DEMO",
        )
        stdout.write(
            f"Demo synthetic audience: {made.contacts} contacts, {made.bookings} bookings, "
            f"{made.subscriptions} subscriptions."
        )
    seed_workflow(entities=entities)
    marketer = get_user_model().objects.filter(username="marketer").first()
    for name, dimension, conditions in [
        ("Opted-in travellers of the last year", "contact", {"and": [
            {"field": "email_consent", "op": "eq", "value": True},
            {"relation": "bookings", "op": "exists",
             "where": {"field": "booking_date", "op": "in_last_days", "value": 365}}]}),
        ("Frequent travellers (3+ trips)", "contact",
         {"relation": "bookings", "op": "count_gte", "value": 3}),
        ("Ski bookings", "booking", {"field": "product", "op": "eq", "value": "Ski week"}),
    ]:  # fmt: skip
        SavedQuery.objects.get_or_create(
            name=name,
            defaults={"entity": entities["HQ"], "dimension": dimension,
                      "conditions": conditions, "created_by": marketer},
        )  # fmt: skip


def seed_workflow(*, entities: dict[str, Any]) -> None:
    """A multi-step parent campaign: query → split by language → distribution → end."""
    from campaigns.models import Activity, Campaign, Transition

    campaign, created = Campaign.objects.get_or_create(
        name="Autumn reactivation (multi-step)",
        kind="parent",
        defaults={"entity": entities["HQ"], "description": "Demo workflow."},
    )
    if not created or campaign.activities.exists():
        return
    target = Activity.objects.create(
        campaign=campaign, key="target", type="query", label="Opted-in travellers",
        settings={"conditions": {"and": [
            {"field": "email_consent", "op": "eq", "value": True},
            {"field": "blocklisted", "op": "eq", "value": False}]}},
    )  # fmt: skip
    split = Activity.objects.create(
        campaign=campaign, key="split", type="split", label="By language",
        settings={"branches": [{"label": "french", "conditions": {
            "field": "language", "op": "eq", "value": "fr"}}], "remainder": "others"},
    )  # fmt: skip
    dedup = Activity.objects.create(
        campaign=campaign, key="dedup", type="deduplication", label="One per contact"
    )
    share = Activity.objects.create(
        campaign=campaign, key="share", type="distribution", label="At most 40 per store",
        settings={"default_limit": 40, "order": ["-contact__created_at"]},
    )  # fmt: skip
    end = Activity.objects.create(campaign=campaign, key="end", type="end", label="Done")
    for source, target_activity, label in [
        (target, split, "out"), (split, dedup, "french"), (split, end, "others"),
        (dedup, share, "out"), (share, end, "out"),
    ]:  # fmt: skip
        Transition.objects.create(
            campaign=campaign, source=source, target=target_activity, label=label
        )
