"""Demo audience: stores, contacts, bookings and subscriptions, loaded through the real import
service (so the demo exercises the same path as a user's CSV), plus saved queries."""

from __future__ import annotations

import csv
import io
import random
from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

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
    seed_target_approval(entities=entities)
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


def workflow(campaign: Any, steps: list[tuple], arrows: list[tuple]) -> dict[str, Any]:
    """Activities (key, type, label, settings[, local_edit]) and arrows (source, target,
    output label) of a demo workflow. Each step's settings pass its type's form (a delivery's
    content included), as the canvas and the admin check them: a bad one is refused, naming
    the step and the setting, and nothing is written."""
    from campaigns.models import Activity, Transition
    from campaigns.workflow.forms import settings_problems

    problems = {
        key: found
        for key, kind, _label, settings, *_ in steps
        if (found := settings_problems(kind, settings, campaign=campaign))
    }
    if problems:
        raise ValidationError(problems)
    made = {}
    for index, (key, kind, label, settings, *local_edit) in enumerate(steps):
        made[key] = Activity.objects.create(
            campaign=campaign, key=key, type=kind, label=label, settings=settings,
            position_y=index, local_edit=bool(local_edit and local_edit[0]),
        )  # fmt: skip
    for source, target, label in arrows:
        Transition.objects.create(
            campaign=campaign, source=made[source], target=made[target], label=label
        )
    return made


AUTUMN = {
    "subject": "{{ contact.first_name }}, autumn is for travelling",
    "html_body": "<p>Hello {{ contact.first_name }},</p><p>Our autumn trips are open.</p>",
    "text_body": "Hello {{ contact.first_name }}, our autumn trips are open.",
}
OPTED_IN = {"and": [{"field": "email_consent", "op": "eq", "value": True},
                    {"field": "blocklisted", "op": "eq", "value": False}]}  # fmt: skip


def seed_workflow(*, entities: dict[str, Any]) -> None:
    """A multi-step parent campaign: query → split by language → French: first wave, wait
    three days, second wave; others: at most 40 per store, one SMS."""
    from campaigns.models import Campaign

    campaign, created = Campaign.objects.get_or_create(
        name="Autumn reactivation (multi-step)",
        kind="parent",
        defaults={"entity": entities["HQ"], "description": "Demo workflow."},
    )
    if not created or campaign.activities.exists():
        return
    workflow(
        campaign,
        [
            ("target", "query", "Opted-in travellers", {"conditions": OPTED_IN}),
            ("split", "split", "By language", {"branches": [{"label": "french", "conditions": {
                "field": "language", "op": "eq", "value": "fr"}}], "remainder": "others"}),
            ("wave1", "delivery", "First wave (email)", {"channel": "email", **AUTUMN}),
            ("wait", "wait", "Three days later", {"days": 3}),
            ("wave2", "delivery", "Second wave (email reminder)",
             {"channel": "email", **AUTUMN, "subject": "Reminder: {{ contact.first_name }}, "
              "your autumn offer ends soon"}),
            ("share", "distribution", "At most 40 per store",
             {"default_limit": 40, "order": ["-contact__created_at"]}),
            ("sms", "delivery", "One SMS", {"channel": "sms", "text_body":
             "{{ entity.name }}: {{ contact.first_name }}, autumn offers are in store now."}),
            ("end", "end", "Done", {}),
        ],
        [("target", "split", "out"), ("split", "wave1", "french"), ("wave1", "wait", "out"),
         ("wait", "wave2", "out"), ("wave2", "end", "out"), ("split", "share", "others"),
         ("share", "sms", "out"), ("sms", "end", "out")],
    )  # fmt: skip


def seed_target_approval(*, entities: dict[str, Any]) -> None:
    """A by-target-approval campaign, started: each store has a pending list to review (the
    run continues when they have all answered, or at the deadline)."""
    from campaigns.models import Campaign
    from campaigns.workflow import engine
    from portal import services as portal_services

    campaign, created = Campaign.objects.get_or_create(
        name="Winter offers (approved by the stores)",
        kind="parent",
        defaults={
            "entity": entities["HQ"],
            "collaborative_type": "by_target_approval",
            "description": "Each store reviews its customers before the winter offer is sent.",
        },
    )
    if not created or campaign.runs.exists():
        return
    workflow(
        campaign,
        [
            ("target", "query", "Opted-in travellers of the last two years", {"conditions": {
                "and": [*OPTED_IN["and"], {"relation": "bookings", "op": "exists", "where": {
                    "field": "booking_date", "op": "in_last_days", "value": 730}}]}}),
            ("review", "local_approval", "Stores review their lists",
             {"default_limit": 30, "order": ["-contact__created_at"], "deadline_hours": 72,
              "on_deadline": "send_all"}),
            ("offer", "delivery", "Winter offer (email)", {"channel": "email",
             "subject": "{{ contact.first_name }}, winter offers from {{ entity.name }}",
             "html_body": "<p>Hello {{ contact.first_name }},</p><p>Your store has picked "
             "winter offers for you.</p>", "text_body": "Hello {{ contact.first_name }}, "
             "your store has picked winter offers for you."}),
            ("report", "local_approval", "Report to the stores", {"mode": "report"}),
            ("end", "end", "Done", {}),
        ],
        [("target", "review", "out"), ("review", "offer", "out"), ("offer", "report", "out"),
         ("report", "end", "out")],
    )  # fmt: skip
    marketer = get_user_model().objects.filter(username="marketer").first()
    portal_services.transition(obj=campaign, name="mark_ready", actor=marketer)
    # The worker runs it after the seed commits: the query, then one list per store.
    engine.start_run(campaign=campaign, actor=marketer)
