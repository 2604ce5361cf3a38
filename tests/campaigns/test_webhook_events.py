"""Webhook events emitted by the delivery and engagement services (the outbox rows; their
sending is tested in tests/api/test_webhooks.py)."""

import json

import pytest

from api import webhooks
from api.models import WebhookDelivery
from campaigns.engagement import services as engagement
from campaigns.models import Message
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_engagement import prepared
from tests.campaigns.test_sending import send

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(org):
    return [person(org, f"P{n}", first_name=f"Pat{n}") for n in range(2)]


@pytest.fixture
def endpoint(admin_user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    return webhooks.create_endpoint(
        actor=admin_user,
        name="CRM",
        url="http://127.0.0.1:9/hooks",
        events=["delivery.sent", "contact.unsubscribed"],
        active=False,  # rows are written; their sending is not what this file tests
    )


def test_a_sent_delivery_emits_delivery_sent_with_its_figures(
    campaign, people, org, endpoint, django_capture_on_commit_callbacks, mailoutbox
):
    endpoint.active = True
    endpoint.save()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webhooks, "enqueue_deliveries", lambda ids: None)
        delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
    rows = list(WebhookDelivery.objects.filter(event="delivery.sent"))
    assert len(rows) == 1
    data = json.loads(rows[0].body)["data"]["delivery"]
    assert data["id"] == delivery.pk and data["campaign"] == campaign.pk
    assert data["state"] == "sent" and data["channel"] == "email"
    assert data["figures"]["targeted"] == data["figures"]["sent"] == 2


def test_an_unsubscribe_emits_once(campaign, people, org, endpoint):
    endpoint.active = True
    endpoint.save()
    delivery = prepared(campaign)
    message = Message.objects.filter(delivery=delivery).first()
    assert engagement.unsubscribe(message=message, source="link")
    assert not engagement.unsubscribe(message=message, source="link")  # already out
    rows = list(WebhookDelivery.objects.filter(event="contact.unsubscribed"))
    assert len(rows) == 1
    data = json.loads(rows[0].body)["data"]
    assert data["contact"]["external_id"] == message.contact.external_id
    assert data["channel"] == "email" and data["message"] == message.pk


def test_a_matched_bounce_and_a_complaint_emit_their_events(campaign, people, admin_user, settings):
    from campaigns.engagement import bounces
    from campaigns.models import Delivery

    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    webhooks.create_endpoint(
        actor=admin_user, name="CRM", url="http://127.0.0.1:9/hooks",
        events=["message.bounced", "message.complained"], active=True,
    )  # fmt: skip
    delivery = Delivery.objects.create(campaign=campaign, label="Spring", channel="email")
    messages = [
        Message.objects.create(delivery=delivery, contact=contact, secondary_id=n,
                               channel="email", address=contact.email, status="sent")
        for n, contact in enumerate(people)
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webhooks, "enqueue_deliveries", lambda ids: None)
        for n, (message, kind) in enumerate(
            zip(messages, ["bounce_hard", "complaint"], strict=True)
        ):
            report = bounces.Report(
                provider="ses", event_id=f"e{n}", kind=kind, recipient=message.address,
                message_id=f"<d{delivery.pk}.m{message.pk}@example.com>",
            )  # fmt: skip
            bounces.record(report)
            bounces.record(report)  # a replay emits nothing more
        bounces.record(bounces.Report(provider="ses", event_id="lost", kind="bounce_hard",
                                      recipient="nobody@example.com"))  # fmt: skip
    rows = {row.event: json.loads(row.body) for row in WebhookDelivery.objects.all()}
    assert set(rows) == {"message.bounced", "message.complained"}
    assert rows["message.bounced"]["data"]["message"] == messages[0].pk
    assert rows["message.complained"]["data"]["kind"] == "complaint"


def test_delivery_sent_is_emitted_once_when_in_doubt_messages_are_sent_again(
    campaign, people, org, endpoint, django_capture_on_commit_callbacks, mailoutbox
):
    from campaigns.delivery import sending
    from campaigns.models import Delivery, MessageStatus

    endpoint.active = True
    endpoint.save()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(webhooks, "enqueue_deliveries", lambda ids: None)
        delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
        assert WebhookDelivery.objects.filter(event="delivery.sent").count() == 1
        # A worker died after the provider call: in doubt; a central user sends it again,
        # and the delivery finishes a second time.
        Message.objects.filter(delivery=delivery).update(status=MessageStatus.IN_DOUBT)
        with django_capture_on_commit_callbacks(execute=True):
            assert sending.resend_in_doubt(delivery=delivery, actor=org.marketer) == 2
    assert Delivery.objects.get(pk=delivery.pk).state == "sent"
    assert Message.objects.filter(delivery=delivery, status=MessageStatus.SENT).count() == 2
    rows = list(WebhookDelivery.objects.filter(event="delivery.sent"))
    assert len(rows) == 1  # one event per delivery and endpoint, however often it finishes
