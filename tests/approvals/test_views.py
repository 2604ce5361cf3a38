from django.urls import reverse

from approvals.choices import RequestState
from packages.choices import OrderState


def test_the_inbox_lists_what_waits_for_me(submitted, org, client):
    _, request = submitted
    client.force_login(org.approver)
    body = client.get(reverse("approvals:inbox")).content.decode()
    assert reverse("approvals:request_detail", args=[request.pk]) in body
    client.force_login(org.operator_b)
    assert "Store A" not in client.get(reverse("approvals:inbox")).content.decode()


def test_deciding_from_the_portal(submitted, org, client):
    order, request = submitted
    client.force_login(org.approver)
    url = reverse("approvals:request_detail", args=[request.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"decision": "reject", "comment": "Wrong segment"}, follow=True)
    assert f"Rejected: “{request.title}”; recorded." in response.content.decode()
    order.refresh_from_db()
    assert order.state == OrderState.REJECTED


def test_a_non_approver_cannot_decide_from_the_portal(submitted, org, client):
    _, request = submitted
    url = reverse("approvals:request_detail", args=[request.pk])
    client.force_login(org.operator_a)  # may see the request of its entity, not decide it
    assert client.get(url).status_code == 200
    assert client.post(url, {"decision": "approve"}).status_code == 403
    client.force_login(org.operator_b)  # another entity's request: not even visible
    assert client.get(url).status_code == 404
    assert client.post(url, {"decision": "approve"}).status_code == 404
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_no_state_changes_on_get(submitted, org, client):
    _, request = submitted
    client.force_login(org.approver)
    client.get(reverse("approvals:request_detail", args=[request.pk]) + "?decision=approve")
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_admin_bulk_approve_asks_for_confirmation(submitted, org, client):
    order, request = submitted
    client.force_login(org.approver)
    url = reverse("admin:approvals_approvalrequest_changelist")
    data = {"action": "approve_selected", "_selected_action": [request.pk]}
    page = client.post(url, data)
    assert page.status_code == 200 and "Approve 1 request" in page.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    client.post(url, {**data, "confirm": "yes"})
    request.refresh_from_db()
    order.refresh_from_db()
    assert (request.state, request.decided_via) == ("approved", "admin")
    assert order.state == OrderState.APPROVED


def test_admin_bulk_reject_needs_a_comment(submitted, org, client):
    _, request = submitted
    client.force_login(org.approver)
    url = reverse("admin:approvals_approvalrequest_changelist")
    data = {"action": "reject_selected", "_selected_action": [request.pk], "confirm": "yes"}
    page = client.post(url, data)
    assert "Say why you reject" in page.content.decode()
    request.refresh_from_db()
    assert request.state == RequestState.PENDING
    client.post(url, {**data, "comment": "Not this quarter"})
    request.refresh_from_db()
    assert request.state == RequestState.REJECTED


def test_the_admin_shows_who_may_decide_now(submitted, org, client):
    from portal import services as portal_services
    from tests.factories import UserFactory

    _, request = submitted
    newcomer = UserFactory(username="newcomer")
    portal_services.add_membership(user=newcomer, entity=org.hq, role="central_approver")
    client.force_login(org.approver)
    page = client.get(reverse("admin:approvals_approvalrequest_change", args=[request.pk]))
    assert "Central approver of HQ: approver, newcomer" in page.content.decode()
