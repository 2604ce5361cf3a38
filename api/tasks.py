"""Celery tasks of the API app: they take ids, reload rows and call services."""

from __future__ import annotations

from celery import shared_task

from api import webhooks


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def send_webhook(self, delivery_id: int) -> str:
    """POST one webhook delivery; a failed attempt schedules a retry with backoff."""
    outcome = webhooks.deliver(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(acks_late=True, ignore_result=True)
def resend_stuck_webhooks() -> dict[str, int]:
    """Periodic: release abandoned sends and enqueue overdue pending deliveries."""
    return webhooks.resend_stuck()
