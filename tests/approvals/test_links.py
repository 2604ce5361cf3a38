from datetime import timedelta

import time_machine
from django.test import Client
from django.utils import timezone

from approvals import services
from approvals.choices import RequestState
from approvals.models import ApprovalLink
from packages.choices import OrderState
from portal.models import AuditLog
from tests.approvals.conftest import emailed_link


def test_opening_the_link_shows_the_request_and_decides_nothing(submitted, org, client):
    _, request = submitted
    response = client.get(emailed_link(org.approver))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Free coffee" in body and "Confirm my decision" in body
    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    assert ApprovalLink.objects.get().used_at is None


def test_the_decision_is_a_post_from_the_link(submitted, org, client):
    order, request = submitted
    url = emailed_link(org.approver)
    response = client.post(url, {"decision": "approve", "comment": "Nice"})
    assert response.status_code == 200
    assert "approved" in response.content.decode()
    request.refresh_from_db()
    order.refresh_from_db()
    assert (request.state, request.decided_via, request.decided_by) == (
        "approved",
        "email",
        org.approver,
    )
    assert order.state == OrderState.APPROVED


def test_a_link_works_once(submitted, org, client):
    _, request = submitted
    url = emailed_link(org.approver)
    client.post(url, {"decision": "approve"})
    response = client.post(url, {"decision": "reject", "comment": "changed my mind"})
    assert response.status_code == 410
    assert "already used" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED
    assert AuditLog.objects.for_object(request).filter(action="link_refused").exists()


def test_a_tampered_link_is_refused(submitted, org, client):
    _, request = submitted
    url = emailed_link(org.approver)
    tampered = url[:-6] + ("A" if url[-6] != "A" else "B") + url[-5:]
    for method in (client.get, client.post):
        response = method(tampered, {"decision": "approve"})
        assert response.status_code == 400
        assert "not valid" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_an_expired_link_is_refused(submitted, org, client):
    _, request = submitted
    url = emailed_link(org.approver)
    with time_machine.travel(request.deadline + timedelta(minutes=1)):
        response = client.post(url, {"decision": "approve"})
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_a_very_old_signature_is_refused(submitted, org, client, settings):
    url = emailed_link(org.approver)
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        response = client.get(url)
    assert response.status_code == 410


def test_a_link_to_a_decided_request_says_who_decided(submitted, org, client):
    _, request = submitted
    url = emailed_link(org.approver)
    services.decide(request=request, actor=org.approver, approve=False, comment="No budget")
    response = client.get(url)
    body = response.content.decode()
    assert "This request no longer waits for a decision." in body
    assert "<strong>Rejected</strong> by " in body and "No budget" in body
    response = client.post(url, {"decision": "approve"})
    assert response.status_code == 409
    assert "Your decision was not recorded" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.REJECTED


def test_rejecting_by_link_needs_a_comment(submitted, org, client):
    _, request = submitted
    response = client.post(emailed_link(org.approver), {"decision": "reject", "comment": ""})
    assert response.status_code == 200
    assert "Say why you reject" in response.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_the_link_post_needs_the_csrf_token(submitted, org):
    _, request = submitted
    client = Client(enforce_csrf_checks=True)
    response = client.post(emailed_link(org.approver), {"decision": "approve"})
    assert response.status_code == 403
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_the_link_form_carries_a_csrf_token_that_works(submitted, org):
    import re

    _, request = submitted
    client = Client(enforce_csrf_checks=True)
    url = emailed_link(org.approver)
    page = client.get(url).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    client.post(url, {"decision": "approve", "csrfmiddlewaretoken": token})
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED


def next_links(body, order, request):
    from django.urls import reverse

    return [
        f'href="{reverse("packages:order_detail", args=[order.pk])}">Open the order</a>' in body,
        f'href="{reverse("approvals:request_detail", args=[request.pk])}">Open the request</a>'
        in body,
        f'href="{reverse("approvals:inbox")}">Your approvals</a>' in body,
    ]


def test_a_decision_that_loses_the_race_shows_the_state_after_it(
    submitted, org, client, monkeypatch
):
    from portal.choices import Role
    from portal.services import add_membership
    from tests.factories import UserFactory

    order, request = submitted
    url = emailed_link(org.approver)
    rival = UserFactory(username="rival", first_name="Rita", last_name="Rival")
    add_membership(user=rival, entity=org.hq, role=Role.CENTRAL_APPROVER)
    original = services.decide_by_link

    def overtaken(**kwargs):  # the rival's decision commits between the page's check and ours
        services.decide(request=request, actor=rival, approve=False, comment="Over budget")
        return original(**kwargs)

    monkeypatch.setattr(services, "decide_by_link", overtaken)
    response = client.post(url, {"decision": "approve", "comment": ""})
    body = response.content.decode()
    assert response.status_code == 409
    assert "Your decision was not recorded: another decision came first." in body
    assert "<strong>Rejected</strong> by Rita Rival on " in body and "(portal)" in body
    assert "Over budget" in body and "pending" not in body.lower()
    assert next_links(body, order, request) == [True, True, True]
    request.refresh_from_db()
    assert (request.state, request.decided_by) == ("rejected", rival)
    assert AuditLog.objects.for_object(request).filter(action="decision_lost").count() == 1


def test_a_used_link_reopened_says_who_decided(submitted, org, client):
    order, request = submitted
    url = emailed_link(org.approver)
    client.post(url, {"decision": "approve", "comment": "Go"})
    response = client.get(url)
    body = response.content.decode()
    assert response.status_code == 410
    assert "This approval link was already used on " in body
    name = org.approver.get_full_name() or org.approver.username
    assert f"<strong>Approved</strong> by {name} on " in body and "(email link)" in body
    assert "Go" in body and next_links(body, order, request) == [True, True, True]


def test_the_thank_you_page_links_to_the_order_and_the_inbox(submitted, org, client):
    order, request = submitted
    response = client.post(emailed_link(org.approver), {"decision": "approve", "comment": "Ok"})
    body = response.content.decode()
    assert "Thank you: approved" in body
    assert next_links(body, order, request) == [True, True, True]
