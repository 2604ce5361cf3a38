from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign
from packages import services
from packages.choices import OrderState, PackageState
from packages.models import Order
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification

NOW = timezone.now


@pytest.mark.parametrize("kind", ["simple", "by_form", "by_campaign"])
def test_publish_refuses_a_package_without_audience(make_package, org, kind):
    package = make_package(kind, audience=[], publish=False)
    with pytest.raises(DomainError, match="needs an audience of local entities"):
        services.publish_package(package=package, actor=org.marketer)
    package.refresh_from_db()
    assert package.state == PackageState.DRAFT


def test_a_target_approval_package_needs_no_audience(make_package, org):
    package = make_package("by_target_approval", audience=[])
    assert package.state == PackageState.PUBLISHED


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"registration_deadline": None}, "Set a registration deadline."),
        (
            {"registration_deadline": NOW() - timedelta(hours=1)},
            "The registration deadline is already past.",
        ),
        (
            {"visible_from": NOW() + timedelta(days=5), "visible_until": NOW() + timedelta(days=2)},
            "The visibility end must come after its start.",
        ),
        (
            {"visible_until": NOW() + timedelta(days=3)},
            "must not come after the visibility end",
        ),
        ({"execution_at": NOW() + timedelta(days=3)}, "must not come after the execution date"),
        (
            {"personalisation_deadline": NOW() + timedelta(days=25)},
            "personalisation deadline must not come after the execution date",
        ),
        (
            {
                "visible_from": NOW() + timedelta(days=20),
                "visible_until": NOW() + timedelta(days=40),
            },
            "must come after the visibility start",
        ),
    ],
)
def test_publish_refuses_inconsistent_dates(make_package, org, fields, problem):
    package = make_package(publish=False, **fields)
    with pytest.raises(DomainError) as excinfo:
        services.publish_package(package=package, actor=org.marketer)
    assert any(problem in text for text in excinfo.value.problems), excinfo.value.problems


def test_publish_lists_every_problem_at_once(make_package, org):
    package = make_package(audience=[], registration_deadline=None, publish=False)
    with pytest.raises(DomainError) as excinfo:
        services.publish_package(package=package, actor=org.marketer)
    assert len(excinfo.value.problems) == 2


def test_publish_refuses_a_non_local_audience(make_package, org):
    package = make_package(audience=[org.store_a, org.north], publish=False)
    with pytest.raises(DomainError, match="local entities only"):
        services.publish_package(package=package, actor=org.marketer)


def test_only_a_publisher_may_publish(make_package, org):
    package = make_package(publish=False)
    with pytest.raises(PermissionDenied):
        services.publish_package(package=package, actor=org.operator_a)


def test_publish_twice_is_refused_politely(make_package, org):
    package = make_package()
    with pytest.raises(DomainError, match="Only draft packages"):
        services.publish_package(package=package, actor=org.marketer)


def test_publish_notifies_each_audience_entity_with_a_link(
    make_package, org, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        package = make_package(audience=[org.store_a, org.store_b])
    notes = Notification.objects.filter(kind="package_published")
    assert {n.recipient_email for n in notes} == {
        "operator_a@example.com",
        "approver_a@example.com",
        "operator_b@example.com",
    }
    assert all(f"/packages/{package.pk}/" in n.body_text for n in notes)
    entry = AuditLog.objects.for_object(package).get(action="publish")
    assert (entry.actor, entry.to_state) == (org.marketer, "published")


def test_publish_rolled_back_notifies_nobody(make_package, org):
    package = make_package(publish=False)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.publish_package(package=package, actor=org.marketer)
        raise RuntimeError("boom")
    assert not Notification.objects.exists()
    package.refresh_from_db()
    assert package.state == PackageState.DRAFT


def test_publish_can_be_silent(make_package, org):
    make_package(notify_on_publish=False)
    assert not Notification.objects.filter(kind="package_published").exists()


def test_automatic_mode_preregisters_the_audience(make_package, org):
    package = make_package(
        "by_campaign", audience=[org.store_a, org.store_b], approval_mode="automatic"
    )
    orders = Order.objects.filter(package=package)
    assert {o.entity.code for o in orders} == {"STORE_A", "STORE_B"}
    assert {o.state for o in orders} == {OrderState.PREREGISTERED}
    # pre-registered counts as approved: by-campaign children exist already
    assert Campaign.objects.filter(parent=package.reference_campaign, kind="child").count() == 2


def test_close_archive_and_cancel(make_package, org):
    package = make_package()
    services.close_package(package=package, actor=org.marketer)
    services.archive_package(package=package, actor=org.marketer)
    package.refresh_from_db()
    assert package.state == PackageState.ARCHIVED
    with pytest.raises(DomainError, match="while it is archived"):
        services.cancel_package(package=package, actor=org.marketer)
    draft = make_package(publish=False)
    services.cancel_package(package=draft, actor=org.marketer)
    draft.refresh_from_db()
    assert draft.state == PackageState.CANCELLED


def test_packages_close_when_their_visibility_ends(make_package, org):
    package = make_package(visible_until=timezone.now() + timedelta(days=15))
    assert services.close_ended_packages() == 0
    assert services.close_ended_packages(now=timezone.now() + timedelta(days=16)) == 1
    package.refresh_from_db()
    assert package.state == PackageState.CLOSED
    assert AuditLog.objects.for_object(package).filter(action="close", actor=None).exists()


def test_entities_that_have_not_ordered_are_reminded_once(make_package, org, valid_values):
    package = make_package(audience=[org.store_a, org.store_b], reminder_days=3)
    services.place_order(package=package, entity=org.store_b, actor=org.operator_b)
    assert services.send_deadline_reminders() == 0  # too early
    later = package.registration_deadline - timedelta(days=2)
    assert services.send_deadline_reminders(now=later) == 1
    assert services.send_deadline_reminders(now=later + timedelta(hours=1)) == 0
    reminded = Notification.objects.filter(kind="package_reminder")
    assert set(reminded.values_list("entity__code", flat=True)) == {"STORE_A"}
