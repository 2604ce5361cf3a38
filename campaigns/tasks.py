"""Celery tasks of the campaigns app."""

from celery import shared_task

from campaigns import imports, targeting


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def run_import_job(job_id: int) -> str:
    """Check and write an import file (idempotent: only a queued job runs)."""
    return imports.run_import(job_id=job_id).state


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
