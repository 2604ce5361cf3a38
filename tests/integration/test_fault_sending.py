"""Fault injection with real Celery workers, a real broker and an SMTP sink counting
Message-IDs: workers killed (SIGKILL) before the provider accepts, between its acceptance and
the sent mark, and during the mark; a provider slower than the lease; the SMTP server down
(with a retry lost with its worker), then back; PostgreSQL restarted mid-send. Each ends with
zero duplicates at the sink, sent + in doubt + failed = targeted, the delivery finished and
its report agreeing with the sink. (The broker restart: test_fault_broker.py.)

The kills happen at precise points through DELIVERY_TEST_FAULT=<point>:<n>: the worker kills
itself (SIGKILL) at that point of the n-th message it hands over."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from django.db import connection

from tests.integration.conftest import wait_for
from tests.integration.faults import (
    LEASE,
    RECOVERY,
    WINDOW,
    Sink,
    check,
    count,
    make_delivery,
    message_ids,
    run_recovery_until,
    send,
    state,
    use_fault_settings,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
RECIPIENTS = 40


@pytest.fixture
def sink():
    running = Sink(pause=0.01).start()
    yield running
    running.stop()


def killed_at(point: str, sink, start_worker, org, settings):
    """A worker dies at ``point`` of its 15th message; a second one and beat's recovery
    finish the delivery. Returns the delivery and the seconds the takeover took."""
    use_fault_settings(settings)
    delivery = make_delivery(org, RECIPIENTS)
    first = start_worker(**sink.env(), **worker_env(DELIVERY_TEST_FAULT=f"{point}:15"))
    send(delivery)
    first.process.wait(60)  # it killed itself
    died = time.monotonic()
    assert first.process.returncode == -9, "".join(first.lines)
    second = start_worker(**sink.env(), **worker_env())
    assert run_recovery_until(lambda: count(delivery, "in_flight") == 0, 30)
    takeover = time.monotonic() - died
    assert run_recovery_until(lambda: state(delivery) == "sent", 60), "".join(second.lines)
    return delivery, takeover


def in_doubt_within_the_window(figures) -> None:
    """What the dead worker had in flight is in doubt: at least the message it was handing
    over, at most its window's worth (handed over but not recorded, or put in flight ahead);
    everything else was sent."""
    assert 1 <= figures.in_doubt <= 2 * WINDOW
    assert figures.sent + figures.in_doubt == RECIPIENTS


def test_a_worker_killed_before_the_provider_accepts(sink, start_worker, org, settings):
    delivery, takeover = killed_at("before_send", sink, start_worker, org, settings)
    figures = check(delivery, sink)
    in_doubt_within_the_window(figures)
    # the one it was about to hand over never reached the sink, and was not sent again
    assert message_ids(delivery, "in_doubt") - set(sink.received)
    # the takeover bound: the lease, then the next recovery run (plus a worker's start here)
    assert takeover < LEASE + RECOVERY + 15


def test_a_worker_killed_between_acceptance_and_the_sent_mark(sink, start_worker, org, settings):
    delivery, _ = killed_at("after_accept", sink, start_worker, org, settings)
    figures = check(delivery, sink)
    in_doubt_within_the_window(figures)
    # the sink has it once; the product says it is in doubt, and did not send it again
    assert message_ids(delivery, "in_doubt") & set(sink.received)


def test_a_worker_killed_during_the_mark(sink, start_worker, org, settings):
    delivery, _ = killed_at("during_mark", sink, start_worker, org, settings)
    figures = check(delivery, sink)
    in_doubt_within_the_window(figures)
    # the mark that died was recording accepted messages: they are in doubt, sent once
    assert message_ids(delivery, "in_doubt") & set(sink.received)


def test_a_provider_slower_than_the_lease_keeps_its_claim(start_worker, org, settings):
    use_fault_settings(settings)
    slow = Sink(pause=0.6).start()  # 12 messages in one chunk: about 3.6 leases
    try:
        delivery = make_delivery(org, 12)
        settings.DELIVERY_CHUNK_SIZE = 12
        env = {**slow.env(), **worker_env(DELIVERY_CHUNK_SIZE="12")}
        start_worker(**env)
        start_worker(**env)  # a second worker ready to take over (it must not)
        send(delivery)
        assert run_recovery_until(lambda: state(delivery) == "sent", 60)
        figures = check(delivery, slow)
        assert (figures.sent, figures.in_doubt) == (12, 0)
        claims = set(delivery.messages.values_list("claim", flat=True))
        assert len(claims) == 1  # sent by its first owner alone
    finally:
        slow.stop()


def test_the_smtp_server_down_then_back_with_a_retry_lost_with_its_worker(
    start_worker, org, settings
):
    use_fault_settings(settings)
    settings.DELIVERY_RETRY_BASE_SECONDS = 2
    sink = Sink(pause=0.01)  # not started: the mail server is down
    delivery = make_delivery(org, 20)
    env = {**sink.env(), **worker_env(DELIVERY_RETRY_BASE_SECONDS="2")}
    first = start_worker(**env)
    send(delivery)
    # Both chunks failed to connect and wait for their retry; the worker dies with them.
    assert wait_for(lambda: count(delivery, "pending") == 20
                    and not delivery.messages.filter(attempts=0).exists(), 30)  # fmt: skip
    first.kill()
    sink.start()
    try:
        second = start_worker(**env)
        # No task covers them any more: beat's recovery finds them once their retry is due.
        assert run_recovery_until(lambda: state(delivery) == "sent", 60), "".join(second.lines)
        figures = check(delivery, sink)
        assert (figures.sent, figures.in_doubt) == (20, 0)
        # And down in the middle of a send, then back.
        again = make_delivery(org, 30, label="Again")  # targets all 50 contacts
        sink.pause = 0.05
        send(again)
        assert wait_for(lambda: len(sink.received) >= 35, 30)
        sink.stop()
        time.sleep(1.5)
        sink.start()
        assert run_recovery_until(lambda: state(again) == "sent", 90), "".join(second.lines)
        figures = check(again, sink)
        assert figures.sent + figures.in_doubt == 50 and figures.in_doubt <= 1
    finally:
        sink.stop()


def _cluster_of_test_database() -> list[str] | None:
    """The local cluster (version, name) serving the test database's port, as
    ``pg_lsclusters`` lists it: the restart hits that server and no other one."""
    if not shutil.which("pg_ctlcluster") or not shutil.which("pg_lsclusters"):
        return None
    port = str(connection.settings_dict.get("PORT") or 5432)
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if cluster_port == port:
            return [version, name]
    return None


def test_postgresql_restarted_mid_send(sink, start_worker, org, settings):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL restart: this run uses SQLite (no server to restart)")
    cluster = _cluster_of_test_database()
    if cluster is None:
        pytest.skip("PostgreSQL restart: the test database is not on a local cluster")
    use_fault_settings(settings)
    sink.pause = 0.03
    delivery = make_delivery(org, 60)
    worker = start_worker(**sink.env(), **worker_env())
    send(delivery)
    assert wait_for(lambda: len(sink.received) >= 15, 30)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"],
        check=True, timeout=120,
    )  # fmt: skip
    connection.close()
    assert run_recovery_until(lambda: state(delivery) == "sent", 120), "".join(worker.lines)
    figures = check(delivery, sink)
    assert figures.sent + figures.in_doubt == 60 and figures.in_doubt <= 1
