from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import time_machine
from celery.exceptions import Retry
from django.core import mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from portal import services
from portal.choices import NotificationStatus
from portal.models import AuditLog, Notification
from portal.tasks import resend_stuck_notifications, send_notification

FAILING = "tests.support.FailingEmailBackend"
TEST_TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@pytest.fixture(autouse=True)
def _test_email_templates(settings):
    """The test_ping email lives with the tests, not with the product's templates."""
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], TEST_TEMPLATES]}
    ]


def ping(org, **kwargs):
    return services.notify(
        recipients=[org.operator_a, org.operator_b, "extra@example.com", org.operator_a],
        template="test_ping",
        context={"message": "The <b>spring</b> kit is out"},
        related=org.store_a,
        **kwargs,
    )


def test_notify_writes_one_row_per_distinct_recipient(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        rows = ping(org)
    assert sorted(n.recipient_email for n in rows) == [
        "extra@example.com",
        "operator_a@example.com",
        "operator_b@example.com",
    ]
    assert all(n.status == NotificationStatus.PENDING for n in rows)
    assert rows[0].entity == org.store_a
    assert "&lt;b&gt;spring&lt;/b&gt;" in rows[0].body_html
    assert "<b>spring</b>" in rows[0].body_text


def test_nothing_is_sent_before_commit(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ping(org)
        assert mail.outbox == []
    assert len(callbacks) == 1
    assert len(mail.outbox) == 3
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


def test_nothing_is_written_or_sent_when_the_transaction_rolls_back(
    org, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        ping(org)
        raise RuntimeError("the change that caused the notification failed")
    assert callbacks == []
    assert not Notification.objects.exists()
    assert mail.outbox == []


def test_a_failed_send_is_recorded_and_scheduled_again(org, settings):
    settings.EMAIL_BACKEND = FAILING
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="Hello")
    outcome = services.deliver_notification(notification_id=notification.pk)
    notification.refresh_from_db()
    assert outcome.status == "retry"
    assert outcome.retry_in == settings.NOTIFICATION_RETRY_BASE_SECONDS
    assert notification.status == NotificationStatus.PENDING
    assert notification.attempts == 1
    assert "refused the connection" in notification.last_error
    assert notification.next_attempt_at > timezone.now()

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert services.deliver_notification(notification_id=notification.pk).status == "sent"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 2)
    assert len(mail.outbox) == 1


def test_backoff_doubles_and_gives_up_after_max_attempts(org, settings):
    settings.EMAIL_BACKEND = FAILING
    settings.NOTIFICATION_MAX_ATTEMPTS = 3
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="Hello")
    delays = [services.deliver_notification(notification_id=notification.pk) for _ in range(3)]
    assert [d.retry_in for d in delays] == [60, 120, None]
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("failed", 3)
    assert AuditLog.objects.for_object(notification).filter(to_state="failed").exists()


def test_the_task_asks_celery_to_retry_with_the_backoff(org, settings):
    settings.EMAIL_BACKEND = FAILING
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="Hello")
    with pytest.raises(Retry) as excinfo:
        send_notification.delay(notification.pk)
    assert excinfo.value.when == settings.NOTIFICATION_RETRY_BASE_SECONDS
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert send_notification.delay(notification.pk).get() == "sent"


def test_delivering_twice_sends_once(org):
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="Hello")
    assert services.deliver_notification(notification_id=notification.pk).status == "sent"
    assert services.deliver_notification(notification_id=notification.pk).status == "skipped"
    assert len(mail.outbox) == 1


def test_a_broker_outage_loses_nothing(org, django_capture_on_commit_callbacks):
    with (
        mock.patch.object(send_notification, "delay", side_effect=OSError("broker down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        result = resend_stuck_notifications.delay()
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT
    assert len(mail.outbox) == 1
    assert result.get()["enqueued"] == 1


def test_a_send_abandoned_by_a_dead_worker_is_released(org, settings):
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    services.transition(obj=notification, name="start_sending")  # the worker died here
    assert services.resend_stuck_notifications() == {"released": 0, "enqueued": 0}
    later = timezone.now() + settings.NOTIFICATION_STUCK_AFTER + timedelta(minutes=2)
    with time_machine.travel(later):
        counts = services.resend_stuck_notifications()
    assert counts["released"] == 1
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT


def test_central_user_resends_a_failed_notification_from_the_admin(org, settings, client):
    settings.EMAIL_BACKEND = FAILING
    settings.NOTIFICATION_MAX_ATTEMPTS = 1
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    services.deliver_notification(notification_id=notification.pk)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.force_login(org.marketer)
    with_callbacks = client.post(
        reverse("admin:portal_notification_changelist"),
        {"action": "resend", "_selected_action": [notification.pk]},
        follow=True,
    )
    assert b"queued again" in with_callbacks.content
    notification.refresh_from_db()
    assert notification.status in {NotificationStatus.PENDING, NotificationStatus.SENT}
    entry = AuditLog.objects.for_object(notification).filter(action="requeue").get()
    assert entry.actor == org.marketer


def test_resend_runs_after_commit(org, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = FAILING
    settings.NOTIFICATION_MAX_ATTEMPTS = 1
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    services.deliver_notification(notification_id=notification.pk)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with django_capture_on_commit_callbacks(execute=True):
        services.resend_notification(notification=notification, actor=org.marketer)
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT
    assert len(mail.outbox) == 1


def test_a_local_operator_cannot_resend(org, settings, client):
    settings.EMAIL_BACKEND = FAILING
    settings.NOTIFICATION_MAX_ATTEMPTS = 1
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    services.deliver_notification(notification_id=notification.pk)
    client.force_login(org.operator_a)
    response = client.post(
        reverse("admin:portal_notification_changelist"),
        {"action": "resend", "_selected_action": [notification.pk]},
    )
    assert response.status_code == 302 and "/login/" in response["Location"]
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED


def test_password_reset_goes_through_the_outbox(org, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("password_reset"), {"email": org.operator_a.email})
    assert response.status_code == 302
    notification = Notification.objects.get(kind="password_reset")
    assert notification.recipient == org.operator_a
    assert "http://127.0.0.1:8000/accounts/reset/" in notification.body_text
    assert len(mail.outbox) == 1


def test_old_sent_notifications_are_purged(org):
    notification = services.queue_email(to="a@example.com", subject="Hi", body_text="x")
    services.deliver_notification(notification_id=notification.pk)
    assert services.purge_old_notifications(older_than_days=1) == 0
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert services.purge_old_notifications(older_than_days=1) == 1
