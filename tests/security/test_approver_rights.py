"""Issue 14, finding 2 (rest) and finding 6: the right to decide an approval request comes
from the approvers' roles as they are when they decide or open their inbox — not from the
list of approvers copied when the request was opened, nor from holding an emailed link."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import services
from approvals.choices import RequestState
from approvals.models import ApprovalRequest
from packages import services as package_services
from portal import services as portal_services
from portal.choices import Role
from portal.models import AuditLog, Membership, Notification
from tests.factories import UserFactory

APPROVAL_LINK = re.compile(r"https?://[^/\s]+(/approvals/link/[^/\s]+/)")


@pytest.fixture
def request_(make_package, form_campaign, org, valid_values):
    """A submitted order's pending approval request; its approver is the central approver."""
    package = make_package(campaign=form_campaign)
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    ).order
    return ApprovalRequest.objects.for_object(order).get()


def sent_link(user) -> str:
    """Send the user's approval email and return the link path it carries."""
    notification = Notification.objects.filter(recipient=user, kind="approval_request").get()
    services_outcome = portal_services.deliver_notification(notification_id=notification.pk)
    assert services_outcome.status == "sent"
    return APPROVAL_LINK.search(mail.outbox[-1].body).group(1)


def remove_membership(user) -> None:
    Membership.objects.get(user=user).delete()


def demote(user) -> None:
    membership = Membership.objects.get(user=user)
    membership.role = Role.CENTRAL_MARKETER
    membership.save()


def deactivate(user) -> None:
    user.is_active = False
    user.save()


def inbox_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.get(reverse("approvals:inbox")).content.decode()


def test_a_removed_approvers_old_link_is_refused_with_an_audit_entry(request_, org):
    path = sent_link(org.approver)
    remove_membership(org.approver)
    client = Client()
    page = client.get(path)
    assert page.status_code == 403
    assert "no longer holds the right to decide" in page.content.decode()
    response = client.post(path, {"decision": "reject", "comment": "Too late for you"})
    assert response.status_code == 403
    assert "no longer holds the right to decide" in response.content.decode()
    request_.refresh_from_db()
    assert request_.state == RequestState.PENDING
    refused = AuditLog.objects.for_object(request_).filter(action="link_refused")
    assert refused.filter(actor=org.approver, extra__reason="no_right", extra__method="POST")


@pytest.mark.parametrize("lose_the_right", [remove_membership, demote, deactivate])
def test_an_approver_who_lost_the_right_can_no_longer_decide(request_, org, lose_the_right):
    lose_the_right(org.approver)
    org.approver.refresh_from_db()
    assert not services.pending_for(org.approver).exists()
    with pytest.raises(PermissionDenied):
        services.decide(request=request_, actor=org.approver, approve=True)
    request_.refresh_from_db()
    assert request_.state == RequestState.PENDING
    assert AuditLog.objects.for_object(request_).filter(
        action="decision_refused", actor=org.approver
    )


def test_a_removed_approver_no_longer_sees_the_request_in_the_inbox(request_, org):
    detail = reverse("approvals:request_detail", args=[request_.pk])
    assert detail in inbox_of(org.approver)
    remove_membership(org.approver)
    assert detail not in inbox_of(org.approver)


def test_an_approver_added_later_sees_the_request_and_decides(request_, org):
    newcomer = UserFactory(username="newcomer")
    portal_services.add_membership(user=newcomer, entity=org.hq, role=Role.CENTRAL_APPROVER)
    detail = reverse("approvals:request_detail", args=[request_.pk])
    assert detail in inbox_of(newcomer)
    client = Client()
    client.force_login(newcomer)
    response = client.post(detail, {"decision": "approve", "comment": "Welcome aboard"})
    assert response.status_code == 302
    request_.refresh_from_db()
    assert (request_.state, request_.decided_by) == (RequestState.APPROVED, newcomer)


def test_reminders_follow_the_current_approvers(request_, org):
    newcomer = UserFactory(username="newcomer")
    portal_services.add_membership(user=newcomer, entity=org.hq, role=Role.CENTRAL_APPROVER)
    remove_membership(org.approver)
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert services.send_reminders() == 1
    (reminder,) = Notification.objects.filter(kind="approval_reminder")
    assert reminder.recipient == newcomer
    portal_services.deliver_notification(notification_id=reminder.pk)
    path = APPROVAL_LINK.search(mail.outbox[-1].body).group(1)
    Client().post(path, {"decision": "approve"})
    request_.refresh_from_db()
    assert (request_.state, request_.decided_by) == (RequestState.APPROVED, newcomer)


def test_an_approval_email_is_not_sent_to_an_approver_who_lost_the_right(request_, org):
    remove_membership(org.approver)
    notification = Notification.objects.get(recipient=org.approver, kind="approval_request")
    assert portal_services.deliver_notification(notification_id=notification.pk).status == (
        "failed"
    )
    assert mail.outbox == []


def test_a_decision_that_comes_second_is_journalled(request_, org):
    second = UserFactory(username="approver2")
    portal_services.add_membership(user=second, entity=org.hq, role=Role.CENTRAL_APPROVER)
    services.decide(request=request_, actor=org.approver, approve=True)
    with pytest.raises(services.AlreadyDecided):
        services.decide(request=request_, actor=second, approve=False, comment="No")
    lost = AuditLog.objects.for_object(request_).get(action="decision_lost")
    assert lost.actor == second
    assert "already approved by" in lost.comment
    assert lost.extra == {"wanted": "reject", "via": "portal"}


def test_a_decision_refused_in_the_portal_is_journalled(request_, org):
    client = Client()
    client.force_login(org.operator_a)  # sees its entity's request, may not decide it
    url = reverse("approvals:request_detail", args=[request_.pk])
    assert client.post(url, {"decision": "approve"}).status_code == 403
    request_.refresh_from_db()
    assert request_.state == RequestState.PENDING
    assert AuditLog.objects.for_object(request_).filter(
        action="decision_refused", actor=org.operator_a
    )
