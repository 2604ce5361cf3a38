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
    assert "already rejected by" in response.content.decode()
    response = client.post(url, {"decision": "approve"})
    assert response.status_code == 409
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
