"""Periodic approval jobs (Celery beat)."""

from celery import shared_task

from approvals import services


@shared_task(acks_late=True, ignore_result=True)
def send_approval_reminders() -> int:
    return services.send_reminders()


@shared_task(acks_late=True, ignore_result=True)
def expire_overdue_requests() -> dict[str, int]:
    return services.expire_overdue()
