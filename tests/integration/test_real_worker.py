"""A real Celery worker: an outbox notification is delivered after the transaction commits,
and not before; a rolled-back one never reaches the worker."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from portal import services
from portal.choices import NotificationStatus
from portal.models import Notification
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(start_worker, tmp_path):
    running = start_worker()
    return tmp_path / "mail", running.lines


def test_a_notification_is_delivered_by_a_real_worker_after_commit_only(worker):
    mail_dir, log = worker
    with transaction.atomic():
        notification = services.queue_email(
            to="approver@example.com", subject="Order to approve", body_text="Please decide."
        )
        time.sleep(3)  # a worker that could see it would have sent it by now
        assert not mail_dir.exists() or not any(mail_dir.iterdir())
    # committed: the task is enqueued now and the worker delivers it
    sent = wait_for(
        lambda: Notification.objects.get(pk=notification.pk).status == NotificationStatus.SENT
    )
    assert sent, "".join(log)
    files = list(mail_dir.iterdir())
    assert len(files) == 1
    assert "Order to approve" in files[0].read_text()


def test_a_rolled_back_notification_never_reaches_the_worker(worker):
    mail_dir, log = worker
    with pytest.raises(RuntimeError), transaction.atomic():
        services.queue_email(to="x@example.com", subject="Never", body_text="x")
        raise RuntimeError("rolled back")
    marker = services.queue_email(to="y@example.com", subject="Marker", body_text="x")
    assert wait_for(
        lambda: Notification.objects.get(pk=marker.pk).status == NotificationStatus.SENT
    ), "".join(log)
    texts = [path.read_text() for path in mail_dir.iterdir()]
    assert len(texts) == 1 and "Marker" in texts[0]
    assert not Notification.objects.filter(subject="Never").exists()
