"""Engagement tracking: events, signed click redirects, the open pixel, machine flagging."""

import pytest

from campaigns.engagement.events import record_event
from campaigns.models import Delivery, Event, EventKind, Message
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_engagement import prepared


@pytest.fixture
def people(org):
    return [person(org, f"T{n}", first_name=f"Tess{n}") for n in range(3)]


def test_record_event_copies_the_message_delivery_and_entity_and_reads_kind_names(
    campaign, people, settings
):
    delivery = prepared(campaign)
    message = Message.objects.filter(delivery=delivery).first()
    event = record_event(message, "bounce_hard", detail="550 5.1.1 no such user", ip="192.0.2.1")
    event.refresh_from_db()
    assert (event.kind, event.delivery_id, event.entity_id) == (
        EventKind.BOUNCE_HARD,
        delivery.pk,
        message.entity_id,
    )
    assert event.ip is None  # no IP unless ENGAGEMENT_STORE_IP
    settings.ENGAGEMENT_STORE_IP = True
    assert record_event(message, EventKind.OPEN, ip="192.0.2.1").ip == "192.0.2.1"


def test_a_provider_event_is_recorded_once(campaign, people):
    message = Message.objects.filter(delivery=prepared(campaign)).first()
    assert record_event(message, "complaint", ref="sns-1") is not None
    assert record_event(message, "complaint", ref="sns-1") is None
    assert Event.objects.filter(kind=EventKind.COMPLAINT).count() == 1


def test_an_unknown_kind_is_refused(campaign, people):
    message = Message.objects.filter(delivery=prepared(campaign)).first()
    with pytest.raises(ValueError):
        record_event(message, "opened-twice")


def test_deleting_a_delivery_deletes_its_events(campaign, people):
    delivery = prepared(campaign)
    record_event(Message.objects.filter(delivery=delivery).first(), "delivered")
    Delivery.objects.filter(pk=delivery.pk).delete()
    assert not Event.objects.exists()
