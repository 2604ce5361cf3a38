"""A real Celery worker process against a real broker (Redis; the SQLite transport when no
Redis is reachable outside CI) and the test database."""

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
from django.db import connection
from kombu import pools

from portal.celery import app as celery_app

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


class Worker:
    """One worker process; ``kill`` is SIGKILL (no clean shutdown), ``start`` a new one."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo",
             "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        ready = threading.Event()
        process = self.process

        def read() -> None:
            for line in process.stdout:
                self.lines.append(line)
                if " ready." in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            process.kill()
            pytest.fail("The worker did not start:\n" + "".join(self.lines))
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(20)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def start_worker(broker_url, tmp_path, producer):
    """Start workers with extra environment variables; they are stopped after the test."""
    workers: list[Worker] = []

    def start(**extra: str) -> Worker:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": broker_url,
            "EMAIL_URL": f"file://{tmp_path / 'mail'}",
            "PORTAL_VAR_DIR": str(tmp_path / "var"),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        worker = Worker(env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False
