"""The local entity runs its child campaign: one start rule (approved order, the package's
execution window, the typology and limits the parent set) for the portal, the admin and the
API; scheduled starts picked up once; the parent's table of its children."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns import services
from campaigns.choices import CampaignState
from campaigns.models import Activity, Campaign, WorkflowRun
from campaigns.workflow import engine
from packages import services as package_services
from packages.models import Package
from portal.exceptions import DomainError
from portal.models import AuditLog
from tests.campaigns.workflow import QUERY, act, link
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def parent(org):
    """A by-campaign parent: query → distribution (limits the stores may lower) → end."""
    campaign = CampaignFactory(name="Welcome", collaborative_type="by_campaign", entity=org.hq)
    query = act(campaign, "q", "query", conditions=QUERY)
    dist = act(campaign, "dist", "distribution", default_limit=5, limits={"STORE_A": 3})
    end = act(campaign, "end", "end")
    Activity.objects.filter(pk=dist.pk).update(local_edit=True)
    link(campaign, query, dist)
    link(campaign, dist, end)
    return campaign


def open_window(package, *, opens=-1, closes=7):
    """The registration is over and the execution window is open (hours / days from now)."""
    now = timezone.now()
    Package.objects.filter(pk=package.pk).update(
        registration_deadline=now - timedelta(days=1),
        execution_at=now + timedelta(hours=opens),
        execution_until=now + timedelta(days=closes) if closes is not None else None,
    )


@pytest.fixture
def make_child(make_package, parent, org):
    def make(*, entity=None, operator=None, approve=True, ready=True, window=True):
        entity = entity or org.store_a
        operator = operator or org.operator_a
        package = make_package(campaign=parent, audience=[org.store_a, org.store_b])
        order = package_services.place_order(
            package=package, entity=entity, actor=operator, submit=True
        ).order
        if not approve:
            return package, order
        request = ApprovalRequest.objects.for_object(order).get()
        approvals.decide(request=request, actor=org.approver, approve=True)
        child = Campaign.objects.get(order=order)
        if window:
            open_window(package)
        if ready:
            services.run_campaign_transition(campaign=child, name="mark_ready", actor=operator)
        child.refresh_from_db()
        return child

    return make


def start(child, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = services.start_campaign(campaign=child, actor=user)
    child.refresh_from_db()
    return run


# The rule ------------------------------------------------------------------------------------


def test_a_local_operator_starts_their_approved_child_within_the_window(
    make_child, org, django_capture_on_commit_callbacks
):
    child = make_child()
    assert services.start_refusal(child) == ""
    run = start(child, org.operator_a, django_capture_on_commit_callbacks)
    assert not run.simulate
    assert child.state == CampaignState.RUNNING or child.state == CampaignState.COMPLETED
    entry = AuditLog.objects.for_object(child).get(action="start")
    assert entry.actor == org.operator_a
    assert (entry.from_state, entry.to_state) == ("ready", "running")


def test_it_refuses_a_start_before_the_window_opens(make_child, org):
    child = make_child()
    open_window(child.order.package, opens=5)
    child.refresh_from_db()
    refusal = services.start_refusal(child)
    assert "window opens" in refusal
    with pytest.raises(DomainError, match="window opens"):
        services.start_campaign(campaign=child, actor=org.operator_a)
    child.refresh_from_db()
    assert child.state == CampaignState.READY
    assert not WorkflowRun.objects.filter(campaign=child).exists()


def test_it_refuses_a_start_after_the_window_closed(make_child, org):
    child = make_child()
    now = timezone.now()
    Package.objects.filter(pk=child.order.package_id).update(
        execution_at=now - timedelta(days=3), execution_until=now - timedelta(hours=1)
    )
    child.refresh_from_db()
    with pytest.raises(DomainError, match="window closed"):
        services.start_campaign(campaign=child, actor=org.operator_a)


def test_the_window_applies_to_the_admin_and_the_engine_alike(make_child, org):
    child = make_child()
    open_window(child.order.package, opens=5)
    child.refresh_from_db()
    with pytest.raises(DomainError, match="window opens"):
        engine.start_run(campaign=child, actor=org.marketer)
    child.refresh_from_db()
    assert child.state == CampaignState.READY


def test_it_refuses_a_child_whose_order_is_no_longer_approved(make_child, org):
    from packages.models import Order

    child = make_child()
    Order.objects.filter(pk=child.order_id).update(state="cancelled")
    child.refresh_from_db()
    assert "not approved" in services.start_refusal(child)
    with pytest.raises(DomainError, match="not approved"):
        services.start_campaign(campaign=child, actor=org.operator_a)


def test_a_child_without_order_cannot_start(parent, org):
    child = CampaignFactory(
        kind="child", collaborative_type="by_campaign", entity=org.store_a, parent=parent
    )
    assert "no order" in services.start_refusal(child)


def test_the_typology_and_locked_settings_must_stay_as_the_parent_set(make_child, org):
    child = make_child()
    Activity.objects.filter(campaign=child, key="q").update(
        settings={"conditions": {"field": "language", "op": "eq", "value": "fr"}}
    )
    refusal = services.start_refusal(child)
    assert "Step “q”: conditions must stay as the parent set." in refusal
    with pytest.raises(DomainError, match="must stay as the parent set"):
        services.start_campaign(campaign=child, actor=org.operator_a)


def test_a_child_may_lower_its_limits_but_never_raise_them(make_child, org):
    child = make_child()
    dist = Activity.objects.get(campaign=child, key="dist")
    dist.settings = {"default_limit": 2, "limits": {"STORE_A": 1}}
    dist.save()
    assert services.start_refusal(child) == ""
    dist.settings = {"default_limit": 9, "limits": {"STORE_A": 4}}
    dist.save()
    refusal = services.start_refusal(child)
    assert "the default limit may not exceed the parent's 5" in refusal
    assert "the limit of STORE_A may not exceed the parent's 3" in refusal


def test_a_step_the_parent_does_not_have_is_refused(make_child, org):
    child = make_child()
    act(child, "extra", "end")
    assert "Step “extra” is not in the parent campaign." in services.start_refusal(child)


def test_a_draft_child_cannot_start(make_child, org):
    child = make_child(ready=False)
    with pytest.raises(DomainError, match="Only a ready campaign can run"):
        services.start_campaign(campaign=child, actor=org.operator_a)


# Rights -------------------------------------------------------------------------------------


def test_roles_without_the_right_and_other_entities_are_refused_by_the_service(make_child, org):
    from django.core.exceptions import PermissionDenied

    child = make_child()
    for user in (org.approver_a, org.operator_b, org.approver):
        with pytest.raises(PermissionDenied):
            services.start_campaign(campaign=child, actor=user)
    child.refresh_from_db()
    assert child.state == CampaignState.READY


def test_the_portal_start_button_starts_the_child(
    make_child, org, client, django_capture_on_commit_callbacks
):
    child = make_child()
    client.force_login(org.operator_a)
    page = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    assert reverse("campaigns:action", args=[child.pk, "start"]) in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("campaigns:action", args=[child.pk, "start"]))
    assert response.status_code == 302
    child.refresh_from_db()
    assert child.state in (CampaignState.RUNNING, CampaignState.COMPLETED)


def test_the_portal_shows_why_a_child_cannot_start_yet(make_child, org, client):
    child = make_child()
    open_window(child.order.package, opens=5)
    child.refresh_from_db()
    client.force_login(org.operator_a)
    page = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    assert "Cannot start yet" in page
    assert reverse("campaigns:action", args=[child.pk, "start"]) not in page
    response = client.post(reverse("campaigns:action", args=[child.pk, "start"]), follow=True)
    assert "window opens" in response.content.decode()
    child.refresh_from_db()
    assert child.state == CampaignState.READY


def test_a_forged_start_by_another_entity_is_404(make_child, org, client):
    child = make_child()
    client.force_login(org.operator_b)
    assert client.post(reverse("campaigns:action", args=[child.pk, "start"])).status_code == 404
    assert (
        client.post(
            reverse("campaigns:schedule", args=[child.pk]), {"at": "2030-01-01T10:00"}
        ).status_code
        == 404
    )
    child.refresh_from_db()
    assert child.state == CampaignState.READY
    assert child.scheduled_start_at is None


def test_a_role_without_the_right_gets_403(make_child, org, client):
    child = make_child()
    client.force_login(org.approver_a)
    assert client.post(reverse("campaigns:action", args=[child.pk, "start"])).status_code == 403
    assert (
        client.post(
            reverse("campaigns:schedule", args=[child.pk]), {"at": "2030-01-01T10:00"}
        ).status_code
        == 403
    )
    child.refresh_from_db()
    assert child.state == CampaignState.READY


def test_start_and_schedule_need_a_csrf_token(make_child, org):
    from django.test import Client

    child = make_child()
    client = Client(enforce_csrf_checks=True)
    client.force_login(org.operator_a)
    assert client.post(reverse("campaigns:action", args=[child.pk, "start"])).status_code == 403
    assert client.post(reverse("campaigns:schedule", args=[child.pk])).status_code == 403
    child.refresh_from_db()
    assert child.state == CampaignState.READY


def test_a_get_does_not_start(make_child, org, client):
    child = make_child()
    client.force_login(org.operator_a)
    assert client.get(reverse("campaigns:action", args=[child.pk, "start"])).status_code == 405
    assert client.get(reverse("campaigns:schedule", args=[child.pk])).status_code == 405


# Scheduling -------------------------------------------------------------------------------


def test_a_scheduled_start_is_audited_and_picked_up_once(
    make_child, org, django_capture_on_commit_callbacks
):
    child = make_child()
    at = timezone.now() + timedelta(hours=2)
    services.schedule_start(campaign=child, actor=org.operator_a, at=at)
    child.refresh_from_db()
    assert child.scheduled_start_at == at
    assert AuditLog.objects.for_object(child).filter(action="schedule_start").exists()
    assert services.start_scheduled_campaigns(now=at - timedelta(minutes=1)) == 0
    with time_machine.travel(at + timedelta(minutes=1)):
        with django_capture_on_commit_callbacks(execute=True):
            assert services.start_scheduled_campaigns() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert services.start_scheduled_campaigns() == 0
    child.refresh_from_db()
    assert child.state in (CampaignState.RUNNING, CampaignState.COMPLETED)
    assert child.scheduled_start_at is None
    assert WorkflowRun.objects.filter(campaign=child, simulate=False).count() == 1
    entry = AuditLog.objects.for_object(child).get(action="start")
    assert entry.actor is None
    assert entry.comment == "Scheduled start."


def test_a_schedule_outside_the_window_or_in_the_past_is_refused(make_child, org):
    child = make_child()
    with pytest.raises(DomainError, match="window closed"):
        services.schedule_start(
            campaign=child, actor=org.operator_a, at=timezone.now() + timedelta(days=30)
        )
    with pytest.raises(DomainError, match="in the future"):
        services.schedule_start(
            campaign=child, actor=org.operator_a, at=timezone.now() - timedelta(hours=1)
        )
    child.refresh_from_db()
    assert child.scheduled_start_at is None


def test_a_schedule_in_a_window_not_open_yet_is_accepted(make_child, org):
    child = make_child()
    open_window(child.order.package, opens=24, closes=7)
    child.refresh_from_db()
    at = timezone.now() + timedelta(days=2)
    services.schedule_start(campaign=child, actor=org.operator_a, at=at)
    child.refresh_from_db()
    assert child.scheduled_start_at == at


def test_a_scheduled_start_can_be_withdrawn(make_child, org, client):
    child = make_child()
    client.force_login(org.operator_a)
    client.post(reverse("campaigns:schedule", args=[child.pk]), {"at": "2000-01-01T10:00"})
    child.refresh_from_db()
    assert child.scheduled_start_at is None  # in the past: refused
    at = timezone.localtime(timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    client.post(reverse("campaigns:schedule", args=[child.pk]), {"at": at})
    child.refresh_from_db()
    assert child.scheduled_start_at is not None
    page = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    assert "Withdraw the scheduled start" in page
    client.post(reverse("campaigns:schedule", args=[child.pk]), {"unschedule": "1"})
    child.refresh_from_db()
    assert child.scheduled_start_at is None
    assert AuditLog.objects.for_object(child).filter(action="unschedule_start").exists()
    assert services.start_scheduled_campaigns(now=timezone.now() + timedelta(days=2)) == 0


def test_a_scheduled_start_refused_when_it_comes_is_audited_and_dropped(make_child, org):
    child = make_child()
    at = timezone.now() + timedelta(hours=2)
    services.schedule_start(campaign=child, actor=org.operator_a, at=at)
    Package.objects.filter(pk=child.order.package_id).update(
        execution_until=timezone.now() + timedelta(hours=1)
    )
    child.refresh_from_db()
    with time_machine.travel(at + timedelta(minutes=1)):
        assert services.start_scheduled_campaigns() == 0
    child.refresh_from_db()
    assert child.state == CampaignState.READY
    assert child.scheduled_start_at is None
    entry = AuditLog.objects.for_object(child).get(action="scheduled_start_refused")
    assert "window closed" in entry.comment


def test_the_beat_schedule_runs_the_scheduled_starts(settings):
    entries = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()]
    assert "campaigns.tasks.start_scheduled_campaigns" in entries


# API ----------------------------------------------------------------------------------------


def test_the_api_starts_schedules_and_refuses_by_the_same_rule(
    make_child, org, django_capture_on_commit_callbacks
):
    from rest_framework.test import APIClient

    child = make_child()
    url = reverse("api:campaign-start", args=[child.pk])
    other = APIClient()
    other.force_authenticate(org.operator_b)
    assert other.post(url, {}, format="json").status_code == 404
    approver = APIClient()
    approver.force_authenticate(org.approver_a)
    assert approver.post(url, {}, format="json").status_code == 403
    api = APIClient()
    api.force_authenticate(org.operator_a)
    at = timezone.now() + timedelta(days=30)
    refused = api.post(url, {"at": at.isoformat()}, format="json")
    assert refused.status_code == 409
    assert "window closed" in refused.content.decode()
    at = timezone.now() + timedelta(days=1)
    scheduled = api.post(url, {"at": at.isoformat()}, format="json")
    assert scheduled.status_code == 200, scheduled.content
    assert scheduled.json()["scheduled_start_at"] is not None
    assert api.post(url, {"unschedule": True}, format="json").json()["scheduled_start_at"] is None
    with django_capture_on_commit_callbacks(execute=True):
        started = api.post(url, {}, format="json")
    assert started.status_code == 200
    assert started.json()["state"] in ("running", "completed")


# The parent's table ---------------------------------------------------------------------------


def test_the_parent_page_lists_each_child_with_its_run_state_and_counts(
    make_child, parent, org, client, django_capture_on_commit_callbacks, django_assert_num_queries
):
    child = make_child()
    start(child, org.operator_a, django_capture_on_commit_callbacks)
    rows = list(services.children_overview(parent))
    assert [(r.entity.code, r.state, r.targeted, r.sent) for r in rows] == [
        ("STORE_A", child.state, 0, 0)
    ]
    assert rows[0].last_run is not None
    with django_assert_num_queries(1):
        listed = services.children_overview(parent)
        assert [(r.entity.name, r.targeted, r.last_run is not None) for r in listed] == [
            ("Store A", 0, True)
        ]
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:detail", args=[parent.pk])).content.decode()
    assert "Child campaigns" in page
    assert child.name in page
    admin = client.get(reverse("admin:campaigns_campaign_change", args=[parent.pk]))
    body = admin.content.decode()
    assert child.name in body
    assert "last run" in body.lower()


def test_the_children_table_costs_the_same_queries_for_more_children(
    make_child, parent, org, django_assert_max_num_queries
):
    make_child()
    make_child(entity=org.store_b, operator=org.operator_b)
    with django_assert_max_num_queries(1):
        rows = [(r.entity.code, r.targeted, r.sent) for r in services.children_overview(parent)]
    assert [r[0] for r in rows] == ["STORE_A", "STORE_B"]


def test_the_admin_run_button_is_refused_by_the_same_rule(make_child, org, client):
    child = make_child()
    open_window(child.order.package, opens=5)
    client.force_login(org.marketer)
    url = reverse("admin:campaigns_campaign_run", args=[child.pk, "run"])
    response = client.post(url, follow=True)
    assert "window opens" in response.content.decode()
    child.refresh_from_db()
    assert child.state == CampaignState.READY
    assert not WorkflowRun.objects.filter(campaign=child).exists()


def test_the_parent_pages_need_no_more_queries_for_more_children(make_child, parent, org, client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_child()
    client.force_login(org.marketer)
    pages = [
        reverse("admin:campaigns_campaign_change", args=[parent.pk]),
        reverse("campaigns:detail", args=[parent.pk]),
    ]

    def queries(url):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    [queries(url) for url in pages]  # warm the caches (content types, sessions)
    before = [queries(url) for url in pages]
    make_child(entity=org.store_b, operator=org.operator_b)
    after = [queries(url) for url in pages]
    assert after == before


def test_stopping_a_child_withdraws_its_scheduled_start(make_child, org):
    child = make_child()
    services.schedule_start(
        campaign=child, actor=org.operator_a, at=timezone.now() + timedelta(hours=2)
    )
    services.run_campaign_transition(campaign=child, name="stop", actor=org.operator_a)
    child.refresh_from_db()
    assert (child.state, child.scheduled_start_at) == (CampaignState.STOPPED, None)


def test_a_package_whose_execution_window_ends_before_it_starts_is_not_published(
    make_package, parent
):
    now = timezone.now()
    package = make_package(
        campaign=parent,
        publish=False,
        execution_at=now + timedelta(days=20),
        execution_until=now + timedelta(days=19),
    )
    assert "The execution window must end after it starts." in package.publication_problems()


def test_only_a_child_is_started_or_scheduled_outside_the_central_workspace(org):
    """The portal answers 404 for any other kind; the API and the services refuse it too."""
    from rest_framework.test import APIClient

    own = CampaignFactory(entity=org.store_a, kind="local", state=CampaignState.READY)
    url = reverse("api:campaign-start", args=[own.pk])
    api = APIClient()
    api.force_authenticate(org.operator_a)
    for body in ({}, {"at": (timezone.now() + timedelta(days=1)).isoformat()}):
        refused = api.post(url, body, format="json")
        assert refused.status_code == 409, refused.content
        assert "child campaign" in refused.content.decode()
    own.refresh_from_db()
    assert own.state == CampaignState.READY and own.scheduled_start_at is None
    with pytest.raises(DomainError):
        services.start_campaign(campaign=own, actor=org.operator_a)
