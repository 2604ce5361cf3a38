"""A real Celery worker killed (SIGKILL) in the middle of an import's write, on a real broker:
nothing of the file is in the database, no staging table is left, beat's recovery fails the
job as "worker lost" once its lease expires, and a task delivered again leaves it so.

The kill happens at a precise point through IMPORT_TEST_FAULT=after_apply: the worker kills
itself once every row was written, before its transaction commits."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from campaigns import imports, staging
from campaigns.models import Contact, ImportJob
from campaigns.tasks import run_import_job
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROWS = 20_000
KNOWN = 500  # contacts the file updates
LEASE = 3
HEADER = "external_id,first_name,last_name,email,entity,email_consent,birth_date\n"


def big_file() -> bytes:
    lines = (f"K{n},New{n},L,k{n}@example.com,STORE_A,1,1990-01-02\n" for n in range(ROWS))
    return (HEADER + "".join(lines)).encode()


def state(job: ImportJob) -> str:
    return ImportJob.objects.get(pk=job.pk).state


def test_a_worker_killed_mid_apply_leaves_no_partial_import(org, settings, start_worker):
    settings.IMPORT_LEASE_SECONDS = LEASE  # this process runs beat's recovery
    Contact.objects.bulk_create(
        [Contact(external_id=f"K{n}", first_name="Old", entity=org.store_a) for n in range(KNOWN)]
    )
    env = {
        "IMPORT_LEASE_SECONDS": str(LEASE),
        "IMPORT_HEARTBEAT_SECONDS": "1",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    worker = start_worker(IMPORT_TEST_FAULT="after_apply", **env)
    with transaction.atomic():  # the task is sent on commit
        job = imports.create_job(
            kind="contacts", filename="big.csv", content=big_file(), actor=None, dry_run=False
        )
    assert worker.process.wait(180) == -9, "".join(worker.lines)  # it killed itself mid-write
    killed = time.monotonic()

    # Nothing of the file: the known contacts unchanged, no new one.
    assert Contact.objects.count() == KNOWN
    assert set(Contact.objects.values_list("first_name", flat=True)) == {"Old"}
    # No staging table left (PostgreSQL: no session's; the dead one's went with it).
    assert wait_for(lambda: staging.staging_tables() == [], 30)
    dead = ImportJob.objects.get(pk=job.pk)
    assert dead.state == "running" and dead.processed_rows == ROWS and dead.written_rows == 0

    # Beat's recovery fails it once its lease expired.
    assert wait_for(lambda: imports.recover_lost() == 1, 30)
    assert time.monotonic() - killed < LEASE + 15
    lost = ImportJob.objects.get(pk=job.pk)
    assert lost.state == "failed" and lost.message.startswith("Failed (worker lost)")

    # A restarted worker given the task again (a redelivery) leaves the job and the data alone.
    second = start_worker(**env)
    run_import_job.delay(job.pk)
    assert wait_for(lambda: any("succeeded" in line for line in second.lines), 60)
    assert state(job) == "failed"
    assert Contact.objects.count() == KNOWN
    assert staging.staging_tables() == []


def test_a_restarted_worker_imports_the_whole_file(org, settings, start_worker):
    """The same file run again after the loss: every row, once."""
    Contact.objects.bulk_create(
        [Contact(external_id=f"K{n}", first_name="Old", entity=org.store_a) for n in range(KNOWN)]
    )
    start_worker(MEDIA_ROOT=str(settings.MEDIA_ROOT))
    with transaction.atomic():
        job = imports.create_job(
            kind="contacts", filename="big.csv", content=big_file(), actor=None, dry_run=False
        )
    assert wait_for(lambda: state(job) == "done", 180)
    done = ImportJob.objects.get(pk=job.pk)
    assert (done.new_rows, done.updated_rows, done.written_rows) == (ROWS - KNOWN, KNOWN, ROWS)
    assert Contact.objects.count() == ROWS
    assert not Contact.objects.filter(first_name="Old").exists()
    assert staging.staging_tables() == []


def test_a_frozen_worker_s_session_is_ended_by_the_recovery(org, settings, start_worker):
    """PostgreSQL: a worker frozen mid-write (SIGSTOP) keeps its session, its uncommitted rows,
    its staging table and the kind's lock; the recovery ends that session, so the rows and the
    table go, and the next import of the kind is not blocked."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("sessions are ended on PostgreSQL only (SQLite has no server session)")
    settings.IMPORT_LEASE_SECONDS = LEASE
    env = {"IMPORT_LEASE_SECONDS": str(LEASE), "IMPORT_HEARTBEAT_SECONDS": "1",
           "MEDIA_ROOT": str(settings.MEDIA_ROOT)}  # fmt: skip
    worker = start_worker(IMPORT_TEST_FAULT="freeze_after_apply", **env)
    with transaction.atomic():
        job = imports.create_job(
            kind="contacts", filename="big.csv", content=big_file(), actor=None, dry_run=False
        )
    try:
        assert wait_for(lambda: staging.staging_tables() != [], 120)
        assert wait_for(lambda: imports.recover_lost() == 1, 120), "".join(worker.lines)
        assert state(job) == "failed"
        assert wait_for(lambda: staging.staging_tables() == [], 30)
        assert Contact.objects.count() == 0
        with transaction.atomic():  # the kind's lock was released with the session
            staging.lock("contacts")
    finally:
        worker.process.kill()
        worker.process.wait(20)
