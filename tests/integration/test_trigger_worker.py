"""A real worker listening on the ``priority`` queue alone sends an API-triggered message
within seconds of the POST: the trigger's send goes to that queue, not the batch one."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from rest_framework.test import APIClient

from api.services import create_token
from campaigns import triggers
from campaigns.models import Contact, Message, MessageStatus, TriggerDefinition
from tests.integration.conftest import ROOT, Worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class PriorityWorker(Worker):
    """A worker consuming the ``priority`` queue only."""

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo",
             "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "-Q", "priority"],
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


def test_a_priority_worker_sends_a_trigger_within_seconds(org, start_worker, tmp_path):
    # start_worker's environment (database, broker, file mail), with a priority-only worker
    probe = start_worker()
    probe.stop()
    worker = PriorityWorker(probe.env).start()
    try:
        definition = TriggerDefinition(
            name="Receipt", entity=org.hq, channel="email", kind="transactional",
            subject="Receipt {{ payload.order_id }}", text_body="Total {{ payload.total }}",
            payload_schema={"type": "object", "required": ["order_id"]},
        )  # fmt: skip
        definition.full_clean(exclude=["state"])
        definition.save()
        definition = triggers.publish(definition=definition, actor=org.marketer)
        alice = Contact.objects.create(
            entity=org.store_a, external_id="C-A1", email="alice@example.com"
        )
        client = APIClient()
        key = create_token(user=org.operator_a, name="shop", scopes=["trigger"]).key
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        started = time.monotonic()
        response = client.post(
            f"/api/v1/triggers/{definition.key}/",
            {"recipient": {"contact_id": alice.pk}, "payload": {"order_id": "A-7", "total": 12}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="A-7",
        )
        assert response.status_code == 202, response.json()
        message_id = response.json()["message_id"]
        sent = wait_for(
            lambda: Message.objects.get(pk=message_id).status == MessageStatus.SENT, timeout=20
        )
        assert sent, "".join(worker.lines)
        assert time.monotonic() - started < 10
        mails = list((tmp_path / "mail").iterdir())
        assert len(mails) == 1 and "Receipt A-7" in mails[0].read_text()
    finally:
        worker.stop()
