"""The fault test: a real Celery worker prepares a delivery (in chunk tasks) and is killed
(SIGKILL) in the middle of its send, a new one starts, and every message reaches the SMTP
sink exactly once."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from django.db import transaction

from campaigns.delivery import preparation, sending
from campaigns.models import Contact, Delivery, Message
from campaigns.targeting import materialise, target_queryset
from tests.factories import CampaignFactory
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
RECIPIENTS = 60


class Sink:
    """An SMTP server that records each accepted message (by Message-ID) after a short pause,
    so a killed client leaves a message unaccepted, never half-recorded."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.received: list[str] = []
        self.bodies: list[str] = []
        self.in_data = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.in_data.set()
        if self.pause:
            await asyncio.sleep(self.pause)  # cancelled if the client dies meanwhile
        message = message_from_bytes(envelope.original_content)
        self.received.append(message["Message-ID"])
        self.bodies.append(envelope.original_content.decode(errors="replace"))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sink():
    handler = Sink(pause=0.05)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def test_a_worker_killed_mid_send_never_sends_twice_and_never_loses_one(
    sink, start_worker, org, settings
):
    handler, port = sink
    settings.DELIVERY_CLAIM_LEASE_SECONDS = 2  # here (beat's recovery) as in the workers
    settings.DELIVERY_PREPARE_CHUNK_SIZE = 20  # the chunks are cut here, prepared there
    env = {
        "EMAIL_URL": f"smtp://127.0.0.1:{port}?timeout=10",
        "DELIVERY_CHUNK_SIZE": "25",
        "DELIVERY_CLAIM_LEASE_SECONDS": "2",
    }
    store = org.store_a
    Contact.objects.bulk_create(
        [
            Contact(external_id=f"F{n}", first_name=f"Fay{n}", email=f"f{n}@example.com",
                    email_consent=True, entity=store)
            for n in range(RECIPIENTS)
        ]
    )  # fmt: skip
    campaign = CampaignFactory(name="Fault", kind="parent", collaborative_type="", entity=org.hq)
    materialise(target_queryset("contact", {}), dimension="contact", run_key="f", name="t")
    delivery = Delivery.objects.create(
        campaign=campaign, label="Fault", channel="email",
        subject="Hello {{ contact.first_name }}", text_body="Hi",
    )  # fmt: skip
    first = start_worker(**env)
    # The worker prepares it too, in three chunk tasks.
    with transaction.atomic():
        preparation.prepare(delivery=delivery, run_key="f", table="t", background=True)
    assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).state == "prepared", 60), "".join(
        first.lines
    )
    assert delivery.preparation_chunks.filter(done=True).count() == 3
    with transaction.atomic():
        sending.confirm(delivery=delivery, actor=None)
    # Let it send a good part, then kill it while the sink holds a message unanswered.
    assert wait_for(lambda: len(handler.received) >= 20, 60), "".join(first.lines)
    handler.in_data.clear()
    assert handler.in_data.wait(10)
    first.kill()
    killed_at = len(handler.received)
    assert killed_at < RECIPIENTS
    stuck = Message.objects.filter(delivery=delivery, status="sending").count()
    assert stuck >= 1  # the chunk it was sending is claimed by a dead worker

    second = start_worker(**env)
    # Beat's recovery (run here): once the lease is over, the dead worker's chunk goes again.
    assert wait_for(lambda: sending.recover_stalled() > 0, 30), "".join(second.lines)
    assert wait_for(lambda: Delivery.objects.get(pk=delivery.pk).state == "sent", 60), "".join(
        second.lines
    )

    counts = Counter(handler.received)
    expected = {
        f"<d{delivery.pk}.m{pk}@127.0.0.1>"
        for pk in Message.objects.filter(delivery=delivery).values_list("pk", flat=True)
    }
    duplicates = {message_id: n for message_id, n in counts.items() if n > 1}
    assert duplicates == {}
    assert set(counts) == expected  # none lost
    assert Message.objects.filter(delivery=delivery, status="sent").count() == RECIPIENTS
