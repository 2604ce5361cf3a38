"""A real Celery worker process, a real broker (Redis; the SQLite transport when no Redis is
reachable outside CI) and the real test database: an outbox notification is delivered after
the transaction commits, and not before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, transaction
from kombu import pools

from portal import services
from portal.celery import app as celery_app
from portal.choices import NotificationStatus
from portal.models import Notification

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def broker_url(tmp_path):
    if _redis_reachable():
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return REDIS_URL
    if os.environ.get("CI"):
        pytest.fail("Redis must be running at 127.0.0.1:6379 in CI")
    return f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "postgres")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def producer(broker_url):
    """Point this process's Celery app at the real broker (no eager mode)."""
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)
    celery_app.conf.broker_url = broker_url
    celery_app.conf.task_always_eager = False
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    yield
    celery_app.conf.broker_url, celery_app.conf.task_always_eager = saved
    pools.reset()  # close and forget this broker's connections
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def worker(broker_url, tmp_path, producer):
    mail_dir = tmp_path / "mail"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "EMAIL_URL": f"file://{mail_dir}",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(60):
        process.kill()
        pytest.fail("The worker did not start:\n" + "".join(lines))
    yield mail_dir, lines
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_notification_is_delivered_by_a_real_worker_after_commit_only(worker):
    mail_dir, log = worker
    with transaction.atomic():
        notification = services.queue_email(
            to="approver@example.com", subject="Order to approve", body_text="Please decide."
        )
        time.sleep(3)  # a worker that could see it would have sent it by now
        assert not mail_dir.exists() or not any(mail_dir.iterdir())
    # committed: the task is enqueued now and the worker delivers it
    sent = _wait_for(
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
    assert _wait_for(
        lambda: Notification.objects.get(pk=marker.pk).status == NotificationStatus.SENT
    ), "".join(log)
    texts = [path.read_text() for path in mail_dir.iterdir()]
    assert len(texts) == 1 and "Marker" in texts[0]
    assert not Notification.objects.filter(subject="Never").exists()
