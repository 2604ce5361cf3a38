"""The one outbox (portal/outbox.py) behind both outboxes: the same fields and transitions on
notifications and webhook deliveries, and the one sending loop (claim with skip_locked,
attempt, backoff, audit)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from api.models import WebhookDelivery, WebhookEndpoint
from portal import outbox
from portal.models import AuditLog, Notification

TRANSITIONS = {"start_sending", "schedule_retry", "mark_failed", "release_stuck", "requeue"}


def transitions(model) -> set[str]:
    return {t.name for t in model._meta.get_field("status").get_all_transitions(model)}


def test_both_outboxes_have_the_same_fields_and_state_machine():
    for model, done in ((Notification, "mark_sent"), (WebhookDelivery, "mark_delivered")):
        names = {f.name for f in model._meta.concrete_fields}
        assert {"status", "attempts", "last_error", "next_attempt_at", "updated_at"} <= names
        assert transitions(model) == TRANSITIONS | {done}
        assert isinstance(model.objects.all(), outbox.OutboxQuerySet)
    # each model keeps its own table and success state
    assert Notification._meta.db_table == "portal_notification"
    assert WebhookDelivery._meta.db_table == "api_webhookdelivery"


class Recorder(outbox.Sender):
    """A sender whose attempts follow a script: "" done, else that error."""

    model = Notification
    done_transition = "mark_sent"
    done_outcome = "sent"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.tried: list[int] = []

    def max_attempts(self) -> int:
        return 3

    def retry_base_seconds(self) -> int:
        return 10

    def stuck_after(self) -> timedelta:
        return timedelta(minutes=5)

    def attempt(self, row):
        self.tried.append(row.pk)
        return outbox.Attempt(error=self.answers.pop(0))

    def enqueue(self, ids) -> None:
        pass


def notification(**kwargs) -> Notification:
    return Notification.objects.create(
        recipient_email="a@example.com", subject="S", body_text="T", **kwargs
    )


def test_send_due_sends_only_the_rows_whose_time_has_come(db):
    due = notification()
    later = notification(next_attempt_at=timezone.now() + timedelta(hours=1))
    sender = Recorder("")
    assert sender.send_due() == [outbox.Outcome("sent")]
    assert sender.tried == [due.pk]
    assert Notification.objects.get(pk=due.pk).status == "sent"
    assert Notification.objects.get(pk=later.pk).status == "pending"


def test_retries_back_off_then_fail_and_every_step_is_audited(db):
    row = notification()
    sender = Recorder("boom", "boom", "boom")
    outcomes = []
    for _ in range(3):
        Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
        outcomes += sender.send_due()
    assert outcomes == [
        outbox.Outcome("retry", 10), outbox.Outcome("retry", 20), outbox.Outcome("failed")
    ]  # fmt: skip
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "boom")
    actions = list(AuditLog.objects.for_object(row).order_by("id").values_list("action", flat=True))
    assert actions == ["start_sending", "schedule_retry"] * 2 + ["start_sending", "mark_failed"]


def test_a_webhook_answer_is_recorded_by_the_shared_transitions(db, admin_user):
    endpoint = WebhookEndpoint.objects.create(
        name="E", url="https://example.com/hook", events=["order.submitted"], secret="s",
        created_by=admin_user,
    )  # fmt: skip
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="order.submitted", body="{}")
    delivery.start_sending()
    delivery.schedule_retry(
        error="HTTP 500", delay_seconds=30, response_status=500, response_body="no", ms=12
    )
    assert (delivery.status, delivery.response_status, delivery.duration_ms) == ("pending", 500, 12)
    delivery.start_sending()
    delivery.mark_delivered(response_status=204, response_body="", ms=3)
    assert delivery.status == "delivered" and delivery.delivered_at is not None
    assert (delivery.last_error, delivery.response_status) == ("", 204)


@pytest.mark.django_db(transaction=True)
def test_a_row_claimed_by_another_worker_is_skipped_not_waited_for():
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers instead)")
    held, free = notification(), notification()
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        with transaction.atomic():
            Notification.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(10)
        sender = Recorder("")
        assert sender.send_due() == [outbox.Outcome("sent")]  # at once, without waiting
        assert sender.tried == [free.pk]
    finally:
        release.set()
        thread.join()
    assert Notification.objects.get(pk=held.pk).status == "pending"
