"""Celery tasks of the portal: they take ids, reload rows and call services."""

from __future__ import annotations

from celery import shared_task

from portal import services


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def send_notification(self, notification_id: int) -> str:
    """Send one outbox row; a transport error schedules a retry with backoff."""
    outcome = services.deliver_notification(notification_id=notification_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(acks_late=True, ignore_result=True)
def resend_stuck_notifications() -> dict[str, int]:
    """Periodic: release abandoned sends and enqueue overdue pending notifications."""
    return services.resend_stuck_notifications()


@shared_task(acks_late=True, ignore_result=True)
def purge_old_notifications() -> int:
    """Daily: drop sent notifications past their retention."""
    return services.purge_old_notifications()


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=3600, time_limit=3700)
def run_export_job(job_id: int) -> str:
    """Write an export file (idempotent: a finished job is left alone; a job whose worker
    stopped is written again from the start)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from portal import exports

    try:
        job = exports.run_export(job_id=job_id)
        return job.state if job is not None else "missing"
    except SoftTimeLimitExceeded:
        return exports.interrupted(job_id=job_id)


@shared_task(acks_late=True, ignore_result=True)
def purge_expired_exports() -> int:
    """Hourly: delete export files past their retention."""
    from portal import exports

    return exports.purge_expired_exports()
