"""Celery tasks of the campaigns app."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from campaigns import imports, targeting


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def run_import_job(job_id: int) -> str:
    """Read, check and write an import file (idempotent: a finished job is left alone; a job
    whose worker stopped resumes at its checkpoint)."""
    try:
        return imports.run_import(job_id=job_id).state
    except SoftTimeLimitExceeded:
        return imports.interrupted(job_id=job_id)


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


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=1800, time_limit=1900)
def prepare_chunk(chunk_id: int) -> int:
    """Turn one chunk of a delivery's target into messages; safe to run twice."""
    from campaigns.delivery import preparation

    return preparation.run_chunk(chunk_id)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=1800, time_limit=1900)
def send_chunk(delivery_id: int, first_id: int, last_id: int) -> dict:
    """Send one chunk of a delivery; safe to run twice or after a killed worker."""
    from campaigns.delivery import sending

    result = sending.send_chunk(delivery_id, first_id, last_id)
    if result["retry_in"] is not None:
        send_chunk.apply_async((delivery_id, first_id, last_id), countdown=result["retry_in"])
    return result


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
    """Every minute: chunks claimed by a worker that died are sent again (once), and lost
    preparation chunks are enqueued again."""
    from campaigns.delivery import preparation, sending

    return sending.recover_stalled() + preparation.recover_stalled()


@shared_task(acks_late=True, ignore_result=True)
def start_scheduled_deliveries() -> int:
    """Every minute: ready deliveries whose moment has come start sending."""
    from campaigns.delivery import sending

    return sending.start_scheduled()
