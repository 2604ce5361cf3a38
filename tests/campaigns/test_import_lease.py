"""A running import's lease: beat's recovery fails a job whose worker stopped renewing it
("worker lost"), leaves a live one alone, and a task delivered after that does nothing."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from campaigns import imports
from campaigns.models import Contact, ImportJob
from portal.models import AuditLog

HEADER = "external_id,first_name,last_name,email,entity,email_consent,birth_date\n"
ONE_ROW = (HEADER + "K1,Ann,A,,STORE_A,1,\n").encode()


def running_job(*, beat_seconds_ago: float | None) -> ImportJob:
    job = imports.create_job(
        kind="contacts", filename="people.csv", content=ONE_ROW,
        actor=None, dry_run=False, enqueue=False,
    )  # fmt: skip
    beat = None
    if beat_seconds_ago is not None:
        beat = timezone.now() - timedelta(seconds=beat_seconds_ago)
    ImportJob.objects.filter(pk=job.pk).update(state="running", heartbeat_at=beat)
    return job


def test_it_fails_a_running_job_whose_lease_expired_as_worker_lost(org, settings):
    settings.IMPORT_LEASE_SECONDS = 60
    job = running_job(beat_seconds_ago=61)
    assert imports.recover_lost() == 1
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.message.startswith("Failed (worker lost)")
    assert job.finished_at is not None
    audit = AuditLog.objects.for_object(job).filter(to_state="failed").get()
    assert audit.extra["reason"] == "worker lost"


def test_it_leaves_a_job_with_a_fresh_lease_alone(org, settings):
    settings.IMPORT_LEASE_SECONDS = 60
    job = running_job(beat_seconds_ago=5)
    assert imports.recover_lost() == 0
    job.refresh_from_db()
    assert job.state == "running"


def test_it_fails_a_running_job_that_never_beat_once_it_is_older_than_the_lease(org, settings):
    settings.IMPORT_LEASE_SECONDS = 60
    job = running_job(beat_seconds_ago=None)
    assert imports.recover_lost() == 0  # just created: not yet
    ImportJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    assert imports.recover_lost() == 1


def test_a_task_delivered_after_the_job_was_lost_writes_nothing(org, settings):
    settings.IMPORT_LEASE_SECONDS = 60
    job = running_job(beat_seconds_ago=120)
    imports.recover_lost()
    job = imports.run_import(job_id=job.pk)
    assert job.state == "failed"
    assert not Contact.objects.exists()


def test_a_job_run_to_the_end_records_its_lease(org):
    job = imports.create_job(
        kind="contacts", filename="people.csv", content=ONE_ROW,
        actor=None, dry_run=False, enqueue=False,
    )  # fmt: skip
    started = timezone.now()
    job = imports.run_import(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == "done"
    assert job.heartbeat_at >= started
    assert imports.recover_lost() == 0  # a finished job is never "lost"
