from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import ApprovalRequest
from packages import services
from packages.choices import OrderState
from packages.models import Order, Package
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification
from tests.factories import FieldFactory


@pytest.fixture
def package(make_package, form_campaign, org):
    return make_package(campaign=form_campaign, audience=[org.store_a, org.store_b])


def order_for(package, org, values, **kwargs):
    return services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=values, **kwargs
    ).order


# Visibility ---------------------------------------------------------------------------------


def test_packages_are_visible_to_their_audience_only(make_package, org):
    package = make_package(audience=[org.store_a])
    assert list(Package.objects.visible_to(org.operator_a)) == [package]
    assert list(Package.objects.visible_to(org.regional)) == [package]
    assert not Package.objects.visible_to(org.operator_b).exists()
    assert not Package.objects.visible_to(org.outsider).exists()
    assert list(Package.objects.visible_to(org.marketer)) == [package]


def test_drafts_are_hidden_from_local_entities(make_package, org):
    make_package(publish=False)
    assert not Package.objects.visible_to(org.operator_a).exists()


def test_packages_are_visible_only_between_their_dates(make_package, org):
    package = make_package(
        visible_from=timezone.now() + timedelta(days=1),
        registration_deadline=timezone.now() + timedelta(days=5),
    )
    assert not Package.objects.visible_to(org.operator_a).exists()
    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert list(Package.objects.visible_to(org.operator_a)) == [package]
    with time_machine.travel(package.visible_until + timedelta(days=1)):
        assert not Package.objects.visible_to(org.operator_a).exists()


def test_an_ordered_package_stays_visible_after_its_window(make_package, org):
    package = make_package()
    services.place_order(package=package, entity=org.store_a, actor=org.operator_a)
    with time_machine.travel(package.visible_until + timedelta(days=1)):
        assert list(Package.objects.visible_to(org.operator_a)) == [package]


# Ordering -------------------------------------------------------------------------------------


def test_an_order_is_saved_as_a_draft_with_its_values(package, org, valid_values):
    order = order_for(package, org, valid_values)
    assert order.state == OrderState.DRAFT
    assert order.values["headline"] == "Free coffee"
    assert order.values["discount"] == "15"
    assert order.values["event_date"] == "2030-05-01"
    assert order.values["with_map"] is True
    assert order.values["flyer"] is None
    assert order.ordered_by == org.operator_a
    assert AuditLog.objects.for_object(order).filter(action="create_order").exists()


def test_submitting_opens_an_approval_and_emails_the_approvers(package, org, valid_values):
    order = order_for(package, org, valid_values, submit=True)
    assert order.state == OrderState.SUBMITTED
    request = ApprovalRequest.objects.for_object(order).get()
    assert list(request.approvers.all()) == [org.approver]
    note = Notification.objects.get(kind="approval_request")
    assert note.recipient == org.approver
    assert "Free coffee" in note.body_text
    assert "/approvals/link/" in note.body_text


def test_submit_notifications_can_be_turned_off(make_package, form_campaign, org, valid_values):
    package = make_package(campaign=form_campaign, notify_on_submit=False)
    order_for(package, org, valid_values, submit=True)
    assert ApprovalRequest.objects.count() == 1
    assert not Notification.objects.filter(kind="approval_request").exists()


def test_an_entity_outside_the_audience_cannot_order(make_package, org):
    package = make_package(audience=[org.store_b])
    with pytest.raises(DomainError, match="not in the audience"):
        services.place_order(package=package, entity=org.store_a, actor=org.operator_a)
    assert not Order.objects.exists()


def test_an_operator_cannot_order_for_another_entity(package, org):
    with pytest.raises(PermissionDenied):
        services.place_order(package=package, entity=org.store_b, actor=org.operator_a)


@pytest.mark.parametrize("actor", ["approver", "marketer", "approver_a", "outsider"])
def test_only_operators_order(package, org, actor):
    with pytest.raises(PermissionDenied):
        services.place_order(package=package, entity=org.store_a, actor=getattr(org, actor))


def test_a_region_operator_orders_for_its_stores(package, org, valid_values):
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.regional, data=valid_values
    ).order
    assert order.entity == org.store_a


def test_no_order_after_the_registration_deadline(package, org, valid_values):
    with (
        time_machine.travel(package.registration_deadline + timedelta(minutes=1)),
        pytest.raises(DomainError, match=r"registration deadline .* passed"),
    ):
        order_for(package, org, valid_values)
    assert not Order.objects.exists()


def test_no_submit_change_or_cancel_after_the_deadline(package, org, valid_values):
    order = order_for(package, org, valid_values)
    with time_machine.travel(package.registration_deadline + timedelta(minutes=1)):
        with pytest.raises(DomainError, match="deadline"):
            services.submit_order(order=order, actor=org.operator_a)
        with pytest.raises(DomainError, match="deadline"):
            services.update_order(order=order, actor=org.operator_a, data=valid_values)
        with pytest.raises(DomainError, match="deadline"):
            services.cancel_order(order=order, actor=org.operator_a)
    order.refresh_from_db()
    assert order.state == OrderState.DRAFT


def test_late_personalisation_is_accepted_with_a_warning(
    make_package, form_campaign, org, valid_values
):
    package = make_package(
        campaign=form_campaign, personalisation_deadline=timezone.now() + timedelta(days=2)
    )
    order = order_for(package, org, valid_values)
    with time_machine.travel(timezone.now() + timedelta(days=3)):
        result = services.update_order(
            order=order, actor=org.operator_a, data={**valid_values, "headline": "Late news"}
        )
    assert result.warnings and "personalisation deadline passed" in result.warnings[0]
    order.refresh_from_db()
    assert order.values["headline"] == "Late news"
    assert order.late_personalisation is True


def test_one_order_per_entity(package, org, valid_values):
    order_for(package, org, valid_values)
    with pytest.raises(DomainError, match="already ordered"):
        order_for(package, org, valid_values)
    assert Order.objects.count() == 1


def test_the_database_refuses_a_second_order_too(package, org):
    Order.objects.create(package=package, entity=org.store_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(package=package, entity=org.store_a)


def test_a_cancelled_order_frees_the_place(package, org, valid_values):
    first = order_for(package, org, valid_values)
    services.cancel_order(order=first, actor=org.operator_a, comment="Wrong date")
    second = order_for(package, org, valid_values)
    assert second.pk != first.pk and second.sequence == 1


def test_multiple_orders_when_the_package_allows_them(
    make_package, form_campaign, org, valid_values
):
    package = make_package(campaign=form_campaign, allow_multiple_orders=True)
    first = order_for(package, org, valid_values)
    second = order_for(package, org, valid_values)
    assert (first.sequence, second.sequence) == (1, 2)


def test_only_drafts_are_submitted(package, org, valid_values):
    order = order_for(package, org, valid_values, submit=True)
    with pytest.raises(DomainError, match="Only draft orders"):
        services.submit_order(order=order, actor=org.operator_a)


def test_another_entity_cannot_touch_an_order(package, org, valid_values):
    order = order_for(package, org, valid_values)
    for call in (
        lambda: services.submit_order(order=order, actor=org.operator_b),
        lambda: services.cancel_order(order=order, actor=org.operator_b),
        lambda: services.update_order(order=order, actor=org.operator_b, data=valid_values),
    ):
        with pytest.raises(PermissionDenied):
            call()


def test_submit_rechecks_values_against_current_definitions(package, org, valid_values):
    order = order_for(package, org, valid_values)
    FieldFactory(
        campaign=package.reference_campaign, name="store_phone", label="Store phone", required=True
    )
    with pytest.raises(DomainError, match="Store phone: This field is required"):
        services.submit_order(order=order, actor=org.operator_a)
    order.refresh_from_db()
    assert order.state == OrderState.DRAFT


def test_approved_orders_are_no_longer_edited(package, org, valid_values):
    from approvals import services as approvals

    order = order_for(package, org, valid_values, submit=True)
    approvals.decide(request=ApprovalRequest.objects.get(), actor=org.approver, approve=True)
    with pytest.raises(DomainError, match="approved order cannot be changed"):
        services.update_order(order=order, actor=org.operator_a, data=valid_values)


def test_cancelling_a_submitted_order_withdraws_its_approval(package, org, valid_values):
    order = order_for(package, org, valid_values, submit=True)
    services.cancel_order(order=order, actor=org.operator_a)
    assert ApprovalRequest.objects.get().state == "cancelled"


def test_automatic_mode_orders_change_without_approval(
    make_package, form_campaign, org, valid_values
):
    package = make_package(campaign=form_campaign, approval_mode="automatic")
    order = Order.objects.get(package=package, entity=org.store_a)
    assert order.state == OrderState.PREREGISTERED
    services.update_order(order=order, actor=org.operator_a, data=valid_values)
    order.refresh_from_db()
    assert order.state == OrderState.PREREGISTERED
    assert order.values["headline"] == "Free coffee"
    assert not ApprovalRequest.objects.exists()
    services.cancel_order(order=order, actor=org.operator_a)
    order.refresh_from_db()
    assert order.state == OrderState.CANCELLED


def test_bad_values_write_nothing(package, org, valid_values, png):
    with pytest.raises(ValidationError):
        services.place_order(
            package=package,
            entity=org.store_a,
            actor=org.operator_a,
            data={**valid_values, "discount": "500"},
            files={"flyer": png()},
        )
    assert not Order.objects.exists()
    assert not AuditLog.objects.filter(action="create_order").exists()
