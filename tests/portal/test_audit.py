import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from portal import services
from portal.choices import NotificationStatus
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification


@pytest.fixture
def failed_notification(org):
    notification = Notification.objects.create(
        recipient_email="someone@example.com", subject="Hi", body_text="Hello", entity=org.store_a
    )
    services.transition(obj=notification, name="start_sending")
    services.transition(obj=notification, name="mark_failed", error="boom")
    return notification


def test_a_transition_is_audited_with_actor_and_states(org, failed_notification):
    services.transition(
        obj=failed_notification, name="requeue", actor=org.marketer, comment="try again"
    )
    entry = AuditLog.objects.for_object(failed_notification).first()
    assert (entry.action, entry.from_state, entry.to_state) == ("requeue", "failed", "pending")
    assert entry.actor == org.marketer
    assert entry.actor_repr == "marketer"
    assert entry.comment == "try again"
    assert entry.entity == org.store_a


def test_the_audit_entry_rolls_back_with_the_transition(org, failed_notification):
    before = AuditLog.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.transition(obj=failed_notification, name="requeue", actor=org.marketer)
        raise RuntimeError("something later in the same unit of work failed")
    failed_notification.refresh_from_db()
    assert failed_notification.status == NotificationStatus.FAILED
    assert AuditLog.objects.count() == before


def test_an_illegal_transition_is_refused_without_an_entry(org, failed_notification):
    before = AuditLog.objects.count()
    with pytest.raises(DomainError, match="while it is failed"):
        services.transition(obj=failed_notification, name="mark_sent")
    assert AuditLog.objects.count() == before


def test_a_transition_needs_the_actor_permission(org, failed_notification):
    with pytest.raises(PermissionDenied):
        services.transition(obj=failed_notification, name="requeue", actor=org.operator_a)
    failed_notification.refresh_from_db()
    assert failed_notification.status == NotificationStatus.FAILED


def test_the_state_field_cannot_be_assigned_directly(failed_notification):
    with pytest.raises(AttributeError):
        failed_notification.status = NotificationStatus.SENT


def test_audit_entries_are_append_only(org, failed_notification):
    entry = AuditLog.objects.for_object(failed_notification).first()
    entry.comment = "rewritten history"
    with pytest.raises(ValidationError):
        entry.save()
    with pytest.raises(ValidationError):
        entry.delete()


def test_audit_entries_are_scoped_to_visible_entities(org, failed_notification):
    assert AuditLog.objects.visible_to(org.operator_a).exists()
    assert not AuditLog.objects.visible_to(org.operator_b).exists()
    assert AuditLog.objects.visible_to(org.marketer).exists()
