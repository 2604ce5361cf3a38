"""Evaluate before ordering: what a local operator waits for after pressing Evaluate.

    DATABASE_URL=postgres://… python -m bench.evaluate --contacts 1000000 --repeat 5

Uses the synthetic audience of ``bench.targeting`` (generated once, prefix BENCH), a
by-campaign reference campaign whose query (email consent) each store completes with a
product, a booking-date window and a minimum number of bookings, and times
``packages.services.evaluate_order`` for one store's operator (rights, the exact count and
the 20-row sample), against the same count in hand-written SQL. Median of N runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.targeting import ensure_audience, raw, timed  # noqa: E402
from campaigns import services as campaign_services  # noqa: E402
from campaigns.models import Activity, Campaign, Contact  # noqa: E402
from packages import services  # noqa: E402
from packages.models import Package  # noqa: E402
from portal.choices import Role  # noqa: E402
from portal.models import Entity, Membership  # noqa: E402

LABEL = "BENCH evaluate"


def setup() -> tuple[Package, Entity, object]:
    from django.contrib.auth import get_user_model

    hq = Entity.objects.get(kind="central")
    marketer = Membership.objects.filter(role=Role.CENTRAL_MARKETER).first().user
    # The store with the most contacts: the slowest answer an operator can get.
    store = Entity.objects.get(
        pk=Contact.objects.filter(external_id__startswith="BENCH-")
        .values("entity")
        .order_by()
        .annotate(n=django.db.models.Count("pk"))
        .order_by("-n")
        .values_list("entity", flat=True)
        .first()
    )
    operator, _ = get_user_model().objects.get_or_create(username="bench-evaluate-operator")
    Membership.objects.get_or_create(user=operator, entity=store, role=Role.LOCAL_OPERATOR)
    campaign = Campaign.objects.filter(name=LABEL).first()
    if campaign is None:
        campaign = Campaign.objects.create(
            name=LABEL, entity=hq, kind="reference", collaborative_type="by_campaign"
        )
        Activity.objects.create(
            campaign=campaign,
            key="target",
            type="query",
            settings={"conditions": {"field": "email_consent", "op": "eq", "value": True}},
        )
        campaign_services.set_local_conditions(
            campaign=campaign,
            actor=marketer,
            parameters=[
                {"name": "product", "label": "Product", "field": "bookings.product",
                 "kind": "choice", "choices": ["Cruise", "Ski week", "Beach stay"]},
                {"name": "window", "label": "Booking dates", "field": "bookings.booking_date",
                 "kind": "date_window"},
                {"name": "minimum", "label": "Minimum bookings", "field": "bookings",
                 "kind": "integer_min", "min": 1, "max": 10},
            ],
        )  # fmt: skip
        campaign.refresh_from_db()
    package = Package.objects.filter(reference_campaign=campaign).first()
    if package is None:
        now = timezone.now()
        package = Package.objects.create(
            label=LABEL,
            reference_campaign=campaign,
            visible_from=now - timedelta(days=1),
            visible_until=now + timedelta(days=30),
            registration_deadline=now + timedelta(days=10),
        )
    package.audience.add(store)
    package = Package.objects.select_related("reference_campaign").get(pk=package.pk)
    return package, store, get_user_model().objects.get(pk=operator.pk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ensure_audience(args.contacts, args.entities)
    package, store, operator = setup()
    today = date.today()
    values = {
        "product": "Cruise",
        "window": [(today - timedelta(days=730)).isoformat(), today.isoformat()],
        "minimum": 2,
    }
    store_contacts = Contact.objects.filter(entity=store).count()

    def product() -> int:
        return services.evaluate_order(
            package=package, entity=store, actor=operator, local_values=values
        ).contacts

    def estimate() -> int:
        return services.evaluate_order(
            package=package, entity=store, actor=operator, validate=False
        ).contacts

    q = connection.ops.quote_name

    def hand_written() -> int:
        return raw(
            f"SELECT COUNT(*) FROM {q('campaigns_contact')} c WHERE c.email_consent AND "
            f"c.entity_id = %s AND (SELECT COUNT(*) FROM {q('campaigns_booking')} b "
            "WHERE b.contact_id = c.id AND b.product = %s AND b.booking_date BETWEEN %s AND %s"
            ") >= %s",
            [store.pk, "Cruise", values["window"][0], values["window"][1], 2],
        )

    product_ms, counted = timed(product, args.repeat)
    estimate_ms, everyone = timed(estimate, args.repeat)
    raw_ms, expected = timed(hand_written, args.repeat)
    if counted != expected:
        print(f"MISMATCH: evaluate counted {counted}, SQL {expected}")
        return 1
    vendor = connection.vendor
    print(f"{vendor}, {Contact.objects.count()} contacts; store {store.code}: {store_contacts}")
    print(f"evaluate with local values (count + 20-row sample): {product_ms:.1f} ms -> {counted}")
    print(f"estimate without values (count + sample):         {estimate_ms:.1f} ms -> {everyone}")
    print(f"the same count in hand-written SQL:                {raw_ms:.1f} ms -> {expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
