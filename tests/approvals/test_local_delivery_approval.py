"""A child campaign's deliveries, when the parent asks for delivery approval, are decided by
the local entity's approvers (through the same email-link decision), not the central ones."""

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns import services as campaign_services
from campaigns.models import Campaign, Contact, Delivery
from packages import services as package_services
from packages.models import Package
from tests.approvals.conftest import emailed_link
from tests.campaigns.workflow import act, link
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def child_delivery(make_package, org, django_capture_on_commit_callbacks):
    """STORE_A's child of a parent whose delivery asks for approval, started: its delivery
    is prepared and awaits a decision."""
    for n in range(3):
        Contact.objects.create(
            external_id=f"A{n}", entity=org.store_a, email=f"a{n}@example.com", email_consent=True
        )
    Contact.objects.create(
        external_id="B0", entity=org.store_b, email="b0@example.com", email_consent=True
    )
    parent = CampaignFactory(name="Spring", collaborative_type="by_campaign", entity=org.hq)
    query = act(parent, "q", "query", conditions={})
    send = act(parent, "send", "delivery", channel="email", subject="Hi {{ contact.first_name }}",
               text_body="Hello", requires_approval=True)  # fmt: skip
    link(parent, query, send)
    link(parent, send, act(parent, "end", "end"))
    package = make_package(campaign=parent, audience=[org.store_a, org.store_b])
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    now = timezone.now()
    Package.objects.filter(pk=package.pk).update(
        registration_deadline=now - timedelta(days=1),
        execution_at=now - timedelta(hours=1),
        execution_until=now + timedelta(days=3),
    )
    child = Campaign.objects.get(order=order)
    campaign_services.run_campaign_transition(
        campaign=child, name="mark_ready", actor=org.operator_a
    )
    with django_capture_on_commit_callbacks(execute=True):
        campaign_services.start_campaign(campaign=child, actor=org.operator_a)
    delivery = Delivery.objects.get(campaign=child)
    return parent, child, delivery


def test_the_child_delivery_asks_the_local_approvers(child_delivery, org):
    _parent, _child, delivery = child_delivery
    assert delivery.state == "awaiting_approval"
    request = ApprovalRequest.objects.for_object(delivery).get()
    assert request.kind == "delivery"
    assert list(request.approvers.all()) == [org.approver_a]
    assert approvals.may_decide(request, org.approver_a)
    assert not approvals.may_decide(request, org.approver)  # the centre does not decide it
    assert not approvals.may_decide(request, org.operator_a)  # an operator has no say


def test_the_local_approver_decides_by_the_emailed_link_and_it_is_sent(
    child_delivery, org, client, django_capture_on_commit_callbacks, mailoutbox
):
    parent, child, delivery = child_delivery
    url = emailed_link(org.approver_a)
    assert client.get(url).status_code == 200  # opening decides nothing
    delivery.refresh_from_db()
    assert delivery.state == "awaiting_approval"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"decision": "approve", "comment": "Go"})
    assert response.status_code == 200
    request = ApprovalRequest.objects.for_object(delivery).get()
    assert (request.state, request.decided_by, request.decided_via) == (
        "approved",
        org.approver_a,
        "email",
    )
    delivery.refresh_from_db()
    assert delivery.state == "sent"
    assert sorted(m.to[0] for m in mailoutbox if m.subject.startswith("Hi")) == [
        "a0@example.com",
        "a1@example.com",
        "a2@example.com",
    ]
    row = campaign_services.children_overview(parent).get(pk=child.pk)
    assert (row.targeted, row.sent) == (3, 3)


def test_a_central_approver_cannot_decide_a_child_delivery(child_delivery, org):
    _parent, _child, delivery = child_delivery
    request = ApprovalRequest.objects.for_object(delivery).get()
    with pytest.raises(approvals.NotAnApprover):
        approvals.decide(request=request, actor=org.approver, approve=True)
    delivery.refresh_from_db()
    assert delivery.state == "awaiting_approval"


def test_the_parent_delivery_still_asks_the_central_approvers(
    org, django_capture_on_commit_callbacks
):
    from campaigns.workflow import engine
    from portal import services as portal_services

    Contact.objects.create(
        external_id="A0", entity=org.store_a, email="a0@example.com", email_consent=True
    )
    campaign = CampaignFactory(name="Central", kind="parent", collaborative_type="", entity=org.hq)
    query = act(campaign, "q", "query", conditions={})
    send = act(campaign, "send", "delivery", channel="email", subject="Hi", text_body="x",
               requires_approval=True)  # fmt: skip
    link(campaign, query, send)
    link(campaign, send, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    with django_capture_on_commit_callbacks(execute=True):
        engine.start_run(campaign=campaign, actor=org.marketer)
    request = ApprovalRequest.objects.for_object(Delivery.objects.get(campaign=campaign)).get()
    assert list(request.approvers.all()) == [org.approver]
