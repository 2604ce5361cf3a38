"""Sending exactly once or accounted for: the in-flight protocol, in-doubt messages, the
claim's heartbeat and fencing, database errors, recovery of what no live task covers, and
the counts that always add up. (Real workers and faults: tests/integration/test_fault_*.)"""

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns import tasks
from campaigns.delivery import reports, sending
from campaigns.delivery.providers import EmailProvider, PermanentError, TemporaryError
from campaigns.models import Delivery, Message
from portal.celery import app as celery_app
from portal.exceptions import DomainError
from portal.models import AuditLog
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_sending import prepared

pytestmark = pytest.mark.django_db


class Killed(BaseException):
    """The worker dies here (as with SIGKILL: no except clause of the product runs)."""


class Recording(EmailProvider):
    """Sends through the mail backend and records, for each message it is handed, the
    statuses the database holds at that moment."""

    idempotent = False
    kill_after_accepting: int | None = None  # the n-th message (1-based)
    kill_before_accepting: int | None = None

    def __init__(self):
        self.handed: list[int] = []
        self.seen: list[dict[int, str]] = []

    def send(self, message):
        self.handed.append(message.message_id)
        self.seen.append(dict(Message.objects.values_list("id", "status")))
        if self.kill_before_accepting == len(self.handed):
            raise Killed
        super().send(message)
        if self.kill_after_accepting == len(self.handed):
            raise Killed


@pytest.fixture(autouse=True)
def one_in_flight(settings):
    """The protocol message by message (window 1); the window tests below set their own."""
    settings.DELIVERY_IN_FLIGHT_WINDOW = 1


@pytest.fixture
def people(org):
    for n in range(6):
        person(org, f"G{n}", first_name=f"Gus{n}")


@pytest.fixture
def more_people(org):
    for n in range(6, 14):
        person(org, f"G{n}", first_name=f"Gus{n}")


@pytest.fixture
def provider(monkeypatch):
    made = Recording()
    monkeypatch.setattr(sending, "provider_for", lambda channel: made)
    return made


def sending_delivery(campaign, org, **fields):
    delivery = prepared(campaign, **fields)
    sending.confirm(delivery=delivery, actor=org.marketer)  # chunks not run (no commit)
    ids = sorted(Message.objects.filter(delivery=delivery).values_list("id", flat=True))
    return delivery, ids


def later(seconds):
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds), tick=True)


def assert_counts_add_up(delivery):
    figures = reports.delivery_figures(delivery)
    assert figures.waiting == 0
    assert figures.targeted == figures.accounted, figures
    return figures


def test_each_message_is_in_flight_when_handed_over_with_one_mark_per_message(
    campaign, people, org, provider, mailoutbox
):
    delivery, ids = sending_delivery(campaign, org)
    with CaptureQueriesContext(connection) as queries:
        result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
    assert result["sent"] == 6 and provider.handed == ids
    handed = zip(provider.handed, provider.seen, strict=True)
    for index, (message_id, statuses) in enumerate(handed):
        assert statuses[message_id] == "in_flight"  # durably marked before it is handed over
        assert [statuses[i] for i in ids[:index]] == ["sent"] * index
        assert {statuses[i] for i in ids[index + 1 :]} <= {"sending"}
    marks = [q["sql"] for q in queries.captured_queries
             if q["sql"].startswith('UPDATE "campaigns_message"')]  # fmt: skip
    # the claim, the first one put in flight, then one statement per message
    assert len(marks) == 1 + 1 + 6
    assert len(mailoutbox) == 6


def test_a_worker_killed_after_the_provider_accepted_leaves_that_message_in_doubt(
    campaign, people, org, provider, mailoutbox, settings
):
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_after_accepting = 3
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    assert len(mailoutbox) == 3
    assert Message.objects.get(pk=ids[2]).status == "in_flight"
    assert sending.recover_stalled() == 0  # its lease is not over
    provider.kill_after_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        assert sending.recover_stalled() == 1  # the rest, sent at once (eager task)
    assert len(mailoutbox) == 6  # the accepted one was not sent again
    assert sorted(m.extra_headers["Message-ID"] for m in mailoutbox) == sorted(
        set(m.extra_headers["Message-ID"] for m in mailoutbox)
    )
    doubtful = Message.objects.get(pk=ids[2])
    assert doubtful.status == "in_doubt" and doubtful.error.startswith("In doubt")
    delivery.refresh_from_db()
    assert delivery.state == "sent"
    figures = assert_counts_add_up(delivery)
    assert (figures.sent, figures.in_doubt) == (5, 1)


def test_a_worker_killed_before_the_provider_accepted_is_in_doubt_too_never_resent(
    campaign, people, org, provider, mailoutbox, settings
):
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_before_accepting = 2
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    provider.kill_before_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        sending.recover_stalled()
    assert len(mailoutbox) == 5  # the one it was handing over is in doubt, not resent
    assert Message.objects.get(pk=ids[1]).status == "in_doubt"
    assert_counts_add_up(Delivery.objects.get(pk=delivery.pk))


def test_through_a_deduplicating_provider_the_message_in_doubt_is_sent_again(
    campaign, people, org, provider, mailoutbox, settings
):
    provider.idempotent = True  # e.g. the HTTP gateway with its Idempotency-Key
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_after_accepting = 3
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    provider.kill_after_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        sending.recover_stalled()
    assert provider.handed.count(ids[2]) == 2  # the provider deduplicates it
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert reports.delivery_figures(delivery).in_doubt == 0


def test_a_worker_whose_claim_was_taken_over_stops_before_its_next_message(
    campaign, people, org, provider, mailoutbox, settings, monkeypatch
):
    delivery, ids = sending_delivery(campaign, org)
    taken = {}

    class Stuck(Recording):
        """Stalls on its second message so long that another worker takes its claim."""

        def send(self, message):
            if message.message_id == ids[1]:
                with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
                    taken["claim"] = sending.claim(delivery.pk, ids[0], ids[-1])
            super().send(message)

    stuck = Stuck()
    monkeypatch.setattr(sending, "provider_for", lambda channel: stuck)
    result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
    assert taken["claim"].token is not None
    assert stuck.handed == ids[:2] and result["sent"] == 2  # stopped before the third
    statuses = dict(Message.objects.values_list("id", "status"))
    # the slow one's acceptance was still recorded; the rest belong to the new owner
    assert statuses[ids[1]] == "sent"
    assert {statuses[i] for i in ids[2:]} == {"sending"}
    assert set(Message.objects.filter(pk__in=ids[2:]).values_list("claim", flat=True)) == {
        taken["claim"].token
    }


def test_the_heartbeat_keeps_a_slow_workers_claim_beyond_the_lease(
    campaign, people, org, mailoutbox, settings, monkeypatch
):
    settings.DELIVERY_CLAIM_LEASE_SECONDS = 10
    delivery, ids = sending_delivery(campaign, org)
    attempts = []

    class Slow(Recording):
        """Each message takes 6 s: the chunk outlives its 10 s lease three times over."""

        def send(self, message):
            traveller.shift(6)
            # another worker (a redelivered task, beat) tries the same range meanwhile
            attempts.append(sending.claim(delivery.pk, ids[0], ids[-1]))
            super().send(message)

    monkeypatch.setattr(sending, "provider_for", lambda channel: Slow())
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
        assert sending.recover_stalled() == 0
    assert result["sent"] == 6 and len(mailoutbox) == 6
    assert all(a.token is None and a.busy_until is not None for a in attempts)
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def test_a_redelivered_task_takes_over_a_dead_claim_when_its_lease_ends(
    campaign, people, org, provider, mailoutbox, settings
):
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_before_accepting = 1
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    provider.kill_before_accepting = None
    again = sending.send_chunk(delivery.pk, ids[0], ids[-1])  # redelivered at once
    assert again["sent"] == 0
    assert 0 < again["retry_in"] <= settings.DELIVERY_CLAIM_LEASE_SECONDS + 1  # not beat's
    with later(again["retry_in"]):
        assert sending.send_chunk(delivery.pk, ids[0], ids[-1])["sent"] == 5  # no beat needed
    assert len(mailoutbox) == 5
    assert Message.objects.get(pk=ids[0]).status == "in_doubt"


def test_a_database_error_mid_chunk_retries_and_records_what_was_accepted(
    campaign, people, org, provider, mailoutbox, monkeypatch
):
    delivery, ids = sending_delivery(campaign, org)
    mark = sending.Marks.mark
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:  # the second message was accepted, then the database went away
            raise OperationalError("server closed the connection unexpectedly")
        return mark(self, *args, **kwargs)

    monkeypatch.setattr(sending.Marks, "mark", flaky)
    tasks.send_chunk.apply(args=(delivery.pk, ids[0], ids[-1]), throw=False)  # retried eagerly
    assert len(mailoutbox) == 6  # nothing sent twice
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}  # none in doubt
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def test_a_database_error_before_the_claim_is_retried_with_backoff(
    campaign, people, org, monkeypatch
):
    delivery, ids = sending_delivery(campaign, org)
    retried = []

    def down(*args, **kwargs):
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(sending, "send_chunk", down)
    monkeypatch.setattr(
        tasks.send_chunk, "retry", lambda **kw: retried.append(kw) or RuntimeError("retry")
    )
    with pytest.raises(RuntimeError):
        tasks.send_chunk.run(delivery.pk, ids[0], ids[-1])
    assert retried[0]["countdown"] == 1 and retried[0]["args"] == (delivery.pk, ids[0], ids[-1])


def test_a_content_that_cannot_render_fails_the_delivery_once_with_its_error(
    campaign, people, org, provider, client
):
    delivery, ids = sending_delivery(campaign, org)
    Delivery.objects.filter(pk=delivery.pk).update(subject="Hello {{ contact.first_name ")
    result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
    assert result["retry_in"] is None and provider.handed == []
    delivery.refresh_from_db()
    assert delivery.state == "failed" and "cannot be rendered" in delivery.error
    assert set(Message.objects.values_list("status", flat=True)) == {"failed"}
    assert_counts_add_up(delivery)
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:delivery", args=[delivery.pk])).content.decode()
    assert "cannot be rendered" in page


def test_counts_add_up_with_sent_failed_in_doubt_excluded_and_cancelled(
    campaign, people, org, provider, mailoutbox, settings
):
    from campaigns.models import Contact, Typology

    Contact.objects.filter(external_id="G5").update(blocklisted=True)
    typology = Typology.objects.create(name="T", entity=org.hq, rules=[{"rule": "blocklist"}])
    delivery, ids = sending_delivery(campaign, org, typology=typology)

    class Mixed(Recording):
        def send(self, message):
            if message.address == "g1@example.com":
                raise PermanentError("550 5.1.1 no such user", bounce=True)
            super().send(message)

    mixed = Mixed()
    mixed.kill_after_accepting = 4
    sending.provider_for = lambda channel: mixed
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    mixed.kill_after_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        sending.recover_stalled()
    figures = assert_counts_add_up(Delivery.objects.get(pk=delivery.pk))
    assert (figures.sent, figures.failed, figures.in_doubt, figures.excluded) == (3, 1, 1, 1)
    cancelled = prepared(campaign, label="Never")
    sending.cancel(delivery=cancelled, actor=org.marketer)
    figures = assert_counts_add_up(cancelled)
    assert figures.cancelled == 6 and figures.sent == 0


def test_recovery_enqueues_pending_messages_no_task_covers(
    campaign, people, org, provider, mailoutbox, settings, monkeypatch
):
    delivery, _ids = sending_delivery(campaign, org)  # its chunk tasks were lost
    assert sending.recover_stalled() == 0  # it just started: its tasks may be queued
    monkeypatch.setattr(sending, "_send_queue_is_empty", lambda: False)
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        assert sending.recover_stalled() == 0  # tasks wait in the queue: maybe its own
    monkeypatch.setattr(sending, "_send_queue_is_empty", lambda: True)
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        assert sending.recover_stalled() == 1
    assert len(mailoutbox) == 6
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def test_recovery_enqueues_even_behind_a_busy_queue_once_the_delivery_is_stalled(
    campaign, people, org, provider, mailoutbox, settings, monkeypatch
):
    delivery, _ids = sending_delivery(campaign, org)
    monkeypatch.setattr(sending, "_send_queue_is_empty", lambda: False)
    with later(settings.DELIVERY_STALL_ALERT_SECONDS + 1):
        assert sending.stalled_since(Delivery.objects.get(pk=delivery.pk)) is not None
        assert sending.recover_stalled() == 1
    assert len(mailoutbox) == 6


def test_a_retry_lost_with_its_worker_is_recovered_after_its_retry_time(
    campaign, people, org, mailoutbox, settings, monkeypatch
):
    class Down(EmailProvider):
        def open(self):
            raise TemporaryError("Cannot reach the mail server")

    settings.DELIVERY_RETRY_BASE_SECONDS = 300
    delivery, ids = sending_delivery(campaign, org)
    monkeypatch.setattr(sending, "provider_for", lambda channel: Down())
    retry_in = sending.send_chunk(delivery.pk, ids[0], ids[-1])["retry_in"]
    assert retry_in == settings.DELIVERY_RETRY_BASE_SECONDS  # its retry task is then lost
    monkeypatch.setattr(sending, "provider_for", lambda channel: EmailProvider())
    # The lost task is in no queue (and the developer's own broker may hold other tasks).
    monkeypatch.setattr(sending, "_send_queue_is_empty", lambda: True)
    with later(retry_in - 5):
        assert sending.recover_stalled() == 0  # not due yet
    with later(retry_in + settings.DELIVERY_RECOVERY_SECONDS + 1):
        assert sending.recover_stalled() == 1
    assert len(mailoutbox) == 6
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def test_central_users_resend_in_doubt_messages_deliberately_with_an_audit_entry(
    campaign,
    people,
    org,
    provider,
    mailoutbox,
    settings,
    client,
    django_capture_on_commit_callbacks,
):
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_after_accepting = 2
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    provider.kill_after_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        sending.recover_stalled()
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(mailoutbox) == 6
    url = reverse("campaigns:delivery", args=[delivery.pk])
    client.force_login(org.marketer)
    page = client.get(url).content.decode()
    assert "In doubt: 1" in page and "g1@example.com" in page and "resend_in_doubt" in page
    with pytest.raises(PermissionDenied):
        sending.resend_in_doubt(delivery=delivery, actor=org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("campaigns:delivery_action", args=[delivery.pk, "resend_in_doubt"]))
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(mailoutbox) == 7
    assert Message.objects.get(pk=ids[1]).status == "sent"
    entry = AuditLog.objects.for_object(delivery).get(action="resend_in_doubt")
    assert entry.actor == org.marketer and entry.extra == {"in_doubt": 1}
    with pytest.raises(DomainError, match="no message in doubt"):
        sending.resend_in_doubt(delivery=delivery, actor=org.marketer)


def test_the_admin_flags_a_delivery_without_progress(campaign, people, org, client, settings):
    delivery, _ids = sending_delivery(campaign, org)
    client.force_login(org.marketer)
    changelist = reverse("admin:campaigns_delivery_changelist")
    assert delivery.label not in client.get(changelist, {"stalled": "yes"}).content.decode()
    with later(settings.DELIVERY_STALL_ALERT_SECONDS + 1):
        listed = client.get(changelist, {"stalled": "yes"}).content.decode()
        page = client.get(reverse("admin:campaigns_delivery_change", args=[delivery.pk]))
    assert delivery.label in listed
    assert "No progress since" in page.content.decode()


def test_recovery_has_its_own_queue_and_runs_every_few_seconds(settings):
    route = celery_app.amqp.router.route({}, "campaigns.tasks.recover_stalled_sends")
    assert route["queue"].name == "control"
    assert celery_app.amqp.router.route({}, "campaigns.tasks.send_chunk")["queue"].name == (
        "celery"
    )
    schedule = settings.CELERY_BEAT_SCHEDULE["recover-stalled-sends"]["schedule"]
    assert (
        schedule == timedelta(seconds=settings.DELIVERY_RECOVERY_SECONDS) <= timedelta(seconds=15)
    )


# A window of messages in flight per commit (DELIVERY_IN_FLIGHT_WINDOW) -----------------------


def test_a_window_of_messages_is_put_in_flight_by_one_commit(
    campaign, people, more_people, org, provider, mailoutbox, settings
):
    settings.DELIVERY_IN_FLIGHT_WINDOW = 4
    delivery, ids = sending_delivery(campaign, org)
    with CaptureQueriesContext(connection) as queries:
        result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
    assert result["sent"] == 14 and provider.handed == ids
    for index, (message_id, statuses) in enumerate(zip(ids, provider.seen, strict=True)):
        assert statuses[message_id] == "in_flight"  # durably marked before it is handed over
        in_flight = [i for i in ids if statuses[i] == "in_flight"]
        assert len(in_flight) <= 2 * 4  # the handed ones not recorded yet, and those ahead
        assert {statuses[i] for i in ids[:index]} <= {"sent", "in_flight"}
    marks = [q["sql"] for q in queries.captured_queries
             if q["sql"].startswith('UPDATE "campaigns_message"')]  # fmt: skip
    assert len(marks) < 1 + 14 // 2  # the claim, then one mark per window (not per message)
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert len(mailoutbox) == 14


def test_a_worker_killed_mid_window_leaves_its_window_in_doubt_and_sends_nothing_twice(
    campaign, people, more_people, org, provider, mailoutbox, settings
):
    settings.DELIVERY_IN_FLIGHT_WINDOW = 4
    delivery, ids = sending_delivery(campaign, org)
    provider.kill_after_accepting = 7
    with pytest.raises(Killed):
        sending.send_chunk(delivery.pk, ids[0], ids[-1])
    provider.kill_after_accepting = None
    with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
        sending.recover_stalled()
    ids_sent = [m.extra_headers["Message-ID"] for m in mailoutbox]
    assert len(ids_sent) == len(set(ids_sent))  # nothing sent twice
    figures = assert_counts_add_up(Delivery.objects.get(pk=delivery.pk))
    assert 1 <= figures.in_doubt <= 2 * 4 and figures.sent + figures.in_doubt == 14
    doubtful = set(Message.objects.filter(status="in_doubt").values_list("id", flat=True))
    assert ids[6] in doubtful  # accepted, its mark never came: in doubt, not resent
    assert len(mailoutbox) == 14 - len(doubtful - set(ids[:7]))  # never-handed ones wait


def test_after_a_database_error_mid_window_the_messages_never_handed_over_are_not_in_doubt(
    campaign, people, more_people, org, provider, mailoutbox, monkeypatch, settings
):
    settings.DELIVERY_IN_FLIGHT_WINDOW = 4
    delivery, ids = sending_delivery(campaign, org)
    mark = sending.Marks.mark
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:  # a window in flight, some of it handed over: the database goes
            raise OperationalError("server closed the connection unexpectedly")
        return mark(self, *args, **kwargs)

    monkeypatch.setattr(sending.Marks, "mark", flaky)
    tasks.send_chunk.apply(args=(delivery.pk, ids[0], ids[-1]), throw=False)  # retried eagerly
    assert sorted(provider.handed) == ids  # nothing handed over twice
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}  # none in doubt
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"


def test_a_worker_whose_claim_was_taken_over_mid_window_stops_at_its_next_mark(
    campaign, people, more_people, org, mailoutbox, settings, monkeypatch
):
    settings.DELIVERY_IN_FLIGHT_WINDOW = 4
    delivery, ids = sending_delivery(campaign, org)
    taken = {}

    class Stuck(Recording):
        """Stalls on its second message so long that another worker takes its claim."""

        def send(self, message):
            if message.message_id == ids[1]:
                with later(settings.DELIVERY_CLAIM_LEASE_SECONDS + 1):
                    taken["claim"] = sending.claim(delivery.pk, ids[0], ids[-1])
            super().send(message)

    stuck = Stuck()
    monkeypatch.setattr(sending, "provider_for", lambda channel: stuck)
    monkeypatch.setattr(sending.Marks, "__enter__", lambda marks: marks)  # one connection
    sending.send_chunk(delivery.pk, ids[0], ids[-1])
    # it went on only with the messages it had in flight (the new owner never sends those
    # through SMTP: they are in doubt for it), and stopped at its next mark
    statuses = dict(Message.objects.values_list("id", "status"))
    assert len(stuck.handed) < 14
    later_ones = [i for i in ids if i not in stuck.handed]
    assert {statuses[i] for i in later_ones} == {"sending"}
    assert set(Message.objects.filter(pk__in=later_ones).values_list("claim", flat=True)) == {
        taken["claim"].token
    }
    assert {statuses[i] for i in stuck.handed} <= {"sent", "in_doubt"}


def test_the_heartbeat_keeps_a_slow_workers_claim_with_its_whole_chunk_in_flight(
    campaign, people, org, mailoutbox, settings, monkeypatch
):
    settings.DELIVERY_CLAIM_LEASE_SECONDS = 10
    settings.DELIVERY_IN_FLIGHT_WINDOW = 4  # all six in flight after the second mark
    delivery, ids = sending_delivery(campaign, org)
    attempts = []

    class Slow(Recording):
        """Each message takes 6 s: the chunk outlives its 10 s lease three times over."""

        def send(self, message):
            traveller.shift(6)
            attempts.append(sending.claim(delivery.pk, ids[0], ids[-1]))
            super().send(message)

    monkeypatch.setattr(sending, "provider_for", lambda channel: Slow())
    # The other worker is played on this test's one connection, from the sending thread: the
    # marks run in this thread too (no helper thread using the connection meanwhile).
    monkeypatch.setattr(sending.Marks, "__enter__", lambda marks: marks)
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        result = sending.send_chunk(delivery.pk, ids[0], ids[-1])
        assert sending.recover_stalled() == 0
    assert result["sent"] == 6 and len(mailoutbox) == 6
    assert all(a.token is None and a.busy_until is not None for a in attempts)
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
