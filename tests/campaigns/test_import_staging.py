"""The set-based import write path: staging tables, one transaction, the kind's lock, and what
it writes (only the columns the file has; defaults for new rows; unchanged rows left alone)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from campaigns import imports, staging
from campaigns.models import Booking, Contact, ImportJob, Store, Subscription
from tests.integration.conftest import ROOT, _database_url, wait_for

HEADER = "external_id,first_name,last_name,email,entity,email_consent,birth_date\n"


def job_for(content: str, *, kind: str = "contacts", **kwargs) -> ImportJob:
    job = imports.create_job(
        kind=kind, filename="upload.csv", content=content.encode(), actor=None, enqueue=False,
        **{"dry_run": False, **kwargs},
    )  # fmt: skip
    return imports.run_import(job_id=job.pk)


def report(job: ImportJob) -> list[list[str]]:
    if not job.error_report:
        return []
    with job.error_report.open("rb") as handle:
        return list(csv.reader(io.StringIO(handle.read().decode())))[1:]


def test_an_unknown_reference_names_its_field_and_value(org):
    Contact.objects.create(external_id="C1", entity=org.store_a)
    job = job_for(
        "reference,contact,store,product,booking_date\n"
        "B1,C1,NO-SUCH-STORE,Ski,2026-01-02\n"
        "B2,NOBODY,,Ski,2026-01-02\n",
        kind="bookings",
    )
    assert report(job) == [
        ["2", "store", "“NO-SUCH-STORE” is not found among your stores."],
        ["3", "contact", "“NOBODY” is not found among your contacts."],
    ]
    assert not Booking.objects.exists()


def test_an_update_writes_only_the_columns_the_file_has(org):
    Contact.objects.create(
        external_id="C1", first_name="Ann", email="ann@example.com", entity=org.store_a,
        email_consent=True, language="fr",
    )  # fmt: skip
    job = job_for("external_id,last_name\nC1,Smith\n")
    ann = Contact.objects.get(external_id="C1")
    assert (job.updated_rows, ann.last_name, ann.first_name, ann.email) == (
        1, "Smith", "Ann", "ann@example.com",
    )  # fmt: skip
    assert (ann.email_consent, ann.language, ann.entity) == (True, "fr", org.store_a)


def test_new_rows_get_the_model_defaults_for_the_columns_left_out(org):
    job = job_for("reference,contact,product,booking_date\nB1,C1,Ski,2026-01-02\n", kind="bookings")
    assert job.error_rows == 1  # C1 does not exist yet
    Contact.objects.create(external_id="C1", entity=org.store_a)
    job = job_for("reference,contact,product,booking_date\nB1,C1,Ski,2026-01-02\n", kind="bookings")
    booking = Booking.objects.get()
    assert (job.new_rows, booking.status, booking.amount, booking.store) == (
        1, "confirmed", Decimal("0"), None,
    )  # fmt: skip


def test_unchanged_rows_are_reported_and_left_alone(org):
    content = HEADER + "C1,Ann,A,ann@example.com,STORE_A,1,1990-01-02\n"
    job_for(content)
    before = Contact.objects.get().updated_at
    job = job_for(content)
    assert (job.new_rows, job.updated_rows, job.skipped_rows) == (0, 0, 1)
    assert Contact.objects.get().updated_at == before


def test_a_new_row_missing_a_required_column_is_refused(org):
    job = job_for("external_id,first_name\nC1,Ann\n")  # a central file without entity
    assert report(job) == [["2", "entity", "This field cannot be null."]]
    assert not Contact.objects.exists()


def test_subscriptions_are_updated_under_their_three_column_key(org):
    ann = Contact.objects.create(external_id="C1", entity=org.store_a)
    Subscription.objects.create(contact=ann, product="News", start_date=date(2026, 1, 1))
    job = job_for(
        "contact,product,start_date,end_date,status\n"
        "C1,News,2026-01-01,2026-03-31,cancelled\n"
        "C1,News,2026-02-01,,active\n",
        kind="subscriptions",
    )
    assert (job.new_rows, job.updated_rows, job.error_rows) == (1, 1, 0)
    assert list(
        Subscription.objects.order_by("start_date").values_list("start_date", "status", "end_date")
    ) == [
        (date(2026, 1, 1), "cancelled", date(2026, 3, 31)),
        (date(2026, 2, 1), "active", None),
    ]


def test_bad_values_get_the_models_own_messages(org):
    Store.objects.create(code="ST1", name="Shop", entity=org.store_a)
    Contact.objects.create(external_id="C1", entity=org.store_a)
    job = job_for(
        "reference,contact,store,product,booking_date,amount,status\n"
        "B1,C1,ST1,Ski,2026-13-01,12.345,lost\n"
        "B2,C1,ST1,,2026-01-02,abc,confirmed\n",
        kind="bookings",
    )
    assert report(job) == [
        ["2", "amount", "Ensure that there are no more than 2 decimal places."],
        ["2", "booking_date", "Value could not be parsed using defined formats."],
        ["2", "status", "Value 'lost' is not a valid choice."],
        ["3", "amount", "Enter a number."],
        ["3", "product", "This field cannot be blank."],
    ]
    assert not Booking.objects.exists()


def test_staging_tables_are_dropped_after_success_and_after_failure(org):
    assert job_for(HEADER + "C1,Ann,A,,STORE_A,1,\n").state == "done"
    assert staging.staging_tables() == []
    assert job_for(HEADER + "C2,Bob,B,bad-email,STORE_A,1,\n").error_rows == 1
    assert staging.staging_tables() == []
    assert job_for(HEADER + "C3,Cid,C,,STORE_A,1,\nC3,Cid,C,,STORE_A,1,\n", dry_run=True)
    assert staging.staging_tables() == []
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["C1"]


# Real processes ---------------------------------------------------------------------------------

PAUSED_WORKER = textwrap.dedent(
    """
    import os, sys, time
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django
    django.setup()
    from pathlib import Path
    from campaigns import imports, staging
    real = staging.StagedImport.apply
    def apply(self):
        written = real(self)  # the rows are sent; the transaction is not committed
        Path(sys.argv[2]).write_text(str(written))
        time.sleep(float(sys.argv[3]))
        return written
    staging.StagedImport.apply = apply
    print(imports.run_import(job_id=int(sys.argv[1])).state, flush=True)
    """
)


def start_paused_worker(job: ImportJob, marker: Path, pause: float, settings) -> subprocess.Popen:
    import os

    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-c", PAUSED_WORKER, str(job.pk), str(marker), str(pause)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def contacts_file(count: int, name: str = "N") -> str:
    return HEADER + "".join(f"K{i},{name}{i},L,,STORE_A,1,\n" for i in range(count))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_commit_leaves_no_rows_and_no_staging_table(org, settings, tmp_path):
    job = imports.create_job(
        kind="contacts", filename="people.csv", content=contacts_file(300).encode(), actor=None,
        dry_run=False, enqueue=False,
    )  # fmt: skip
    marker = tmp_path / "written"
    worker = start_paused_worker(job, marker, 120, settings)
    try:
        assert wait_for(marker.exists, 60), worker.stdout.read() if worker.poll() else ""
        assert marker.read_text() == "300"  # every row was sent to the database
        if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
            assert staging.staging_tables()  # the worker's, seen from here
    finally:
        worker.kill()  # SIGKILL: no clean-up code runs
        worker.wait(20)
    assert Contact.objects.count() == 0
    assert wait_for(lambda: staging.staging_tables() == [], 30)
    job.refresh_from_db()
    assert (job.state, job.written_rows, job.checked_at) == ("running", 0, None)
    job = imports.run_import(job_id=job.pk)  # the task, delivered again
    assert (job.state, job.new_rows, job.written_rows) == ("done", 300, 300)
    assert Contact.objects.count() == 300


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_imports_of_the_same_kind_are_serialised(org, settings, tmp_path):
    first = imports.create_job(
        kind="contacts", filename="a.csv", content=contacts_file(200, "First").encode(),
        actor=None, dry_run=False, enqueue=False,
    )  # fmt: skip
    second = imports.create_job(
        kind="contacts", filename="b.csv", content=contacts_file(200, "Second").encode(),
        actor=None, dry_run=False, enqueue=False,
    )  # fmt: skip
    marker = tmp_path / "written"
    worker = start_paused_worker(first, marker, 3, settings)
    try:
        assert wait_for(marker.exists, 60)
        second = imports.run_import(job_id=second.pk)  # waits for the first to commit
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert output.strip().endswith("done"), output
    first.refresh_from_db()
    assert (first.new_rows, first.updated_rows) == (200, 0)
    assert (second.state, second.new_rows, second.updated_rows) == ("done", 0, 200)
    assert Contact.objects.count() == 200
    assert set(Contact.objects.values_list("first_name", flat=True)) == {
        f"Second{i}" for i in range(200)
    }


def test_a_null_character_is_refused_with_its_field(org):
    job = job_for(HEADER + "C1,A\x00nn,A,,STORE_A,1,\n")
    assert report(job) == [["2", "first_name", "Null characters are not allowed."]]
    assert not Contact.objects.exists()


def test_yes_no_cells_take_the_usual_words_and_refuse_the_others(org, admin_user):
    job = job_for(
        "external_id,entity,email_consent,sms_consent,blocklisted\n"
        "Y1,STORE_A,yes,Non,TRUE\n"
        "Y2,STORE_A,maybe,0,no\n"
    )
    assert report(job) == [
        ["3", "email_consent",
         "“maybe” is not a yes/no value: use 1/true/yes/y/oui for yes, 0/false/no/n/non for no "
         "(any case)."],
    ]  # fmt: skip
    assert not Contact.objects.exists()  # nothing is written while a row is wrong
    result = imports.import_rows(
        kind="contacts", actor=admin_user,
        rows=[{"external_id": "Y1", "entity": "STORE_A", "email_consent": "Yes",
               "sms_consent": "non", "blocklisted": 1}],
    )  # fmt: skip
    assert not result.get("errors"), result
    contact = Contact.objects.get(external_id="Y1")
    assert (contact.email_consent, contact.sms_consent, contact.blocklisted) == (True, False, True)
