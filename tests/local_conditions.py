"""A reference campaign whose targeting query the ordering entities complete, with contacts
of two stores, shared by the packages, campaigns and browser tests of local conditions."""

from __future__ import annotations

from datetime import date

from campaigns import services as campaign_services
from campaigns.models import Activity, Booking, Contact, Transition

CONSENT = {"field": "email_consent", "op": "eq", "value": True}
SPEC = [
    {"name": "product", "label": "Product", "field": "bookings.product", "kind": "choice",
     "choices": ["Cruise", "Safari"]},
    {"name": "window", "label": "Booking dates", "field": "bookings.booking_date",
     "kind": "date_window", "min": "2026-01-01", "max": "2026-12-31"},
    {"name": "min_bookings", "label": "Minimum bookings", "field": "bookings",
     "kind": "integer_min", "min": 1, "max": 5},
    {"name": "language", "label": "Language", "field": "language", "kind": "choice",
     "choices": ["fr", "en"], "required": False},
]  # fmt: skip
JUNE = {"product": "Cruise", "window": ["2026-06-01", "2026-06-30"], "min_bookings": 1}


def reference_campaign(org, *, kind="by_campaign", spec=SPEC, name="Summer cruises"):
    """A reference campaign: query (email consent) → end, with the local conditions set."""
    from tests.factories import CampaignFactory

    campaign = CampaignFactory(name=name, collaborative_type=kind, entity=org.hq)
    target = Activity.objects.create(
        campaign=campaign, key="target", type="query", label="Opted-in travellers",
        settings={"dimension": "contact", "conditions": CONSENT},
    )  # fmt: skip
    end = Activity.objects.create(campaign=campaign, key="end", type="end", position_y=200)
    Transition.objects.create(campaign=campaign, source=target, target=end, label="out")
    if spec:
        campaign_services.set_local_conditions(
            campaign=campaign, parameters=spec, actor=org.marketer
        )
        campaign.refresh_from_db()
    return campaign


def travellers(org):
    """30 contacts of Store A and 10 of Store B. In Store A, contact i consents unless
    i = 29, speaks French when i is even, booked a cruise on 2026-06-10 when i % 3 == 0 (a
    second one on 2026-06-20 when i % 5 == 0 too) and a safari on 2026-03-05 when
    i % 3 == 1. Every Store B contact consents, speaks French and booked a June cruise."""
    contacts, bookings = [], []
    for i in range(30):
        contacts.append(Contact(
            external_id=f"A{i:02d}", first_name=f"Ann{i:02d}", last_name="Alpha",
            email=f"a{i}@example.com", entity=org.store_a, email_consent=i != 29,
            language="fr" if i % 2 == 0 else "en",
        ))  # fmt: skip
    for i in range(10):
        contacts.append(Contact(
            external_id=f"B{i:02d}", first_name=f"Bea{i:02d}", last_name="Beta",
            email=f"b{i}@example.com", entity=org.store_b, email_consent=True, language="fr",
        ))  # fmt: skip
    Contact.objects.bulk_create(contacts)
    by_id = {c.external_id: c for c in Contact.objects.all()}
    n = 0

    def book(contact, product, day):
        nonlocal n
        n += 1
        bookings.append(
            Booking(contact=contact, reference=f"BK{n}", product=product, booking_date=day)
        )

    for i in range(30):
        who = by_id[f"A{i:02d}"]
        if i % 3 == 0:
            book(who, "Cruise", date(2026, 6, 10))
            if i % 5 == 0:
                book(who, "Cruise", date(2026, 6, 20))
        elif i % 3 == 1:
            book(who, "Safari", date(2026, 3, 5))
    for i in range(10):
        book(by_id[f"B{i:02d}"], "Cruise", date(2026, 6, 12))
        book(by_id[f"B{i:02d}"], "Cruise", date(2026, 6, 15))
    Booking.objects.bulk_create(bookings)
    return by_id
