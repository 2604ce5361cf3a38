"""Finding 3: every import kind stays within the importing entity, for the row found under the
key as for the row the file makes, and its answers tell nothing about other entities' rows."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from campaigns import imports
from campaigns.models import Booking, Contact, Store, Subscription


def run(content: str, *, kind: str, org, dry_run: bool = False, valid_rows: bool = True):
    """operator_a imports for STORE_A."""
    job = imports.create_job(
        kind=kind,
        filename="upload.csv",
        content=content.encode(),
        actor=org.operator_a,
        entity=org.store_a,
        dry_run=dry_run,
        import_valid_rows=valid_rows,
        enqueue=False,
    )
    return imports.run_import(job_id=job.pk)


def report(job) -> list[list[str]]:
    if not job.error_report:
        return []
    with job.error_report.open("rb") as handle:
        return list(csv.reader(io.StringIO(handle.read().decode())))[1:]


def answer(job, value: str) -> tuple:
    """Everything the importer is told, with the probed value blanked out."""
    return (
        job.state,
        job.new_rows,
        job.updated_rows,
        job.skipped_rows,
        job.error_rows,
        job.message.replace(value, "?"),
        [[cell.replace(value, "?") for cell in row] for row in report(job)],
    )


@pytest.fixture
def world(org):
    """Store B's store, contact, booking and subscription, and Store A's own contact."""
    theirs = Contact.objects.create(external_id="THEIRS", first_name="Bea", entity=org.store_b)
    store_b = Store.objects.create(code="ST-B", name="B shop", city="Nice", entity=org.store_b)
    booking = Booking.objects.create(
        reference="BK-B",
        contact=theirs,
        store=store_b,
        product="Cruise",
        booking_date=date(2026, 1, 5),
        status="confirmed",
    )
    subscription = Subscription.objects.create(
        contact=theirs, product="News", start_date=date(2026, 1, 1), status="active"
    )
    mine = Contact.objects.create(external_id="MINE", first_name="Ann", entity=org.store_a)
    store_a = Store.objects.create(code="ST-A", name="A shop", city="Lille", entity=org.store_a)
    return type("World", (), locals())


@pytest.mark.parametrize(
    "content",
    [
        "code,name,city\nST-B,Mine now,Lille\n",  # the entity column left out: the operator's
        "code,name,city,entity\nST-B,Mine now,Lille,STORE_A\n",
        "code,name,city,entity\nST-B,Mine now,Lille,STORE_B\n",
    ],
)
def test_a_store_import_cannot_rename_or_take_another_entitys_store(org, world, content):
    job = run(content, kind="stores", org=org)
    store = Store.objects.get(code="ST-B")
    assert (store.name, store.city, store.entity) == ("B shop", "Nice", org.store_b)
    assert (job.updated_rows, job.error_rows) == (0, 1)
    assert report(job)[0][2] in (
        "“ST-B” is not found among your stores.",
        "“STORE_B” is not found among your entities.",
    )


def test_a_booking_import_cannot_move_or_overwrite_another_entitys_booking(org, world):
    job = run(
        "reference,contact,store,product,booking_date,amount,status\n"
        "BK-B,MINE,ST-A,Ski week,2026-02-01,1,cancelled\n",
        kind="bookings",
        org=org,
    )
    booking = Booking.objects.get(reference="BK-B")
    assert (booking.contact, booking.store, booking.product, booking.status) == (
        world.theirs,
        world.store_b,
        "Cruise",
        "confirmed",
    )
    assert (job.updated_rows, job.error_rows) == (0, 1)
    assert report(job) == [["2", "reference", "“BK-B” is not found among your bookings."]]


def test_a_booking_cannot_be_attached_to_another_entitys_contact_or_store(org, world):
    job = run(
        "reference,contact,store,product,booking_date,status\n"
        "NEW-1,THEIRS,ST-A,Ski week,2026-02-01,confirmed\n"
        "NEW-2,MINE,ST-B,Ski week,2026-02-01,confirmed\n"
        "NEW-3,MINE,ST-A,Ski week,2026-02-01,confirmed\n",
        kind="bookings",
        org=org,
    )
    assert list(Booking.objects.filter(reference__startswith="NEW").values_list("reference")) == [
        ("NEW-3",)
    ]
    assert report(job) == [
        ["2", "contact", "“THEIRS” is not found among your contacts."],
        ["3", "store", "“ST-B” is not found among your stores."],
    ]


def test_an_import_for_the_entity_still_updates_its_own_rows(org, world):
    Booking.objects.create(
        reference="BK-A", contact=world.mine, product="Cruise", booking_date=date(2026, 1, 5)
    )
    job = run(
        "reference,contact,store,product,booking_date,status\n"
        "BK-A,MINE,ST-A,Ski week,2026-02-01,cancelled\n",
        kind="bookings",
        org=org,
        valid_rows=False,
    )
    booking = Booking.objects.get(reference="BK-A")
    assert (job.updated_rows, job.error_rows) == (1, 0)
    assert (booking.product, booking.store, booking.status) == (
        "Ski week",
        world.store_a,
        "cancelled",
    )


def test_a_subscription_import_cannot_touch_another_entitys_subscription(org, world):
    job = run(
        "contact,product,start_date,end_date,status\nTHEIRS,News,2026-01-01,2026-01-31,cancelled\n",
        kind="subscriptions",
        org=org,
    )
    world.subscription.refresh_from_db()
    assert (world.subscription.status, world.subscription.end_date) == ("active", None)
    assert report(job) == [["2", "contact", "“THEIRS” is not found among your contacts."]]


PROBES = [
    # (kind, file with {} for the probed value, another entity's value, a value that nowhere is)
    ("bookings", "reference,contact,product,booking_date\nN1,{},Ski,2026-02-01\n",
     "THEIRS", "NOBODY"),
    ("bookings", "reference,contact,store,product,booking_date\nN1,MINE,{},Ski,2026-02-01\n",
     "ST-B", "NO-STORE"),
    ("subscriptions", "contact,product,start_date\n{},News,2026-01-01\n", "THEIRS", "NOBODY"),
    ("contacts", "external_id,first_name,entity\nC1,Ann,{}\n", "STORE_B", "NOWHERE"),
    ("stores", "code,name,entity\nS1,Shop,{}\n", "STORE_B", "NOWHERE"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "template", "elsewhere", "nowhere"), PROBES)
def test_a_dry_run_answers_alike_for_another_entitys_key_and_an_unknown_one(
    org, world, kind, template, elsewhere, nowhere
):
    probe = run(template.format(elsewhere), kind=kind, org=org, dry_run=True)
    unknown = run(template.format(nowhere), kind=kind, org=org, dry_run=True)
    assert answer(probe, elsewhere) == answer(unknown, nowhere)
    assert probe.error_rows == 1 and probe.updated_rows == 0


@pytest.mark.parametrize(
    ("kind", "content", "key", "plural"),
    [
        ("stores", "code,name\nST-B,Shop\n", "ST-B", "stores"),
        ("bookings", "reference,contact,product,booking_date\nBK-B,MINE,Ski,2026-02-01\n", "BK-B",
         "bookings"),
        ("contacts", "external_id,first_name\nTHEIRS,Ann\n", "THEIRS", "contacts"),
    ],
)  # fmt: skip
def test_another_entitys_key_is_never_reported_as_theirs_nor_as_updated(
    org, world, kind, content, key, plural
):
    job = run(content, kind=kind, org=org, dry_run=True)
    assert (job.new_rows, job.updated_rows, job.skipped_rows, job.error_rows) == (0, 0, 0, 1)
    assert report(job)[0][2] == f"“{key}” is not found among your {plural}."
    assert "another entity" not in job.message + str(report(job))
