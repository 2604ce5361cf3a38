"""Enrichment, the delivery hook, recurring schedulers and child-workflow edits."""

from datetime import date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from campaigns import services, targeting
from campaigns.models import Activity, Booking, Contact, WorkflowRun
from campaigns.targeting.words import condition_words
from campaigns.workflow import engine
from campaigns.workflow.activities import TYPES, Delivery, output_table
from campaigns.workflow.copy import copy_workflow
from campaigns.workflow.forms import settings_problems
from portal import services as portal_services
from portal.exceptions import DomainError
from portal.models import AuditLog
from tests.campaigns.workflow import QUERY, act, contacts_of, link, simulate
from tests.factories import CampaignFactory


@pytest.fixture
def bookings(audience):
    a0, a1 = Contact.objects.get(external_id="A0"), Contact.objects.get(external_id="A1")
    for reference, contact, amount, day, product in [
        ("R1", a0, "100.00", date(2026, 1, 10), "Ski week"),
        ("R2", a0, "300.00", date(2026, 3, 5), "Cruise"),
        ("R3", a1, "50.00", date(2025, 12, 1), "Ski week"),
    ]:
        Booking.objects.create(
            reference=reference,
            contact=contact,
            amount=Decimal(amount),
            booking_date=day,
            product=product,
            destination="Lisbon" if reference == "R2" else "Chamonix",
        )


def data_of(run, activity):
    rows = targeting.work_table(run.run_key, output_table(activity, "out"))
    return {row.contact.external_id: row.data for row in rows.select_related("contact")}


def test_enrichment_attaches_contact_fields_aggregates_and_record_fields(
    campaign, bookings, org, django_capture_on_commit_callbacks
):
    q = act(
        campaign,
        "q",
        "query",
        conditions={"field": "external_id", "op": "in", "value": ["A0", "A1", "A2"]},
    )
    enrich = act(
        campaign,
        "enrich",
        "enrichment",
        fields=[
            {"name": "language", "field": "language"},
            {"name": "trips", "relation": "bookings", "aggregate": "count"},
            {"name": "spent", "relation": "bookings", "aggregate": "sum", "field": "amount"},
            {"name": "ski_trips", "relation": "bookings", "aggregate": "count",
             "where": {"field": "product", "op": "eq", "value": "Ski week"}},
        ],
    )  # fmt: skip
    more = act(
        campaign,
        "more",
        "enrichment",
        fields=[{"name": "last_trip", "relation": "bookings", "aggregate": "max",
                 "field": "booking_date"}],
    )  # fmt: skip
    link(campaign, q, enrich)
    link(campaign, enrich, more)
    link(campaign, more, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed"
    data = data_of(run, more)
    assert data["A0"]["language"] == "en" and data["A1"]["language"] == "fr"
    assert {k: data[k]["trips"] for k in data} == {"A0": 2, "A1": 1, "A2": 0}
    assert {k: data[k]["ski_trips"] for k in data} == {"A0": 1, "A1": 1, "A2": 0}
    assert Decimal(str(data["A0"]["spent"])) == Decimal("400")
    assert data["A0"]["last_trip"] == "2026-03-05"  # the second enrichment merged its key
    assert "trips" in data["A0"]


def test_enrichment_reads_the_booking_a_row_is_about(
    campaign, bookings, org, django_capture_on_commit_callbacks
):
    q = act(campaign, "q", "query", dimension="booking", conditions={})
    enrich = act(
        campaign,
        "enrich",
        "enrichment",
        fields=[{"name": "destination", "record": "booking", "field": "destination"}],
    )
    link(campaign, q, enrich)
    link(campaign, enrich, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    rows = targeting.work_table(run.run_key, output_table(enrich, "out"))
    by_booking = {
        Booking.objects.get(pk=row.secondary_id).reference: row.data["destination"] for row in rows
    }
    assert by_booking == {"R1": "Chamonix", "R2": "Lisbon", "R3": "Chamonix"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "non-empty list"),
        ([{"name": "Bad Name", "field": "language"}], "distinct identifier"),
        ([{"name": "x", "field": "password"}], "field must be a field of contact"),
        ([{"name": "x", "relation": "orders"}], "relation must be one of"),
        ([{"name": "x", "relation": "bookings", "aggregate": "median"}], "aggregate must be"),
        ([{"name": "x", "relation": "bookings", "aggregate": "sum", "field": "product"}],
         "number or date field"),
        ([{"name": "x", "relation": "bookings", "where": {"field": "nope", "op": "eq"}}],
         "fields[0]"),
        ([{"name": "x", "record": "contact", "field": "email"}], "booking or subscription"),
    ],
)  # fmt: skip
def test_enrichment_settings_are_validated_naming_the_activity(campaign, fields, message):
    q = act(campaign, "q", "query", conditions={})
    enrich = act(campaign, "enrich", "enrichment", fields=fields)
    enrich.label = "Add data"
    enrich.save()
    link(campaign, q, enrich)
    problems = engine.validate_workflow(campaign)
    assert any(p.startswith("Activity “Add data”") and message in p for p in problems), problems


def test_a_delivery_calls_its_hook_on_real_runs_only(
    campaign, audience, org, django_capture_on_commit_callbacks, monkeypatch
):
    seen = []
    monkeypatch.setattr(Delivery, "hooks", [lambda ctx, now: seen.append(ctx.activity.key)])
    q = act(campaign, "q", "query", conditions=QUERY)
    send = act(campaign, "send", "delivery", channel="sms", text_body="Hi {{ contact.first_name }}")
    link(campaign, q, send)
    link(campaign, send, act(campaign, "end", "end"))
    simulate(campaign, org, django_capture_on_commit_callbacks)
    assert seen == []
    portal_services.transition(obj=campaign, name="mark_ready")
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    assert seen == ["send"]
    assert contacts_of(run, send) == contacts_of(run, q)
    bad = act(campaign, "bad", "delivery", channel="pigeon")
    link(campaign, send, bad)
    assert any("channel must be one of" in p for p in engine.validate_workflow(campaign))


def test_a_query_may_only_be_started_by_a_scheduler(campaign):
    first = act(campaign, "first", "query", conditions={})
    second = act(campaign, "second", "query", conditions={})
    link(campaign, first, second)
    assert any("only a scheduler may start it" in p for p in engine.validate_workflow(campaign))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every": "month", "time": "09:00"}, "every must be one of"),
        ({"every": "day", "time": "25:00"}, "time of day"),
        ({"every": "week", "time": "09:00", "weekdays": ["funday"]}, "weekdays must list"),
        ({"every": "hour", "minute": 75}, "minute must be"),
        ({"every": "day", "time": "09:00", "times": 0}, "times must be"),
    ],
)
def test_recurring_scheduler_settings_are_validated(options, message):
    assert any(message in p for p in settings_problems("scheduler", options))


def test_next_occurrences_of_recurring_schedulers():
    scheduler = TYPES["scheduler"]
    now = timezone.make_aware(datetime(2026, 11, 26, 10, 30))  # a Thursday
    at = timezone.make_aware
    assert scheduler.wake_at({"every": "hour", "minute": 15}, now) == at(
        datetime(2026, 11, 26, 11, 15)
    )
    assert scheduler.wake_at({"every": "day", "time": "09:00"}, now) == at(
        datetime(2026, 11, 27, 9)
    )
    weekly = {"every": "week", "time": "08:00", "weekdays": ["monday", "thursday"]}
    assert scheduler.wake_at(weekly, now) == at(datetime(2026, 11, 30, 8))
    ended = {"every": "day", "time": "09:00", "until": "2026-11-27T08:00:00+00:00"}
    assert scheduler.wake_at(ended, now) is None


def test_a_recurring_scheduler_starts_a_new_run_at_each_occurrence(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    start = act(campaign, "start", "scheduler", every="day", time="09:00", times=2)
    q = act(campaign, "q", "query", conditions=QUERY)
    link(campaign, start, q)
    link(campaign, q, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    first_morning = timezone.make_aware(datetime(2026, 12, 1, 7, 0))
    with time_machine.travel(first_morning, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            engine.start_run(campaign=campaign, actor=org.marketer)
        assert engine.wake_due() == 0  # parked until 09:00
    for day in (1, 2):
        with (
            time_machine.travel(timezone.make_aware(datetime(2026, 12, day, 9, 1)), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            assert engine.wake_due() == 1
    runs = list(WorkflowRun.objects.filter(campaign=campaign).order_by("id"))
    campaign.refresh_from_db()
    assert [run.state for run in runs] == ["completed", "completed"]
    assert campaign.state == "completed"  # two occurrences, then done
    assert contacts_of(runs[1], q) == contacts_of(runs[0], q) and len(contacts_of(runs[1], q)) == 11


# Child campaigns: the local entity edits its workflow within the parent's limits -------------


@pytest.fixture
def family(org):
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    q = act(parent, "q", "query", conditions=QUERY)
    wait = act(parent, "wait", "wait", days=1)
    split = act(parent, "split", "split", branches=[{"label": "all", "percent": 100}])
    end = act(parent, "end", "end")
    Activity.objects.filter(pk__in=[q.pk, wait.pk]).update(local_edit=True)
    link(parent, q, wait)
    link(parent, wait, split)
    link(parent, split, end, "all")
    child = CampaignFactory(
        name="Child",
        kind="child",
        collaborative_type="by_campaign",
        entity=org.store_a,
        parent=parent,
    )
    copy_workflow(source=parent, target=child)
    return parent, child


def step(campaign, key):
    return campaign.activities.get(key=key)


def test_the_local_entity_changes_what_the_parent_allows(family, org):
    _parent, child = family
    french = {"field": "language", "op": "eq", "value": "fr"}
    services.update_child_activity(
        activity=step(child, "q"), settings={"conditions": french}, actor=org.operator_a
    )
    assert step(child, "q").settings == {"conditions": french}
    services.update_child_activity(
        activity=step(child, "wait"), settings={"hours": 6}, actor=org.operator_a
    )
    assert step(child, "wait").settings == {"hours": 6}
    entry = AuditLog.objects.filter(action="edit_activity").latest("id")
    assert entry.extra["before"] == {"days": 1} and entry.actor == org.operator_a


def test_the_local_entity_cannot_go_beyond_the_parents_limits(family, org):
    parent, child = family
    with pytest.raises(PermissionDenied, match="does not let you"):  # not marked editable
        services.update_child_activity(
            activity=step(child, "split"), settings={"branches": []}, actor=org.operator_a
        )
    with pytest.raises(DomainError, match="dimension set by the parent"):  # a key it may not set
        services.update_child_activity(
            activity=step(child, "q"),
            settings={"conditions": {}, "dimension": "booking"},
            actor=org.operator_a,
        )
    with pytest.raises(DomainError, match="break the workflow"):
        services.update_child_activity(
            activity=step(child, "wait"), settings={"days": -1}, actor=org.operator_a
        )
    assert step(child, "wait").settings == {"days": 1}  # nothing half-written
    with pytest.raises(PermissionDenied):  # another entity's child
        services.update_child_activity(
            activity=step(child, "wait"), settings={"days": 2}, actor=org.operator_b
        )
    with pytest.raises(PermissionDenied):  # the parent's own workflow is not a child's
        services.update_child_activity(
            activity=step(parent, "wait"), settings={"days": 2}, actor=org.operator_a
        )
    # The parent withdraws the right: the child's copy follows the parent.
    Activity.objects.filter(campaign=parent, key="wait").update(local_edit=False)
    with pytest.raises(PermissionDenied):
        services.update_child_activity(
            activity=step(child, "wait"), settings={"days": 2}, actor=org.operator_a
        )
    portal_services.transition(obj=child, name="mark_ready")
    portal_services.transition(obj=child, name="start")
    with pytest.raises(DomainError, match="can no longer be changed"):
        services.update_child_activity(
            activity=step(child, "q"), settings={"conditions": {}}, actor=org.operator_a
        )


def test_the_portal_edits_a_child_step(family, org, client):
    _parent, child = family
    client.force_login(org.operator_a)
    detail = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    wait_url = reverse("campaigns:activity_edit", args=[child.pk, step(child, "wait").pk])
    split_url = reverse("campaigns:activity_edit", args=[child.pk, step(child, "split").pk])
    assert wait_url in detail and split_url not in detail
    assert client.get(split_url).status_code == 403
    response = client.post(wait_url, {"days": "", "hours": "3", "minutes": ""})
    assert response.status_code == 302
    assert step(child, "wait").settings == {"hours": 3}
    response = client.post(wait_url, {"days": "", "hours": "", "minutes": ""})
    assert response.status_code == 200 and "give a duration" in response.content.decode()
    q_url = reverse("campaigns:activity_edit", args=[child.pk, step(child, "q").pk])
    page = client.get(q_url).content.decode()
    assert "data-query-builder" in page
    conditions = step(child, "q").settings["conditions"]
    assert f"Saved now: {condition_words(conditions)}." in page
    assert "(JSON)" not in page and "<textarea" not in page
    response = client.post(q_url, {"conditions": "{not json"})
    assert response.status_code == 200 and "Not valid JSON" in response.content.decode()
    client.force_login(org.operator_b)
    assert client.get(wait_url).status_code == 404
