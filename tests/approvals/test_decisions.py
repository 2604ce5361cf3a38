import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.utils import timezone

from approvals import services
from approvals.choices import RequestState
from approvals.models import ApprovalRequest
from campaigns.models import Campaign, ScheduledRun
from packages.choices import OrderState
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification


def test_approving_approves_the_order_and_tells_the_entity(submitted, org):
    order, request = submitted
    services.decide(request=request, actor=org.approver, approve=True, comment="Go!")
    order.refresh_from_db()
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED
    assert (request.decided_by, request.decision_comment) == (org.approver, "Go!")
    assert order.state == OrderState.APPROVED
    assert order.decided_by == org.approver
    note = Notification.objects.filter(kind="order_decided", recipient=org.operator_a).get()
    assert "approved" in note.subject
    assert ScheduledRun.objects.filter(order=order).count() == 1  # by form: the parent's run


def test_rejecting_needs_a_comment_and_sends_it_back(submitted, org):
    order, request = submitted
    with pytest.raises(DomainError, match="Say why"):
        services.decide(request=request, actor=org.approver, approve=False, comment="  ")
    services.decide(request=request, actor=org.approver, approve=False, comment="Too generous")
    order.refresh_from_db()
    assert order.state == OrderState.REJECTED
    assert order.decision_comment == "Too generous"
    note = Notification.objects.get(kind="order_decided", recipient=org.operator_a)
    assert "Too generous" in note.body_text and "rejected" in note.subject


def test_the_decision_is_in_the_journal(submitted, org):
    order, request = submitted
    services.decide(request=request, actor=org.approver, approve=True)
    assert AuditLog.objects.for_object(request).filter(action="approve", actor=org.approver)
    assert AuditLog.objects.for_object(order).filter(
        action="approve", from_state="submitted", to_state="approved"
    )


def test_a_second_decision_is_refused_and_names_the_first(submitted, org):
    order, request = submitted
    services.decide(request=request, actor=org.approver, approve=True)
    with pytest.raises(services.AlreadyDecided, match=r"already approved by .* on"):
        services.decide(request=request, actor=org.approver, approve=False, comment="No")
    order.refresh_from_db()
    assert order.state == OrderState.APPROVED


def test_someone_who_is_not_an_approver_cannot_decide(submitted, org):
    _, request = submitted
    for user in (org.operator_a, org.marketer, org.operator_b):
        with pytest.raises(PermissionDenied):
            services.decide(request=request, actor=user, approve=True)
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_an_approver_added_later_may_decide(submitted, org):
    from portal import services as portal_services
    from tests.factories import UserFactory

    newcomer = UserFactory(username="newcomer")
    portal_services.add_membership(user=newcomer, entity=org.hq, role="central_approver")
    _, request = submitted
    services.decide(request=request, actor=newcomer, approve=True)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_decisions_first_one_wins(org, make_package, form_campaign, valid_values):
    from packages import services as package_services
    from portal import services as portal_services
    from tests.factories import UserFactory

    second = UserFactory(username="approver2")
    portal_services.add_membership(user=second, entity=org.hq, role="central_approver")
    package = make_package("by_campaign")
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    request = ApprovalRequest.objects.for_object(order).get()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(user, approve):
        try:
            barrier.wait(timeout=10)
            services.decide(
                request=request, actor=user, approve=approve, comment="" if approve else "No"
            )
            outcomes.append("won")
        except services.AlreadyDecided:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=decide, args=(org.approver, True)),
        threading.Thread(target=decide, args=(second, False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["refused", "won"]
    request.refresh_from_db()
    order.refresh_from_db()
    assert order.state == {"approved": "approved", "rejected": "rejected"}[request.state]
    assert (
        AuditLog.objects.for_object(request).filter(action__in=["approve", "reject"]).count() == 1
    )
    assert Campaign.objects.filter(order=order).count() == (1 if order.state == "approved" else 0)


def test_reminders_go_to_approvers_who_have_not_decided(submitted, org):
    assert services.send_reminders() == 0
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert services.send_reminders() == 1
        assert services.send_reminders() == 0  # not twice in the same interval
    with time_machine.travel(timezone.now() + timedelta(hours=50)):
        assert services.send_reminders() == 1
    reminders = Notification.objects.filter(kind="approval_reminder", recipient=org.approver)
    assert reminders.count() == 2
    assert "/approvals/link/" in reminders.first().body_text


def test_a_request_past_its_deadline_expires_and_tells_the_requester(submitted, org):
    order, request = submitted
    with time_machine.travel(request.deadline + timedelta(minutes=1)):
        assert services.send_reminders() == 0
        assert services.expire_overdue() == {"expired": 1, "approved": 0}
    request.refresh_from_db()
    order.refresh_from_db()
    assert request.state == RequestState.EXPIRED
    assert order.state == OrderState.SUBMITTED  # stays undecided
    assert Notification.objects.filter(kind="order_expired", recipient=org.operator_a).exists()
    with pytest.raises(services.AlreadyDecided, match="expired"):
        services.decide(request=request, actor=org.approver, approve=True)


def test_the_package_may_approve_automatically_at_the_deadline(make_package, org):
    from packages import services as package_services

    package = make_package("by_campaign", approval_expiry_default="approve", approval_days=1)
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=5)):
        assert services.expire_overdue() == {"expired": 0, "approved": 1}
    order.refresh_from_db()
    assert order.state == OrderState.APPROVED
    assert Campaign.objects.filter(order=order, kind="child").exists()


def test_the_approval_deadline_follows_the_package(make_package, org):
    from packages import services as package_services

    package = make_package(approval_days=5)
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    request = ApprovalRequest.objects.for_object(order).get()
    assert timedelta(days=4, hours=23) < request.deadline - timezone.now() <= timedelta(days=5)
