"""Collaborative by target approval: per-entity lists, review pages, deadline defaults."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns.models import ActivityExecution, Contact, LocalApproval, TargetRemoval
from campaigns.workflow import engine, local_approval
from portal import services as portal_services
from portal.exceptions import DomainError
from portal.models import AuditLog, Notification
from tests.campaigns.workflow import act, contacts_of, link, simulate


def build(campaign, **settings):
    """query (everyone) → local approval (at most 8 per entity, lowest ids first) → end."""
    q = act(campaign, "q", "query", conditions={})
    review = act(
        campaign,
        "review",
        "local_approval",
        default_limit=8,
        order=["contact_id"],
        deadline_hours=48,
        **settings,
    )
    end = act(campaign, "end", "end")
    link(campaign, q, review)
    link(campaign, review, end)
    portal_services.transition(obj=campaign, name="mark_ready")
    return q, review, end


def start(campaign, org, capture):
    with capture(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    run.refresh_from_db()
    return run


def contact_ids(*external_ids):
    return list(Contact.objects.filter(external_id__in=external_ids).values_list("pk", flat=True))


def lists_of(run):
    return {item.entity.code: item for item in LocalApproval.objects.filter(execution__run=run)}


@pytest.mark.parametrize(
    ("on_deadline", "expected"),
    [
        ("send_none", {"A2", "A3", "A4", "A5", "A6", "A7"}),
        ("send_all", {"A2", "A3", "A4", "A5", "A6", "A7", "B0", "B1", "B2", "B3", "B4"}),
    ],
)
def test_one_entity_removes_two_and_approves_the_other_lets_the_deadline_pass(
    campaign, audience, org, django_capture_on_commit_callbacks, on_deadline, expected
):
    _q, review, _end = build(campaign, on_deadline=on_deadline)
    run = start(campaign, org, django_capture_on_commit_callbacks)
    execution = ActivityExecution.objects.get(run=run, activity=review)
    assert (execution.state, run.state) == ("waiting", "running")
    lists = lists_of(run)
    assert {code: item.rows for code, item in lists.items()} == {"STORE_A": 8, "STORE_B": 5}
    # One request per entity, addressed to the entity's reviewers, each emailed a review link.
    request_a = local_approval.request_of(lists["STORE_A"])
    assert set(request_a.approvers.values_list("username", flat=True)) == {
        "operator_a",
        "approver_a",
    }
    assert set(
        local_approval.request_of(lists["STORE_B"]).approvers.values_list("username", flat=True)
    ) == {"operator_b"}
    mail = Notification.objects.get(recipient=org.operator_a, kind="approval_request")
    assert reverse("campaigns:local_approval", args=[lists["STORE_A"].pk]) in mail.body_text

    removed = local_approval.remove_contacts(
        approval=lists["STORE_A"],
        contact_ids=contact_ids("A0", "A1"),
        reason="Already called by the store",
        actor=org.operator_a,
    )
    assert removed == 2
    with django_capture_on_commit_callbacks(execute=True):
        local_approval.decide(approval=lists["STORE_A"], actor=org.operator_a, approve=True)
    execution.refresh_from_db()
    assert execution.state == "waiting"  # STORE_B has not answered yet
    assert engine.wake_due() == 0

    with (
        time_machine.travel(timezone.now() + timedelta(hours=48, minutes=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert engine.wake_due() == 1
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert (run.state, campaign.state) == ("completed", "completed")
    assert contacts_of(run, review) == expected
    request_b = local_approval.request_of(lists["STORE_B"])
    assert request_b.state == ("expired" if on_deadline == "send_none" else "approved")
    assert AuditLog.objects.filter(action="remove_contacts", actor=org.operator_a).count() == 1


def test_when_every_entity_has_answered_the_run_goes_on_before_the_deadline(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    _q, review, _end = build(campaign, on_deadline="send_none")
    run = start(campaign, org, django_capture_on_commit_callbacks)
    lists = lists_of(run)
    with django_capture_on_commit_callbacks(execute=True):
        local_approval.decide(approval=lists["STORE_A"], actor=org.approver_a, approve=True)
        local_approval.decide(
            approval=lists["STORE_B"], actor=org.operator_b, approve=False, comment="Not now"
        )
    run.refresh_from_db()
    assert run.state == "completed"
    assert contacts_of(run, review) == {f"A{n}" for n in range(8)}


def test_the_approvals_deadline_task_also_wakes_the_activity(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    _q, review, _end = build(campaign, on_deadline="send_all")
    run = start(campaign, org, django_capture_on_commit_callbacks)
    with (
        time_machine.travel(timezone.now() + timedelta(hours=49)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert approvals.expire_overdue() == {"expired": 0, "approved": 2}
    run.refresh_from_db()
    assert run.state == "completed"
    assert len(contacts_of(run, review)) == 13


def test_removals_need_a_reason_a_pending_list_and_a_reviewer(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    from django.core.exceptions import PermissionDenied

    build(campaign)
    run = start(campaign, org, django_capture_on_commit_callbacks)
    lists = lists_of(run)
    with pytest.raises(DomainError, match="Say why"):
        local_approval.remove_contacts(
            approval=lists["STORE_A"],
            contact_ids=contact_ids("A0"),
            reason=" ",
            actor=org.operator_a,
        )
    with pytest.raises(PermissionDenied):
        local_approval.remove_contacts(
            approval=lists["STORE_A"],
            contact_ids=contact_ids("A0"),
            reason="x",
            actor=org.operator_b,
        )
    with pytest.raises(local_approval.NotInList):  # A9 is beyond the limit, B0 is not A's
        local_approval.remove_contacts(
            approval=lists["STORE_A"],
            contact_ids=contact_ids("A9", "B0"),
            reason="x",
            actor=org.operator_a,
        )
    assert not TargetRemoval.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        local_approval.decide(approval=lists["STORE_A"], actor=org.operator_a, approve=True)
    with pytest.raises(approvals.AlreadyDecided):
        local_approval.remove_contacts(
            approval=lists["STORE_A"],
            contact_ids=contact_ids("A0"),
            reason="x",
            actor=org.operator_a,
        )


def test_a_simulation_counts_every_list_as_approved_and_opens_nothing(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    _q, review, _end = build(campaign)
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed"
    assert len(contacts_of(run, review)) == 13
    assert not LocalApproval.objects.exists() and not ApprovalRequest.objects.exists()


def test_the_review_page_searches_sorts_pages_and_changes_only_its_own_list(
    campaign, audience, org, client, django_capture_on_commit_callbacks
):
    build(campaign)
    run = start(campaign, org, django_capture_on_commit_callbacks)
    lists = lists_of(run)
    url = reverse("campaigns:local_approval", args=[lists["STORE_A"].pk])
    client.force_login(org.operator_b)
    assert client.get(url).status_code == 404
    assert client.post(url, {"action": "approve"}).status_code == 404

    client.force_login(org.operator_a)
    page = client.get(url, {"sort": "-id"}).content.decode()
    assert page.index(">A7<") < page.index(">A0<") and ">A9<" not in page
    assert ">A3<" in client.get(url, {"q": "A3"}).content.decode()
    assert ">A4<" not in client.get(url, {"q": "A3"}).content.decode()
    # Another entity's contact in the removal: 404, nothing removed.
    b0 = contact_ids("B0")[0]
    response = client.post(url, {"action": "remove", "contact": [b0], "reason": "x"})
    assert response.status_code == 404
    response = client.post(url, {"action": "remove", "contact": contact_ids("A0"), "reason": ""})
    assert response.status_code == 302 and not TargetRemoval.objects.exists()
    response = client.post(
        url, {"action": "remove", "contact": contact_ids("A0", "A1"), "reason": "Moved away"}
    )
    assert response.status_code == 302
    body = client.get(url, {"sort": "removed"}).content.decode()
    assert "Moved away" in body and "Contacts (8)" in body
    client.post(url, {"action": "restore", "contact": contact_ids("A1")})
    assert list(TargetRemoval.objects.values_list("contact__external_id", flat=True)) == ["A0"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"action": "approve", "comment": "Fine"})
    assert response.status_code == 302
    assert local_approval.request_of(lists["STORE_A"]).state == "approved"
    assert "Remove the selected" not in client.get(url).content.decode()


def test_a_report_after_a_delivery_tells_each_entity_what_was_sent(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    q = act(
        campaign, "q", "query", conditions={"field": "email_consent", "op": "eq", "value": True}
    )
    send = act(campaign, "send", "delivery", channel="email", subject="Hello",
               text_body="Hello {{ contact.first_name }}")  # fmt: skip
    report = act(campaign, "report", "local_approval", mode="report")
    link(campaign, q, send)
    link(campaign, send, report)
    link(campaign, report, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    run = start(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed"  # a report does not wait for anyone
    assert contacts_of(run, report) == {"A0", "A1", "A2", "A3", "A4", "A5"} | {
        f"B{n}" for n in range(5)
    }
    mail = Notification.objects.get(recipient=org.operator_a, kind="local_report")
    assert (
        "reached 6 contacts" in mail.body_text and "send (Email): 6 messages sent" in mail.body_text
    )
    assert not ApprovalRequest.objects.exists()
    assert {item.rows for item in LocalApproval.objects.filter(mode="report")} == {6, 5}


def test_lists_show_on_the_campaign_page_and_in_the_admin_scoped_to_the_entity(
    campaign, audience, org, client, django_capture_on_commit_callbacks
):
    build(campaign)
    run = start(campaign, org, django_capture_on_commit_callbacks)
    lists = lists_of(run)
    a_url = reverse("campaigns:local_approval", args=[lists["STORE_A"].pk])
    b_url = reverse("campaigns:local_approval", args=[lists["STORE_B"].pk])
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:detail", args=[campaign.pk])).content.decode()
    assert a_url in page and b_url in page and "pending" in page
    admin_list = client.get(reverse("admin:campaigns_localapproval_changelist")).content.decode()
    assert "Store A" in admin_list or "STORE_A" in admin_list
    assert (
        client.get(
            reverse("admin:campaigns_localapproval_change", args=[lists["STORE_A"].pk])
        ).status_code
        == 200
    )
    client.force_login(org.operator_a)
    response = client.get(
        reverse("admin:campaigns_localapproval_change", args=[lists["STORE_B"].pk])
    )
    assert response.status_code in (302, 404)


@pytest.mark.parametrize(
    ("on_deadline", "label", "sentence"),
    [
        ("send_none", "not sent", "nothing was sent to these contacts"),
        ("send_all", "approved", "kept in the target"),
    ],
)
def test_an_expired_list_says_what_became_of_its_rows(
    campaign, audience, org, client, django_capture_on_commit_callbacks, on_deadline, label,
    sentence,
):  # fmt: skip
    _q, review, _end = build(campaign, on_deadline=on_deadline)
    run = start(campaign, org, django_capture_on_commit_callbacks)
    url = reverse("campaigns:local_approval", args=[lists_of(run)["STORE_B"].pk])
    client.force_login(org.operator_b)
    assert "<td>in the list</td>" in client.get(url).content.decode()  # pending: in the list
    with (
        time_machine.travel(timezone.now() + timedelta(hours=48, minutes=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        engine.wake_due()
    run.refresh_from_db()
    assert run.state == "completed"  # every list expired under send_none: an empty target
    assert len(contacts_of(run, review)) == (0 if on_deadline == "send_none" else 13)
    body = client.get(url).content.decode()
    assert "<td>in the list</td>" not in body
    assert body.count(f"<td>{label}</td>") == 5
    assert sentence in body
