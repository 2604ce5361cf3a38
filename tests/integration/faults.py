"""The fault-injection suite's tools: an SMTP sink counting Message-IDs that can be stopped
and started again on its port, a delivery of N recipients, beat's recovery run from the test
every half second, and the checks every fault case ends with."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from email import message_from_bytes

from aiosmtpd.controller import Controller
from django.db import InterfaceError, OperationalError, connection, transaction

from campaigns.delivery import preparation, reports, sending
from campaigns.models import Contact, Delivery, Message
from campaigns.targeting import materialise, target_queryset
from tests.factories import CampaignFactory

LEASE = 2  # seconds: short, so that takeovers happen within the test
RECOVERY = 1
WINDOW = 4  # messages put in flight by one mark: several windows per chunk of 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sink:
    """An SMTP server that records each accepted message's Message-ID (after ``pause``
    seconds). ``stop``/``start`` take it down and bring it back on the same port."""

    def __init__(self, pause: float = 0.0, port: int | None = None) -> None:
        self.pause = pause
        self.port = port or free_port()
        self.received: list[str] = []
        self.bodies: list[str] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.pause:
            await asyncio.sleep(self.pause)
        self.received.append(message_from_bytes(envelope.original_content)["Message-ID"])
        self.bodies.append(envelope.original_content.decode(errors="replace"))
        return "250 OK"

    def start(self) -> Sink:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def env(self) -> dict[str, str]:
        return {"EMAIL_URL": f"smtp://127.0.0.1:{self.port}?timeout=5"}


def worker_env(**extra: str) -> dict[str, str]:
    return {
        "DELIVERY_CLAIM_LEASE_SECONDS": str(LEASE),
        "DELIVERY_RECOVERY_SECONDS": str(RECOVERY),
        "DELIVERY_CHUNK_SIZE": "10",
        "DELIVERY_RETRY_BASE_SECONDS": "1",
        "DELIVERY_IN_FLIGHT_WINDOW": str(WINDOW),
        **extra,
    }


def use_fault_settings(settings) -> None:
    """This process runs beat's recovery and cuts the chunks: the workers' settings."""
    settings.DELIVERY_CLAIM_LEASE_SECONDS = LEASE
    settings.DELIVERY_RECOVERY_SECONDS = RECOVERY
    settings.DELIVERY_CHUNK_SIZE = 10


def make_delivery(org, recipients: int, *, label: str = "Fault") -> Delivery:
    Contact.objects.bulk_create(
        [
            Contact(external_id=f"{label}{n}", first_name=f"Fay{n}",
                    email=f"{label.lower()}{n}@example.com", email_consent=True,
                    entity=org.store_a)
            for n in range(recipients)
        ]
    )  # fmt: skip
    campaign = CampaignFactory(name=label, kind="parent", collaborative_type="", entity=org.hq)
    materialise(target_queryset("contact", {}), dimension="contact", run_key=label, name="t")
    delivery = Delivery.objects.create(
        campaign=campaign, label=label, channel="email",
        subject="Hello {{ contact.first_name }}", text_body="Hi",
    )  # fmt: skip
    return preparation.prepare(delivery=delivery, run_key=label, table="t")


def send(delivery: Delivery) -> None:
    with transaction.atomic():
        sending.confirm(delivery=delivery, actor=None)  # chunk tasks enqueued on commit


def _query(function, default):
    """A query from the test process that survives a database restart."""
    try:
        return function()
    except (OperationalError, InterfaceError):
        connection.close()
        return default


def run_recovery_until(predicate, timeout: float, every: float = 0.5) -> bool:
    """Beat, here: recovery every ``every`` seconds until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _query(sending.recover_stalled, 0)
        if _query(predicate, False):
            return True
        time.sleep(every)
    return False


def state(delivery: Delivery) -> str:
    return Delivery.objects.get(pk=delivery.pk).state


def count(delivery: Delivery, status: str) -> int:
    return Message.objects.filter(delivery=delivery, status=status).count()


def message_ids(delivery: Delivery, status: str) -> set[str]:
    return {
        f"<d{delivery.pk}.m{pk}@127.0.0.1>"
        for pk in Message.objects.filter(delivery=delivery, status=status).values_list(
            "pk", flat=True
        )
    }


def check(delivery: Delivery, sink: Sink) -> reports.Figures:
    """What every fault case ends with: the delivery finished, no Message-ID twice at the
    sink, sent + in doubt + failed = targeted, and the report agrees with the sink."""
    time.sleep(0.3)  # the sink's last answers
    assert state(delivery) == "sent"
    mine = f"<d{delivery.pk}."
    received = Counter(mid for mid in sink.received if mid.startswith(mine))
    assert {mid: n for mid, n in received.items() if n > 1} == {}  # zero duplicates
    figures = reports.delivery_figures(delivery)
    assert figures.sent + figures.in_doubt + figures.failed == figures.targeted
    sent, doubtful = message_ids(delivery, "sent"), message_ids(delivery, "in_doubt")
    assert sent <= set(received)  # every message reported sent reached the sink
    assert set(received) - sent <= doubtful  # anything else there is reported in doubt
    assert not message_ids(delivery, "failed") & set(received)
    return figures
