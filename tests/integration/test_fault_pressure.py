"""Fault: two deliveries under one pressure rule (1 message per 7 days) are prepared, then
started at the same moment from two web threads and sent by two real Celery workers to an
SMTP sink. Each start is held open for a while after it counted (a slow start on a big
delivery), so that, without the lock that serialises starts, both would count nothing of the
other and the 100 contacts they share would get two messages each."""

from __future__ import annotations

from collections import Counter
from email import message_from_string

import pytest

from campaigns.delivery import preparation, reports
from campaigns.models import Contact, Delivery, Typology
from campaigns.targeting import materialise, target_queryset
from tests.factories import CampaignFactory
from tests.integration.conftest import wait_for
from tests.integration.faults import Sink
from tests.support import confirm_at_the_same_moment

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ONE_A_WEEK = [{"rule": "pressure", "max": 1, "days": 7}]
AUDIENCES = {
    "First": {"field": "language", "op": "in", "value": ["fr", "en"]},  # C0-C149
    "Second": {"field": "language", "op": "in", "value": ["en", "de"]},  # C50-C199
}


@pytest.fixture
def smtp_sink():
    sink = Sink().start()
    yield sink, sink.port
    sink.stop()


def test_two_deliveries_started_at_the_same_moment_never_exceed_the_pressure_rule(
    smtp_sink, start_worker, org, monkeypatch
):
    handler, port = smtp_sink
    env = {"EMAIL_URL": f"smtp://127.0.0.1:{port}?timeout=10", "DELIVERY_CHUNK_SIZE": "20"}
    Contact.objects.bulk_create(
        [Contact(external_id=f"C{n}", email=f"c{n}@example.com", email_consent=True,
                 entity=org.store_a, language="fr" if n < 50 else "en" if n < 150 else "de")
         for n in range(200)]
    )  # fmt: skip
    campaign = CampaignFactory(name="Pressure", kind="parent", collaborative_type="",
                               entity=org.hq)  # fmt: skip
    rules = Typology.objects.create(name="One a week", entity=org.hq, rules=ONE_A_WEEK)
    deliveries = []
    for label, conditions in AUDIENCES.items():
        run_key = label.lower()
        materialise(target_queryset("contact", conditions), dimension="contact",
                    run_key=run_key, name="t")  # fmt: skip
        delivery = Delivery.objects.create(
            campaign=campaign, label=label, channel="email", typology=rules,
            subject=label + " {{ contact.external_id }}", text_body="Hello",
        )  # fmt: skip
        deliveries.append(preparation.prepare(delivery=delivery, run_key=run_key, table="t"))
    assert [d.exclusions for d in deliveries] == [{"pressure": 0}] * 2  # neither sent yet
    start_worker(**env)
    start_worker(**env)

    errors = confirm_at_the_same_moment(deliveries, monkeypatch)
    assert errors == []
    done = wait_for(
        lambda: set(Delivery.objects.values_list("state", flat=True)) == {"sent"}, timeout=90
    )
    assert done, list(Delivery.objects.values_list("label", "state"))

    received = Counter(handler.received)
    assert {mid: n for mid, n in received.items() if n > 1} == {}  # no duplicate
    per_contact = Counter(message_from_string(body)["To"] for body in handler.bodies)
    assert len(per_contact) == 200 and max(per_contact.values()) == 1  # none over the rule
    total_excluded = 0
    for delivery in deliveries:
        figures = reports.delivery_figures(delivery)
        at_sink = sum(1 for mid in received if mid.startswith(f"<d{delivery.pk}."))
        assert figures.sent == at_sink  # the report agrees with the sink
        assert figures.sent + figures.failed + figures.excluded == figures.targeted == 150
        total_excluded += figures.by_rule.get("pressure", 0)
    assert total_excluded == 100  # the second to start excluded the shared contacts
