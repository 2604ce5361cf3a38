"""Scheduled runs of simple and by-form orders: the periodic task copies the reference
campaign for the ordering entity alone (with the order's personalisation and local values),
starts it at the run's time, once, and records a failure with its reason."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns import services, tasks
from campaigns.choices import CampaignKind, RunState
from campaigns.models import Activity, Campaign, ScheduledRun, Transition, WorkflowRun
from packages import services as package_services
from packages.models import Package
from portal.exceptions import DomainError
from portal.models import AuditLog
from tests.factories import FieldFactory
from tests.local_conditions import JUNE, reference_campaign, travellers

pytestmark = pytest.mark.django_db


def with_delivery(campaign):
    """Insert an email delivery between the query and the end of ``reference_campaign``."""
    target, end = campaign.activities.get(key="target"), campaign.activities.get(key="end")
    Transition.objects.filter(campaign=campaign).delete()
    mail = Activity.objects.create(
        campaign=campaign, key="mail", type="delivery", label="Mail",
        settings={"channel": "email", "subject": "Hello {{ contact.first_name }}",
                  "text_body": "Summer offer: {{ perso.offer }}"},
    )  # fmt: skip
    Transition.objects.create(campaign=campaign, source=target, target=mail, label="out")
    Transition.objects.create(campaign=campaign, source=mail, target=end, label="out")
    return campaign


@pytest.fixture
def order_run(org, make_package):
    """Order (store A) and approve a package of a ``kind`` reference campaign; its run."""

    def make(kind="by_form", *, spec=True, local_values=None, execution_at="default"):
        options = {} if spec else {"spec": None}
        parent = with_delivery(reference_campaign(org, kind=kind, **options))
        FieldFactory(campaign=parent, name="offer", label="Offer", required=True)
        extra = {} if execution_at == "default" else {"execution_at": execution_at}
        package = make_package(campaign=parent, audience=[org.store_a, org.store_b], **extra)
        order = package_services.place_order(
            package=package, entity=org.store_a, actor=org.operator_a, submit=True,
            data={"offer": "two for one"}, local_values=local_values,
        ).order  # fmt: skip
        approvals.decide(
            request=ApprovalRequest.objects.for_object(order).get(),
            actor=org.approver,
            approve=True,
        )
        return ScheduledRun.objects.get(order=order)

    return make


def execute(django_capture_on_commit_callbacks, at):
    with time_machine.travel(at), django_capture_on_commit_callbacks(execute=True):
        return services.execute_scheduled_runs()


def test_a_by_form_order_runs_at_its_time_for_its_entity_with_its_values(
    org, order_run, django_capture_on_commit_callbacks, mailoutbox
):
    contacts = travellers(org)
    run = order_run(local_values={**JUNE, "language": "fr"})
    assert run.run_at == run.order.package.execution_at and run.local_targeting

    # Not before its time.
    assert execute(django_capture_on_commit_callbacks, run.run_at - timedelta(minutes=1)) == 0
    run.refresh_from_db()
    assert run.state == RunState.SCHEDULED and not Campaign.objects.filter(order=run.order)

    mailoutbox.clear()
    assert execute(django_capture_on_commit_callbacks, run.run_at + timedelta(minutes=1)) == 1
    run.refresh_from_db()
    campaign = run.execution_campaign
    assert run.state == RunState.DONE and campaign is not None
    assert (campaign.kind, campaign.entity, campaign.parent, campaign.order) == (
        CampaignKind.CHILD, org.store_a, run.campaign, run.order,
    )  # fmt: skip
    assert campaign.personalisation_values == {"offer": "two for one"}
    assert WorkflowRun.objects.filter(campaign=campaign, simulate=False).count() == 1
    assert not WorkflowRun.objects.filter(campaign=run.campaign).exists()  # not the reference

    # Store A's French, consenting contacts with a June cruise: A00, A06, A12, A18, A24.
    expected = {contacts[f"A{i:02d}"].email for i in (0, 6, 12, 18, 24)}
    sent = [m for m in mailoutbox if m.subject.startswith("Hello")]
    assert {m.to[0] for m in sent} == expected
    assert all("Summer offer: two for one" in m.body for m in sent)
    assert sorted(m.subject for m in sent) == [f"Hello Ann{i:02d}" for i in (0, 6, 12, 18, 24)]

    # Audited: the campaign's creation and start, the run's transition naming it.
    done = AuditLog.objects.for_object(run).get(action="mark_done")
    assert (done.from_state, done.to_state, done.extra["campaign"]) == (
        "scheduled", "done", campaign.pk,
    )  # fmt: skip
    actions = set(AuditLog.objects.for_object(campaign).values_list("action", flat=True))
    assert {"create_run_campaign", "mark_ready", "start", "run"} <= actions


def test_a_simple_order_runs_for_all_of_its_entitys_consenting_contacts(
    org, order_run, django_capture_on_commit_callbacks, mailoutbox
):
    contacts = travellers(org)
    run = order_run("simple", spec=False)
    assert run.local_targeting == {}
    mailoutbox.clear()
    assert execute(django_capture_on_commit_callbacks, run.run_at + timedelta(seconds=1)) == 1
    run.refresh_from_db()
    assert run.state == RunState.DONE
    sent = {m.to[0] for m in mailoutbox if m.subject.startswith("Hello")}
    # Every consenting contact of store A (A29 does not consent), none of store B's.
    assert sent == {contacts[f"A{i:02d}"].email for i in range(29)}


def test_the_run_campaign_is_locked_for_the_local_entity(
    org, order_run, django_capture_on_commit_callbacks, client
):
    run = order_run(local_values=JUNE)
    execute(django_capture_on_commit_callbacks, run.run_at + timedelta(seconds=1))
    run.refresh_from_db()
    campaign = run.execution_campaign
    assert "as it was ordered" in services.child_edit_refusal(campaign)
    with pytest.raises(DomainError, match="as it was ordered"):
        services.update_child_values(
            campaign=campaign, actor=org.operator_a, data={"offer": "free"}
        )
    # Store A sees it from its order; store B does not see it at all.
    client.force_login(org.operator_a)
    page = client.get(reverse("packages:order_detail", args=[run.order.pk])).content.decode()
    assert reverse("campaigns:detail", args=[campaign.pk]) in page
    detail = client.get(reverse("campaigns:detail", args=[campaign.pk]))
    assert detail.status_code == 200
    assert reverse("campaigns:personalise", args=[campaign.pk]) not in detail.content.decode()
    refused = client.post(reverse("campaigns:personalise", args=[campaign.pk]), {"offer": "x"})
    assert refused.status_code == 409 and "as it was ordered" in refused.content.decode()
    campaign.refresh_from_db()
    assert campaign.personalisation_values == {"offer": "two for one"}
    client.force_login(org.operator_b)
    assert client.get(reverse("campaigns:detail", args=[campaign.pk])).status_code == 404


def test_a_cancelled_order_never_runs(org, order_run, django_capture_on_commit_callbacks):
    run = order_run(local_values=JUNE)
    package_services.cancel_order(order=run.order, actor=org.operator_a, comment="Changed plans")
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert execute(django_capture_on_commit_callbacks, run.run_at + timedelta(days=1)) == 0
    assert services.execute_run(run.pk) is None
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.execution_campaign is None
    assert not Campaign.objects.filter(order=run.order).exists()


def test_running_the_task_twice_starts_one_campaign(
    org, order_run, django_capture_on_commit_callbacks
):
    run = order_run(local_values=JUNE)
    at = run.run_at + timedelta(minutes=1)
    with time_machine.travel(at), django_capture_on_commit_callbacks(execute=True):
        tasks.execute_scheduled_runs.delay()
        tasks.execute_scheduled_runs.delay()
    assert services.execute_run(run.pk) is None  # already done: nothing claimed
    assert Campaign.objects.filter(order=run.order).count() == 1
    assert WorkflowRun.objects.filter(campaign__order=run.order, simulate=False).count() == 1
    assert AuditLog.objects.for_object(run).filter(action="mark_done").count() == 1


def test_a_run_without_a_time_waits_for_the_packages_execution_date(
    org, order_run, django_capture_on_commit_callbacks
):
    run = order_run(local_values=JUNE, execution_at=None)
    assert run.run_at is None
    now = timezone.now()
    assert list(services.due_runs(now)) == [run]  # the package has no date: at once
    later = now + timedelta(days=2)
    Package.objects.filter(pk=run.order.package_id).update(execution_at=later)
    assert not services.due_runs(now).exists()
    assert list(services.due_runs(later)) == [run]


def test_a_refused_start_is_recorded_and_nothing_is_left(
    org, order_run, django_capture_on_commit_callbacks
):
    run = order_run(local_values=JUNE)
    closed = run.run_at + timedelta(hours=1)
    Package.objects.filter(pk=run.order.package_id).update(execution_until=closed)
    assert execute(django_capture_on_commit_callbacks, closed + timedelta(minutes=1)) == 0
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.execution_campaign is None
    assert "execution window closed" in run.failure_reason
    assert not Campaign.objects.filter(order=run.order).exists()  # rolled back whole
    entry = AuditLog.objects.for_object(run).get(action="fail")
    assert entry.to_state == "failed" and "execution window closed" in entry.comment
    # A failed run is not tried again.
    assert execute(django_capture_on_commit_callbacks, closed + timedelta(minutes=2)) == 0


def test_an_error_while_copying_fails_the_run_with_its_reason(
    org, order_run, django_capture_on_commit_callbacks, monkeypatch
):
    run = order_run(local_values=JUNE)

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "copy_campaign_content", broken)
    assert execute(django_capture_on_commit_callbacks, run.run_at + timedelta(minutes=1)) == 0
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.FAILED, "disk on fire")
    assert not Campaign.objects.filter(order=run.order).exists()


def test_an_invalid_workflow_fails_the_run_naming_the_problem(
    org, order_run, django_capture_on_commit_callbacks
):
    run = order_run(local_values=JUNE)
    mail = run.campaign.activities.get(key="mail")
    Activity.objects.filter(pk=mail.pk).update(settings={**mail.settings, "channel": "pigeon"})
    execute(django_capture_on_commit_callbacks, run.run_at + timedelta(minutes=1))
    run.refresh_from_db()
    assert run.state == RunState.FAILED
    assert "workflow is not valid" in run.failure_reason and "channel" in run.failure_reason


def test_the_central_team_sees_runs_and_their_campaigns(
    org, order_run, django_capture_on_commit_callbacks, client
):
    run = order_run(local_values=JUNE)
    execute(django_capture_on_commit_callbacks, run.run_at + timedelta(minutes=1))
    run.refresh_from_db()
    client.force_login(org.marketer)
    listing = client.get(reverse("admin:campaigns_scheduledrun_changelist")).content.decode()
    assert reverse("admin:campaigns_campaign_change", args=[run.execution_campaign.pk]) in listing
    parent = client.get(reverse("campaigns:detail", args=[run.campaign.pk])).content.decode()
    assert run.execution_campaign.name in parent  # among the parent's children


def test_a_by_campaign_childs_local_values_are_kept_not_a_departure(org, make_package):
    """The start rule compares a child's query with the parent's AND its local values: the
    copy path's own change is not one the local entity made (by-campaign children too)."""
    parent = reference_campaign(org)  # its query step is not editable locally
    package = make_package(campaign=parent, audience=[org.store_a])
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True, local_values=JUNE
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    child = Campaign.objects.get(order=order)
    assert (
        child.activities.get(key="target").settings != parent.activities.get(key="target").settings
    )
    assert services.kept_settings_problems(child) == []
    step = child.activities.get(key="target")
    Activity.objects.filter(pk=step.pk).update(settings={**step.settings, "conditions": {}})
    assert services.kept_settings_problems(child) == [
        "Step “Opted-in travellers”: conditions must stay as the parent set."
    ]


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_task_skips_the_run_another_one_is_executing(org, order_run, monkeypatch):
    """PostgreSQL: while one worker holds the run's row lock, another one passes it by."""
    import threading

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("row locks with SKIP LOCKED need PostgreSQL")
    run = order_run(local_values=JUNE)
    Package.objects.filter(pk=run.order.package_id).update(execution_at=None)
    ScheduledRun.objects.filter(pk=run.pk).update(run_at=None)
    entered, release = threading.Event(), threading.Event()
    real = services.create_run_campaign
    results = {}

    def slow(scheduled):
        entered.set()
        release.wait(10)
        return real(scheduled)

    monkeypatch.setattr(services, "create_run_campaign", slow)

    def first():
        try:
            results["first"] = services.execute_run(run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(10)
    results["second"] = services.execute_scheduled_runs()  # the run is locked: skipped
    release.set()
    thread.join(30)
    assert results["second"] == 0 and results["first"] is not None
    run.refresh_from_db()
    assert run.state == RunState.DONE
    assert Campaign.objects.filter(order=run.order).count() == 1
