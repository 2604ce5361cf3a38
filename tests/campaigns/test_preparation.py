"""Preparation in the background: the target is cut into chunks, one task each; progress is
the share of chunks done; a task run twice adds nothing; lost tasks are enqueued again; an
error fails the delivery instead of leaving it preparing."""

from datetime import timedelta
from unittest import mock

import pytest
from django.urls import reverse
from django.utils import timezone

from campaigns.delivery import preparation
from campaigns.models import Delivery, Message, PreparationChunk, Typology
from portal.models import AuditLog
from tests.campaigns.test_deliveries import person, target


@pytest.fixture
def eleven(org, settings):
    """Eleven contacts (two without consent), cut into chunks of three rows."""
    settings.DELIVERY_PREPARE_CHUNK_SIZE = 3
    for n in range(9):
        person(org, f"C{n}")
    for n in range(2):
        person(org, f"NO{n}", email_consent=False)


def started(campaign, org, django_capture_on_commit_callbacks):
    typology = Typology.objects.create(name="Consent", entity=org.hq, rules=[{"rule": "consent"}])
    delivery = Delivery.objects.create(
        campaign=campaign, label="Spring", channel="email", typology=typology,
        subject="Hi {{ contact.first_name }}", text_body="x",
    )  # fmt: skip
    with django_capture_on_commit_callbacks() as callbacks:
        delivery = preparation.prepare(delivery=delivery, **target(), background=True)
    return delivery, callbacks


def chunk_ids(delivery):
    return list(delivery.preparation_chunks.values_list("pk", flat=True))


def test_chunks_are_tasks_and_progress_moves_chunk_by_chunk(
    campaign, eleven, org, client, django_capture_on_commit_callbacks
):
    delivery, callbacks = started(campaign, org, django_capture_on_commit_callbacks)
    assert delivery.state == "preparing" and len(callbacks) == 1
    assert AuditLog.objects.filter(action="start_preparation", extra__chunks=4).exists()
    progress = preparation.progress(delivery)
    assert (progress.chunks, progress.chunks_done, progress.rows, progress.percent) == (4, 0, 11, 0)
    first, second, *rest = chunk_ids(delivery)

    assert preparation.run_chunk(first) == 3
    assert preparation.run_chunk(first) == 0  # delivered twice: the chunk is done
    assert preparation.run_chunk(second) == 3
    delivery.refresh_from_db()
    assert delivery.state == "preparing"  # two chunks are left
    assert preparation.progress(delivery).percent == 55  # 6 of 11 rows
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:delivery", args=[delivery.pk])).content.decode()
    assert "55% · 6 of 11 recipients" in page and "Cancel the delivery" in page
    assert Message.objects.filter(delivery=delivery).count() == 6

    for chunk_id in rest:
        preparation.run_chunk(chunk_id)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.targeted, delivery.exclusions) == (
        "prepared", 11, {"consent": 2}
    )  # fmt: skip
    assert preparation.progress(delivery).percent == 100
    assert Message.objects.filter(delivery=delivery).count() == 11


def test_the_enqueued_tasks_prepare_the_whole_delivery(
    campaign, eleven, org, django_capture_on_commit_callbacks
):
    delivery, callbacks = started(campaign, org, django_capture_on_commit_callbacks)
    callbacks[0]()  # Celery runs eagerly in the unit tests
    delivery.refresh_from_db()
    assert (delivery.state, delivery.targeted) == ("prepared", 11)
    assert set(PreparationChunk.objects.values_list("done", "inserted")) == {(True, 3), (True, 2)}


def test_a_cancelled_preparation_stops_and_a_failing_chunk_fails_the_delivery(
    campaign, eleven, org, django_capture_on_commit_callbacks
):
    delivery, _ = started(campaign, org, django_capture_on_commit_callbacks)
    with mock.patch.object(preparation, "insert_messages", side_effect=RuntimeError("disk full")):
        assert preparation.run_chunk(chunk_ids(delivery)[0]) == 0
    delivery.refresh_from_db()
    assert delivery.state == "failed"
    assert delivery.error == "Preparation failed: RuntimeError: disk full"
    assert not Message.objects.filter(delivery=delivery).exists()  # the chunk rolled back

    other, _ = started(campaign, org, django_capture_on_commit_callbacks)
    from campaigns.delivery import sending

    sending.cancel(delivery=other, actor=org.marketer)
    for chunk_id in chunk_ids(other):
        assert preparation.run_chunk(chunk_id) == 0
    other.refresh_from_db()
    assert other.state == "cancelled" and not other.messages.exists()


def test_lost_chunk_tasks_are_enqueued_again_after_the_lease(
    campaign, eleven, org, settings, django_capture_on_commit_callbacks
):
    delivery, _ = started(campaign, org, django_capture_on_commit_callbacks)  # tasks lost
    first = chunk_ids(delivery)[0]
    preparation.run_chunk(first)
    assert preparation.recover_stalled() == 0  # within the lease: they may still be queued
    later = timezone.now() + timedelta(seconds=settings.DELIVERY_CLAIM_LEASE_SECONDS + 1)
    assert preparation.recover_stalled(now=later) == 3  # the undone ones, run eagerly here
    delivery.refresh_from_db()
    assert (delivery.state, delivery.targeted) == ("prepared", 11)
    assert preparation.recover_stalled(now=later) == 0


def test_a_preparation_whose_worker_died_after_its_last_chunk_is_finished_by_beat(
    campaign, eleven, org, django_capture_on_commit_callbacks
):
    delivery, _ = started(campaign, org, django_capture_on_commit_callbacks)
    for chunk_id in chunk_ids(delivery):
        preparation.prepare_chunk(chunk_id)  # the chunks, but not the end (the worker died)
    delivery.refresh_from_db()
    assert delivery.state == "preparing"
    assert preparation.recover_stalled() == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.targeted, delivery.exclusions) == (
        "prepared", 11, {"consent": 2}
    )  # fmt: skip
    assert preparation.recover_stalled() == 0


def workflow_with_delivery(campaign, **settings):
    from portal import services as portal_services
    from tests.campaigns.workflow import act, link

    query = act(campaign, "q", "query", conditions={})
    send = act(campaign, "send", "delivery", channel="email",
               subject="Hi {{ contact.first_name }}", text_body="x", **settings)  # fmt: skip
    link(campaign, query, send)
    link(campaign, send, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    return send


def test_a_run_stopped_while_its_delivery_is_prepared_sends_nothing(
    campaign, eleven, org, django_capture_on_commit_callbacks, mailoutbox, monkeypatch
):
    from campaigns.workflow import engine

    send = workflow_with_delivery(campaign)
    held = []  # the chunk tasks, held back until the run is stopped
    monkeypatch.setattr(preparation, "enqueue_preparation", lambda *args: held.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    delivery = Delivery.objects.get(run=run, activity=send)
    assert delivery.state == "preparing" and len(held) == 1

    engine.stop_run(run=run, actor=org.marketer)
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=True):
        preparation.enqueue_preparation(*held[0])
    delivery.refresh_from_db()
    assert delivery.state == "cancelled" and delivery.targeted == 11
    assert mailoutbox == [] and not delivery.messages.filter(status="sent").exists()


def test_a_delivery_approved_after_its_run_stopped_sends_nothing(
    campaign, eleven, org, django_capture_on_commit_callbacks, mailoutbox
):
    from approvals import services as approvals
    from approvals.models import ApprovalRequest
    from campaigns.workflow import engine

    send = workflow_with_delivery(campaign, requires_approval=True)
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    delivery = Delivery.objects.get(run=run, activity=send)
    assert delivery.state == "awaiting_approval"
    engine.stop_run(run=run, actor=org.marketer)
    request = ApprovalRequest.objects.for_object(delivery).get()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(request=request, actor=org.approver, approve=True)
    delivery.refresh_from_db()
    assert delivery.state == "cancelled"
    assert not delivery.messages.filter(status="sent").exists()
    assert not [m for m in mailoutbox if m.subject.startswith("Hi ")]
