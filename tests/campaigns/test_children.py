import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns import services
from campaigns.choices import CampaignState
from campaigns.models import Campaign, ScheduledRun
from packages import services as package_services
from packages.choices import OrderState, PackageState
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification
from tests.factories import FieldFactory


@pytest.fixture
def parent(org):
    from tests.factories import CampaignFactory

    campaign = CampaignFactory(
        name="Welcome journey",
        collaborative_type="by_campaign",
        entity=org.hq,
        description="Three emails",
    )
    FieldFactory(campaign=campaign, name="signature", label="Signature", required=True)
    FieldFactory(campaign=campaign, name="voucher", label="Voucher", max_length=8)
    return campaign


@pytest.fixture
def approved(make_package, parent, org):
    package = make_package(campaign=parent, audience=[org.store_a, org.store_b])
    order = package_services.place_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        data={"signature": "The A team", "voucher": "AAA10"},
        submit=True,
    ).order
    request = ApprovalRequest.objects.for_object(order).get()
    approvals.decide(request=request, actor=org.approver, approve=True)
    order.refresh_from_db()
    return package, order


def test_approval_creates_the_child_campaign_with_the_right_copies(approved, parent, org):
    _, order = approved
    child = Campaign.objects.get(order=order)
    assert child.kind == "child"
    assert child.parent == parent
    assert child.entity == org.store_a
    assert child.collaborative_type == "by_campaign"
    assert child.description == "Three emails"
    assert child.personalisation_values == {"signature": "The A team", "voucher": "AAA10"}
    assert child.state == CampaignState.DRAFT
    assert AuditLog.objects.for_object(child).filter(action="create_child").exists()


def test_the_child_is_created_exactly_once(approved, org):
    _, order = approved
    again = services.create_child_campaign(order=order, actor=None)
    assert Campaign.objects.filter(order=order).count() == 1
    assert again == Campaign.objects.get(order=order)
    with pytest.raises(approvals.AlreadyDecided):
        approvals.decide(
            request=ApprovalRequest.objects.for_object(order).get(),
            actor=org.approver,
            approve=True,
        )
    assert Campaign.objects.filter(order=order).count() == 1


def test_the_parent_lists_its_children_in_the_admin(approved, parent, org, client):
    client.force_login(org.marketer)
    body = client.get(reverse("admin:campaigns_campaign_change", args=[parent.pk])).content.decode()
    assert "associated (child) campaigns" in body.lower()
    assert "Welcome journey — Store A" in body


def test_the_local_entity_edits_its_childs_personalisation(approved, org):
    _, order = approved
    child = Campaign.objects.get(order=order)
    services.update_child_values(
        campaign=child, actor=org.operator_a, data={"signature": "Team A", "voucher": "NEW"}
    )
    child.refresh_from_db()
    assert child.personalisation_values["signature"] == "Team A"
    with pytest.raises(ValidationError) as excinfo:
        services.update_child_values(
            campaign=child, actor=org.operator_a, data={"signature": "", "voucher": "TOOLONGCODE"}
        )
    assert set(excinfo.value.message_dict) == {"signature", "voucher"}
    with pytest.raises(PermissionDenied):
        services.update_child_values(campaign=child, actor=org.operator_b, data={"signature": "x"})


def test_a_stopped_child_cannot_be_personalised(approved, org):
    _, order = approved
    child = Campaign.objects.get(order=order)
    services.run_campaign_transition(campaign=child, name="stop", actor=org.operator_a)
    with pytest.raises(DomainError, match="stopped campaign"):
        services.update_child_values(campaign=child, actor=org.operator_a, data={"signature": "x"})


def test_the_child_pages_belong_to_its_entity(approved, org, client):
    _, order = approved
    child = Campaign.objects.get(order=order)
    client.force_login(org.operator_a)
    url = reverse("campaigns:personalise", args=[child.pk])
    response = client.post(url, {"signature": "From the page", "voucher": ""}, follow=True)
    assert "personalisation is saved" in response.content.decode()
    child.refresh_from_db()
    assert child.personalisation_values["signature"] == "From the page"
    response = client.post(url, {"signature": ""})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    client.force_login(org.operator_b)
    assert client.get(reverse("campaigns:detail", args=[child.pk])).status_code == 404
    assert client.post(url, {"signature": "hijack"}).status_code == 404


def test_simple_orders_schedule_the_parents_run_once(make_package, org):
    package = make_package("simple")
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    run = ScheduledRun.objects.get(order=order)
    assert (run.campaign, run.entity, run.run_at) == (
        package.reference_campaign,
        org.store_a,
        package.execution_at,
    )
    services.schedule_order_run(order=order, actor=None)
    assert ScheduledRun.objects.filter(order=order).count() == 1


def test_cancelling_a_package_cascades(approved, make_package, parent, org):
    package, approved_order = approved
    pending = package_services.place_order(
        package=package,
        entity=org.store_b,
        actor=org.operator_b,
        data={"signature": "B"},
        submit=True,
    ).order
    package_services.cancel_package(package=package, actor=org.marketer, reason="Budget cut")
    package.refresh_from_db()
    approved_order.refresh_from_db()
    pending.refresh_from_db()
    assert package.state == PackageState.CANCELLED
    assert approved_order.state == pending.state == OrderState.CANCELLED
    assert ApprovalRequest.objects.for_object(pending).get().state == "cancelled"
    assert Campaign.objects.get(order=approved_order).state == CampaignState.STOPPED
    notes = Notification.objects.filter(kind="package_cancelled")
    assert set(notes.values_list("entity__code", flat=True)) == {"STORE_A", "STORE_B"}
    assert all("Budget cut" in n.body_text for n in notes)


def test_a_running_child_is_not_stopped_by_the_cascade(approved, org):
    package, order = approved
    child = Campaign.objects.get(order=order)
    services.run_campaign_transition(campaign=child, name="mark_ready", actor=org.operator_a)
    from portal import services as portal_services

    child.refresh_from_db()
    portal_services.transition(obj=child, name="start")
    package_services.cancel_package(package=package, actor=org.marketer)
    child.refresh_from_db()
    assert child.state == CampaignState.RUNNING


def test_the_child_copies_the_parents_workflow(make_package, parent, org):
    from campaigns.models import Activity, Transition

    query = Activity.objects.create(
        campaign=parent, key="q", type="query", settings={"conditions": {}}
    )
    end = Activity.objects.create(campaign=parent, key="end", type="end")
    Transition.objects.create(campaign=parent, source=query, target=end)
    package = make_package(campaign=parent, audience=[org.store_a])
    order = package_services.place_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        data={"signature": "A"},
        submit=True,
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    child = Campaign.objects.get(order=order)
    assert list(child.activities.values_list("key", "type")) == [("q", "query"), ("end", "end")]
    arrow = child.transitions.get()
    assert (arrow.source.campaign, arrow.target.key) == (child, "end")
    assert parent.activities.count() == 2  # the parent keeps its own
    from campaigns.workflow.copy import copy_workflow

    assert copy_workflow(source=parent, target=child) == 0  # never twice


def test_a_stopped_childs_personalise_form_refuses_on_opening(approved, org, client):
    _, order = approved
    child = Campaign.objects.get(order=order)
    services.run_campaign_transition(campaign=child, name="stop", actor=org.operator_a)
    client.force_login(org.operator_a)
    url = reverse("campaigns:personalise", args=[child.pk])
    response = client.get(url)
    body = response.content.decode()
    assert response.status_code == 409
    assert "A stopped campaign can no longer be changed." in body
    assert f'href="{reverse("campaigns:detail", args=[child.pk])}"' in body
    assert 'name="signature"' not in body and '<form method="post" enctype' not in body
    assert client.post(url, {"signature": "late"}).status_code == 409
    child.refresh_from_db()
    assert child.personalisation_values["signature"] == "The A team"
