"""Page timings of the central workspace and the portal on the bench's audience.

    DATABASE_URL=postgres://… python -m bench.pages --repeat 5

Run after ``python -m bench.targeting`` (which generates the synthetic audience, 1M contacts
and ~3M bookings by default). Each page is requested in-process through Django's test client
by a central superuser or by the operator of the largest store, as a logged-in browser would:
the figure is the server's time (queries, template), without the network. Prints p50 and p95
of N loads per page and exits 1 when a p95 exceeds ``--threshold`` seconds (default 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from campaigns.models import Booking, Contact  # noqa: E402
from portal import services  # noqa: E402
from portal.choices import Role  # noqa: E402
from portal.models import Entity  # noqa: E402

PREFIX = "BENCH"


def users() -> tuple[object, object, Entity]:
    """A central superuser and the operator of the store with the most contacts."""
    model = get_user_model()
    central, _ = model.objects.get_or_create(
        username="bench-central", defaults={"is_staff": True, "is_superuser": True}
    )
    biggest = (
        Entity.objects.filter(kind="local")
        .annotate(n=Count("contacts"))
        .order_by("-n", "pk")
        .first()
    )
    store, made = model.objects.get_or_create(username="bench-store")
    if made:
        services.add_membership(user=store, entity=biggest, role=Role.LOCAL_OPERATOR)
    return central, store, biggest


def pages(entity: Entity) -> list[tuple[str, str, str]]:
    """(who, name, url): the lists that were slow at 1M contacts, and their neighbours."""
    contact = Contact.objects.filter(entity=entity, external_id__startswith=f"{PREFIX}-").first()
    booking = Booking.objects.filter(contact=contact).first() if contact else None
    key = contact.external_id if contact else "none"
    reference = booking.reference if booking else "none"
    audience = reverse("campaigns:audience")
    return [
        ("central", "admin contacts", "/admin/campaigns/contact/"),
        ("central", "admin contact search (id)", f"/admin/campaigns/contact/?q={key}"),
        ("central", "admin contact search (name part)", "/admin/campaigns/contact/?q=ast10"),
        ("central", "admin contacts, language filter", "/admin/campaigns/contact/?language=fr"),
        ("central", "admin contacts, sorted by name", "/admin/campaigns/contact/?o=3"),
        ("central", "admin bookings", "/admin/campaigns/booking/"),
        ("central", "admin booking search (reference)", f"/admin/campaigns/booking/?q={reference}"),
        ("central", "admin booking search (customer id)", f"/admin/campaigns/booking/?q={key}"),
        ("central", "admin bookings, year filter", "/admin/campaigns/booking/?year=2025"),
        ("central", "admin bookings, sorted by date", "/admin/campaigns/booking/?o=-5"),
        ("central", "admin bookings, deep page", "/admin/campaigns/booking/?p=15000"),
        ("central", "admin subscriptions", "/admin/campaigns/subscription/"),
        ("central", "admin messages", "/admin/campaigns/message/"),
        ("central", "admin message search (customer id)", f"/admin/campaigns/message/?q={key}"),
        ("central", "portal audience", audience),
        ("store", "portal audience", audience),
        ("store", "portal audience search", f"{audience}?q=Last10"),
        ("store", "portal dashboard", reverse("portal:dashboard")),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=1.0, help="p95 limit, seconds")
    args = parser.parse_args()
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    central, store, entity = users()
    contacts = Contact.objects.filter(entity=entity).count()
    print(f"Database: {connection.vendor}; store {entity.code}: {contacts} contacts")
    clients = {"central": Client(), "store": Client()}
    clients["central"].force_login(central)
    clients["store"].force_login(store)
    slow = []
    print(f"{'who':8} {'page':40} {'status':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for who, name, url in pages(entity):
        samples, status = [], 0
        for _ in range(args.repeat + 1):  # the first load warms caches and is not counted
            started = time.perf_counter()
            status = clients[who].get(url).status_code
            samples.append(time.perf_counter() - started)
        samples = samples[1:]
        p50 = statistics.median(samples)
        p95 = sorted(samples)[max(0, round(0.95 * len(samples)) - 1)]
        print(f"{who:8} {name:40} {status:>6} {p50 * 1000:8.0f} {p95 * 1000:8.0f}")
        if status != 200 or p95 > args.threshold:
            slow.append(f"{who} {name}")
    if slow:
        print("Over the limit or not 200:", ", ".join(slow))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
