"""Finding 8: proofs (test sends with real contacts' data) go only to allowed addresses, a
few per request and a bounded number per user and day."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from campaigns.delivery import sending
from campaigns.models import Contact, Proof
from portal.exceptions import DomainError
from tests.factories import CampaignFactory


@pytest.fixture
def store_delivery(org, prepared):
    """A prepared email delivery of STORE_A's own campaign, with 25 recipients."""
    for n in range(25):
        Contact.objects.create(external_id=f"C{n}", first_name=f"Real{n}", entity=org.store_a,
                               email=f"c{n}@customer.example", email_consent=True)  # fmt: skip
    campaign = CampaignFactory(entity=org.store_a, kind="parent", collaborative_type="")
    return prepared(campaign)


def post_proofs(client, delivery, addresses, sample="20"):
    return client.post(
        reverse("campaigns:delivery_action", args=[delivery.pk, "proof"]),
        {"addresses": "\n".join(addresses), "sample": sample},
        follow=True,
    )


def test_one_post_cannot_send_proofs_to_fifty_outside_addresses(
    store_delivery, org, client, mailoutbox, django_capture_on_commit_callbacks
):
    client.force_login(org.operator_a)
    outside = [f"x{n}@evil.example" for n in range(50)]
    with django_capture_on_commit_callbacks(execute=True):
        page = post_proofs(client, store_delivery, outside).content.decode()
    assert "at most 5 test addresses" in page
    with django_capture_on_commit_callbacks(execute=True):
        page = post_proofs(client, store_delivery, outside[:1]).content.decode()
    assert "x0@evil.example” may not receive proofs" in page
    assert Proof.objects.count() == 0 and mailoutbox == []


def test_proofs_go_to_portal_users_own_addresses(
    store_delivery, org, client, mailoutbox, django_capture_on_commit_callbacks
):
    client.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        page = post_proofs(
            client, store_delivery, ["OPERATOR_A@example.com", "approver_a@example.com"], sample="2"
        )
    assert "4 proofs on their way." in page.content.decode()
    assert (
        sorted(m.to[0] for m in mailoutbox)
        == ["OPERATOR_A@example.com"] * 2 + ["approver_a@example.com"] * 2
    )


def test_configured_domains_and_addresses_are_allowed_too(store_delivery, org, settings):
    with pytest.raises(DomainError, match="may not receive proofs"):
        sending.request_proofs(delivery=store_delivery, addresses=["qa@agency.example"],
                               actor=org.operator_a)  # fmt: skip
    settings.DELIVERY_PROOF_DOMAINS = ["agency.example"]
    settings.DELIVERY_PROOF_ADDRESSES = ["printer@press.example"]
    proofs = sending.request_proofs(
        delivery=store_delivery, addresses=["QA@Agency.example", "printer@press.example"],
        actor=org.operator_a,
    )  # fmt: skip
    assert len(proofs) == 2
    with pytest.raises(DomainError) as refused:
        sending.request_proofs(delivery=store_delivery, addresses=["qa@agency.example.evil.com",
                               "not an address"], actor=org.operator_a)  # fmt: skip
    assert len(refused.value.problems) == 2
    assert "not a valid email address" in refused.value.problems[1]


def test_sms_proofs_go_only_to_listed_test_numbers(org, prepared, settings):
    Contact.objects.create(external_id="S1", entity=org.store_a, phone="+33600000001",
                           sms_consent=True)  # fmt: skip
    campaign = CampaignFactory(entity=org.store_a, kind="parent", collaborative_type="")
    sms = prepared(campaign, channel="sms", text_body="Hi")
    with pytest.raises(DomainError, match="not a test address"):
        sending.request_proofs(delivery=sms, addresses=["+33699999999"], actor=org.operator_a)
    settings.DELIVERY_PROOF_ADDRESSES = ["+33699999999"]
    assert len(sending.request_proofs(delivery=sms, addresses=["+33699999999"],
                                      actor=org.operator_a)) == 1  # fmt: skip


def test_proofs_per_user_and_day_are_limited(store_delivery, org, settings):
    settings.DELIVERY_PROOFS_PER_DAY = 5
    mine = {"delivery": store_delivery, "addresses": ["operator_a@example.com"],
            "actor": org.operator_a}  # fmt: skip
    assert len(sending.request_proofs(**mine, sample=3)) == 3
    with pytest.raises(DomainError, match="At most 5 proofs per day"):
        sending.request_proofs(**mine, sample=3)
    assert Proof.objects.count() == 3  # nothing half-written
    assert len(sending.request_proofs(**mine, sample=2)) == 2  # up to the limit
    # Another user has a quota of their own; a day later the first one has theirs back.
    assert len(sending.request_proofs(**{**mine, "actor": org.marketer}, sample=5)) == 5
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert len(sending.request_proofs(**mine, sample=5)) == 5
