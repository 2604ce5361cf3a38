"""Periodic package jobs (Celery beat)."""

from celery import shared_task

from packages import services


@shared_task(acks_late=True, ignore_result=True)
def close_ended_packages() -> int:
    return services.close_ended_packages()


@shared_task(acks_late=True, ignore_result=True)
def send_deadline_reminders() -> int:
    return services.send_deadline_reminders()
