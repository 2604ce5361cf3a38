"""Issue 16, items 5 and 6 for campaigns and deliveries: "Stop", "Send now" and "Cancel the
delivery" ask for a reason first (admin and portal); the reason is the audit entry's comment;
the success message says what happened."""

import pytest
from django.urls import reverse

from campaigns.models import Campaign
from portal.models import AuditLog
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_sending import prepared
from tests.factories import CampaignFactory


@pytest.fixture
def people(org):
    for n in range(6):
        person(org, f"P{n}", first_name=f"Pat{n}", entity=org.store_a if n < 4 else org.store_b)


@pytest.fixture
def child(org, campaign):
    return CampaignFactory(
        name="Spring — Store A", kind="child", collaborative_type="by_campaign",
        parent=campaign, entity=org.store_a,
    )  # fmt: skip


def test_portal_stop_asks_first_then_stops_with_the_reason(child, org, client):
    client.force_login(org.operator_a)
    detail = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    url = reverse("campaigns:action", args=[child.pk, "stop"])
    assert f'<a class="button danger" href="{url}">Stop…</a>' in detail
    page = client.get(url).content.decode()
    assert f"Stop the campaign “{child}”?" in page and 'name="reason"' in page
    assert "required" in client.post(url, {"reason": ""}).content.decode()
    child.refresh_from_db()
    assert child.state == "draft"
    response = client.post(url, {"reason": "Store closed for works"}, follow=True)
    child.refresh_from_db()
    assert child.state == "stopped"
    assert AuditLog.objects.for_object(child).get(action="stop").comment == "Store closed for works"
    assert f"Stopped; “{child}” is stopped." in response.content.decode()


def test_portal_stop_is_404_for_another_entity_and_refused_when_stopped(child, org, client):
    url = reverse("campaigns:action", args=[child.pk, "stop"])
    client.force_login(org.operator_b)
    assert client.get(url).status_code == 404
    assert client.post(url, {"reason": "x"}).status_code == 404
    child.stop()
    child.save()
    client.force_login(org.operator_a)
    response = client.get(url, follow=True)
    assert "“Stop…” is not available now." in response.content.decode()


def test_portal_mark_ready_says_what_happened(child, org, client):
    client.force_login(org.operator_a)
    url = reverse("campaigns:action", args=[child.pk, "mark_ready"])
    response = client.post(url, follow=True)
    assert f"Marked ready; “{child}” is ready and can be run." in response.content.decode()
    assert Campaign.objects.get(pk=child.pk).state == "ready"


def test_admin_stop_asks_for_a_reason_first(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("admin:campaigns_campaign_run", args=[campaign.pk, "stop"])
    change = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    assert f'<a href="{url}" class="transition-button confirm-first">Stop…</a>' in (
        change.content.decode()
    )
    page = client.get(url)
    assert page.status_code == 200 and "Stop the campaign" in page.content.decode()
    client.post(url)  # no reason: the page again
    campaign.refresh_from_db()
    assert campaign.state == "draft"
    client.post(url, {"reason": "Wrong season"})
    campaign.refresh_from_db()
    assert campaign.state == "stopped"
    assert AuditLog.objects.for_object(campaign).get(action="stop").comment == "Wrong season"


def test_portal_send_now_asks_first_and_says_how_many_were_sent(
    campaign, people, org, client, django_capture_on_commit_callbacks, mailoutbox
):
    delivery = prepared(campaign)
    client.force_login(org.marketer)
    url = reverse("campaigns:delivery_action", args=[delivery.pk, "send"])
    detail = client.get(reverse("campaigns:delivery", args=[delivery.pk])).content.decode()
    assert f'href="{url}">Send now…</a>' in detail
    page = client.get(url).content.decode()
    assert "Send “Spring” now?" in page and "6 messages by email go out now." in page
    client.post(url)  # the old one-click POST sends nothing
    delivery.refresh_from_db()
    assert delivery.state == "prepared" and not mailoutbox
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"reason": "Approved by phone"})
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(mailoutbox) == 6
    entry = AuditLog.objects.for_object(delivery).get(action="make_ready")
    assert entry.comment == "Approved by phone"
    shown = client.get(response["Location"]).content.decode()
    assert "Sending started; 6 messages to send." in shown


def test_portal_cancel_the_delivery_asks_first_and_counts_what_is_not_sent(
    campaign, people, org, client
):
    delivery = prepared(campaign)
    client.force_login(org.marketer)
    url = reverse("campaigns:delivery_action", args=[delivery.pk, "cancel"])
    page = client.get(url).content.decode()
    assert "Cancel the delivery “Spring”?" in page and "6 messages not yet sent" in page
    client.post(url, {"reason": ""})
    delivery.refresh_from_db()
    assert delivery.state == "prepared"
    response = client.post(url, {"reason": "Typo in the subject"}, follow=True)
    delivery.refresh_from_db()
    assert delivery.state == "cancelled"
    assert AuditLog.objects.for_object(delivery).get(action="cancel").comment == (
        "Typo in the subject"
    )
    assert "Cancelled; 6 messages will not be sent." in response.content.decode()


def test_delivery_confirmations_are_404_for_another_entity(campaign, people, org, client):
    delivery = prepared(campaign)
    client.force_login(org.operator_a)  # the campaign is headquarters'
    for action in ("send", "cancel"):
        url = reverse("campaigns:delivery_action", args=[delivery.pk, action])
        assert client.get(url).status_code == 404
        assert client.post(url, {"reason": "x"}).status_code == 404


def test_admin_send_and_cancel_ask_first(campaign, people, org, client, mailoutbox):
    delivery = prepared(campaign, requires_approval=True)
    client.force_login(org.marketer)
    run = "admin:campaigns_delivery_run"
    page = client.get(reverse(run, args=[delivery.pk, "send"])).content.decode()
    assert "Ask for approval to send “Spring”?" in page
    response = client.post(
        reverse(run, args=[delivery.pk, "send"]), {"reason": "Ready"}, follow=True
    )
    delivery.refresh_from_db()
    assert delivery.state == "awaiting_approval"
    assert "Approval asked from 1 approver; 6 messages will be sent once approved." in (
        response.content.decode()
    )
    client.post(reverse(run, args=[delivery.pk, "cancel"]))
    delivery.refresh_from_db()
    assert delivery.state == "awaiting_approval"
    client.post(reverse(run, args=[delivery.pk, "cancel"]), {"reason": "Too late now"})
    delivery.refresh_from_db()
    assert delivery.state == "cancelled"
