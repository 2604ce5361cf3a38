"""Celery tasks of the campaigns app."""

import contextlib
import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connections

from campaigns import imports, targeting

logger = logging.getLogger(__name__)
DATABASE_RETRIES = 30  # about 25 minutes of backoff (1, 2, 4 … 60 s)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def run_import_job(job_id: int) -> str:
    """Read, check and write an import file (idempotent: a finished job is left alone; a job
    whose worker stopped is done again: its transaction wrote nothing)."""
    try:
        return imports.run_import(job_id=job_id).state
    except SoftTimeLimitExceeded:
        return imports.interrupted(job_id=job_id)


@shared_task(acks_late=True, ignore_result=True)
def recover_lost_imports() -> int:
    """Every IMPORT_RECOVERY_SECONDS, on the control queue: running imports whose worker's
    lease expired fail as "worker lost" (nothing of theirs was committed)."""
    return imports.recover_lost()


@shared_task(acks_late=True, ignore_result=True)
def purge_work_tables() -> int:
    """Daily retention of work tables."""
    return targeting.purge_work_tables()


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def execute_activity(execution_id: int) -> str:
    """Run one workflow activity; a second delivery finds it claimed and does nothing."""
    from campaigns.workflow import engine

    return engine.run_activity(execution_id=execution_id)


@shared_task(acks_late=True, ignore_result=True)
def wake_waiting_activities() -> int:
    """Every minute: wait and scheduler activities whose time has come continue."""
    from campaigns.workflow import engine

    return engine.wake_due()


@shared_task(acks_late=True, ignore_result=True)
def start_scheduled_campaigns() -> int:
    """Every minute: child campaigns whose scheduled start has come start (each claimed once,
    so a repeated or concurrent task starts nothing twice)."""
    from campaigns import services

    return services.start_scheduled_campaigns()


@shared_task(acks_late=True, ignore_result=True)
def execute_scheduled_runs() -> int:
    """Every minute: the scheduled runs of simple and by-form orders whose time has come
    start their campaign (each claimed once, so a repeated or concurrent task starts
    nothing twice)."""
    from campaigns import services

    return services.execute_scheduled_runs()


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=1800, time_limit=1900)
def prepare_chunk(chunk_id: int) -> int:
    """Turn one chunk of a delivery's target into messages; safe to run twice."""
    from campaigns.delivery import preparation

    return preparation.run_chunk(chunk_id)


@shared_task(
    bind=True, acks_late=True, ignore_result=True, soft_time_limit=1800, time_limit=1900,
    max_retries=DATABASE_RETRIES,
)  # fmt: skip
def send_chunk(
    self: Task, delivery_id: int, first_id: int, last_id: int, resume: dict | None = None
) -> dict:
    """Send one chunk of a delivery; safe to run twice or after a killed worker. A database
    outage is temporary: the task retries with backoff (resuming its claim), like a temporary
    provider error; beat's recovery covers what is left if the retries run out."""
    from campaigns.delivery import sending

    try:
        result = sending.send_chunk(delivery_id, first_id, last_id, resume=resume)
    except (sending.Interrupted, *sending.DATABASE_ERRORS) as exc:
        _close_connections()
        resume = exc.resume if isinstance(exc, sending.Interrupted) else resume
        countdown = min(2**self.request.retries, 60)
        logger.warning("Chunk %s-%s of delivery %s: database error (%s); retry in %s s",
                       first_id, last_id, delivery_id, exc, countdown)  # fmt: skip
        raise self.retry(
            args=(delivery_id, first_id, last_id), kwargs={"resume": resume}, countdown=countdown
        ) from exc
    if result["retry_in"] is not None:
        send_chunk.apply_async((delivery_id, first_id, last_id), countdown=result["retry_in"])
    return result


@shared_task(
    bind=True, acks_late=True, ignore_result=True, max_retries=DATABASE_RETRIES,
)  # fmt: skip
def send_triggered(
    self: Task,
    delivery_id: int,
    message_id: int,
    resume: dict | None = None,
    last_id: int | None = None,
) -> dict:
    """Send one API-triggered message (or, recovered or sent again, its delivery's messages
    ``message_id``..``last_id``), on the ``priority`` queue (CELERY_TASK_ROUTES), through the
    chunk sender (claim, in-flight mark, provider); retried as a chunk, on the same queue."""
    from campaigns.delivery import sending

    last_id = message_id if last_id is None else last_id
    try:
        result = sending.send_chunk(delivery_id, message_id, last_id, resume=resume)
    except (sending.Interrupted, *sending.DATABASE_ERRORS) as exc:
        _close_connections()
        resume = exc.resume if isinstance(exc, sending.Interrupted) else resume
        countdown = min(2**self.request.retries, 60)
        raise self.retry(
            args=(delivery_id, message_id),
            kwargs={"resume": resume, "last_id": last_id},
            countdown=countdown,
        ) from exc
    if result["retry_in"] is not None:
        send_triggered.apply_async(
            (delivery_id, message_id), {"last_id": last_id}, countdown=result["retry_in"]
        )
    return result


def _close_connections() -> None:
    """Drop the broken database connections; the retry opens fresh ones."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:  # (a test's transaction is left alone)
            with contextlib.suppress(Exception):
                conn.close_if_unusable_or_obsolete()


@shared_task(acks_late=True, ignore_result=True)
def export_direct_mail(delivery_id: int) -> str:
    from campaigns.delivery import sending

    return sending.export_direct_mail(delivery_id)


@shared_task(acks_late=True, ignore_result=True)
def send_proofs(proof_ids: list[int]) -> int:
    from campaigns.delivery import sending

    return sending.send_proofs(proof_ids)


@shared_task(acks_late=True, ignore_result=True)
def recover_stalled_sends() -> int:
    """Every DELIVERY_RECOVERY_SECONDS, on the control queue (never behind chunk tasks):
    claims of dead workers are taken over, lost or overdue chunks enqueued again, and lost
    preparation chunks too."""
    from campaigns.delivery import preparation, sending

    return sending.recover_stalled() + preparation.recover_stalled()


@shared_task(acks_late=True, ignore_result=True)
def start_scheduled_deliveries() -> int:
    """Every minute: ready deliveries whose moment has come start sending."""
    from campaigns.delivery import sending

    return sending.start_scheduled()


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=600, time_limit=660)
def poll_bounce_mailbox() -> dict[str, int]:
    """Read the bounce mailbox (DELIVERY_BOUNCE_IMAP_URL; off when unset): record the
    bounces and complaints of its delivery status notifications (idempotent per report)."""
    from campaigns.engagement import dsn

    return dsn.poll_mailbox()
