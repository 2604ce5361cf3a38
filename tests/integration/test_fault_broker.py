"""Fault injection: the broker (a private Redis started by this test on a free port, never
the shared one) restarted in the middle of a send, losing every queued chunk task. The
running chunk finishes, beat's recovery enqueues what no task covers any more, and every
message reaches the sink once."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.integration.conftest import wait_for
from tests.integration.faults import (
    Sink,
    check,
    free_port,
    make_delivery,
    run_recovery_until,
    send,
    state,
    use_fault_settings,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class PrivateRedis:
    """A redis-server without persistence: a restart loses everything queued."""

    def __init__(self, directory) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url)
        assert wait_for(lambda: _pings(client), 10), "the private redis-server did not start"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker_url(private_redis):
    """This module's broker: the private Redis (overrides the shared one of conftest)."""
    return private_redis.url


def test_the_broker_restarted_mid_send_loses_no_message_and_duplicates_none(
    private_redis, start_worker, org, settings
):
    use_fault_settings(settings)
    sink = Sink(pause=0.03).start()
    try:
        delivery = make_delivery(org, 60)  # six chunk tasks
        worker = start_worker(**sink.env(), **worker_env())
        send(delivery)
        assert wait_for(lambda: len(sink.received) >= 12, 30), "".join(worker.lines)
        private_redis.stop()  # the queued chunk tasks are lost with it
        time.sleep(0.5)
        private_redis.start()
        assert run_recovery_until(lambda: state(delivery) == "sent", 90), "".join(worker.lines)
        figures = check(delivery, sink)
        assert (figures.sent, figures.in_doubt) == (60, 0)
    finally:
        sink.stop()
