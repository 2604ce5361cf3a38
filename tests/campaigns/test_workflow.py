import pytest
from django.core.exceptions import PermissionDenied

from campaigns import targeting
from campaigns.models import Activity, ActivityExecution, Transition
from campaigns.workflow import engine
from campaigns.workflow.activities import output_table
from portal import services as portal_services
from portal.exceptions import DomainError
from tests.campaigns.workflow import FRENCH, QUERY, act, contacts_of, link, simulate
from tests.factories import CampaignFactory


def test_set_operations_give_exact_sets(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    consent = act(campaign, "consent", "query", conditions=QUERY)
    french = act(campaign, "french", "query", conditions=FRENCH)
    union = act(campaign, "union", "union")
    both = act(campaign, "both", "intersection")
    minus = act(campaign, "minus", "exclusion")
    end = act(campaign, "end", "end")
    for target in (union, both, minus):
        link(campaign, consent, target)
        link(campaign, french, target)
        link(campaign, target, end)
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed", run.error
    consenting = {"A0", "A1", "A2", "A3", "A4", "A5", "B0", "B1", "B2", "B3", "B4"}
    french_ones = {"A1", "A3", "A5", "A7", "A9"}
    assert contacts_of(run, consent) == consenting
    assert contacts_of(run, union) == consenting | french_ones
    assert contacts_of(run, both) == consenting & french_ones
    assert contacts_of(run, minus) == consenting - french_ones
    counts = engine.counts(run)
    to_end = Transition.objects.get(source=union, target=end)
    assert counts[to_end.pk] == len(consenting | french_ones)


def test_split_by_conditions_limits_and_remainder(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    everyone = act(campaign, "all", "query", conditions={})
    split = act(
        campaign,
        "split",
        "split",
        branches=[
            {"label": "french", "conditions": FRENCH, "limit": 3},
            {
                "label": "store_b",
                "conditions": {"field": "entity.code", "op": "eq", "value": "STORE_B"},
            },
        ],
        remainder="others",
    )
    end = act(campaign, "end", "end")
    link(campaign, everyone, split)
    for label in ("french", "store_b", "others"):
        link(campaign, split, end, label)
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed", run.error
    assert contacts_of(run, split, "french") == {"A1", "A3", "A5"}
    assert contacts_of(run, split, "store_b") == {"B0", "B1", "B2", "B3", "B4"}
    # the french contacts over the limit are not taken by a branch: they are the remainder
    assert contacts_of(run, split, "others") == {"A0", "A2", "A4", "A6", "A7", "A8", "A9"}


def test_split_by_percentages_is_stable_and_complete(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    everyone = act(campaign, "all", "query", conditions={})
    split = act(
        campaign,
        "split",
        "split",
        branches=[{"label": "a", "percent": 50}, {"label": "b", "percent": 50}],
    )
    end = act(campaign, "end", "end")
    link(campaign, everyone, split)
    link(campaign, split, end, "a")
    link(campaign, split, end, "b")
    first = simulate(campaign, org, django_capture_on_commit_callbacks)
    second = simulate(campaign, org, django_capture_on_commit_callbacks)
    a1, b1 = contacts_of(first, split, "a"), contacts_of(first, split, "b")
    assert a1.isdisjoint(b1) and len(a1 | b1) == 15
    assert contacts_of(second, split, "a") == a1  # the same contact lands in the same half


def test_deduplication_and_distribution(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    everyone = act(campaign, "all", "query", conditions={})
    again = act(campaign, "again", "query", conditions={})
    union = act(campaign, "union", "union")
    dedup = act(campaign, "dedup", "deduplication")
    dist = act(campaign, "dist", "distribution", default_limit=2, limits={"STORE_B": 4})
    end = act(campaign, "end", "end")
    link(campaign, everyone, union)
    link(campaign, again, union)
    link(campaign, union, dedup)
    link(campaign, dedup, dist)
    link(campaign, dist, end)
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed", run.error
    assert len(contacts_of(run, dedup)) == 15
    kept = contacts_of(run, dist)
    assert len([c for c in kept if c.startswith("A")]) == 2
    assert len([c for c in kept if c.startswith("B")]) == 4


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda c: [], "has no activity"),
        (
            lambda c: [act(c, "q", "query", conditions={"field": "nope", "op": "eq"})],
            "Activity “q”: conditions: field",
        ),
        (lambda c: [act(c, "u", "union")], "needs at least 2 incoming"),
        (lambda c: [act(c, "x", "teleport")], "unknown type"),
        (
            lambda c: [
                act(
                    c,
                    "s",
                    "split",
                    branches=[{"label": "a", "percent": 70}, {"label": "b", "percent": 40}],
                )
            ],
            "more than 100",
        ),
    ],
)
def test_invalid_workflows_are_refused_naming_the_activity(campaign, build, message):
    build(campaign)
    problems = engine.validate_workflow(campaign)
    assert any(message in problem for problem in problems), problems


def test_cycles_and_unreachable_activities_are_refused(campaign):
    q = act(campaign, "q", "query", conditions={})
    a = act(campaign, "a", "deduplication")
    b = act(campaign, "b", "deduplication")
    link(campaign, a, b)
    link(campaign, b, a)
    link(campaign, q, act(campaign, "end", "end"))
    problems = engine.validate_workflow(campaign)
    assert any("cycle" in p for p in problems)
    assert any("“a” cannot be reached" in p for p in problems)


def test_a_transition_from_an_unknown_output_is_refused(campaign):
    q = act(campaign, "q", "query", conditions={})
    link(campaign, q, act(campaign, "end", "end"), label="maybe")
    assert any("no output “maybe”" in p for p in engine.validate_workflow(campaign))


def test_a_real_run_moves_the_campaign_and_simulate_gives_the_same_counts(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    q = act(campaign, "q", "query", conditions=QUERY)
    split = act(
        campaign,
        "split",
        "split",
        branches=[{"label": "fr", "conditions": FRENCH}],
        remainder="rest",
    )
    end = act(campaign, "end", "end")
    link(campaign, q, split)
    link(campaign, split, end, "fr")
    link(campaign, split, end, "rest")
    with pytest.raises(DomainError, match="Only a ready campaign"):
        engine.start_run(campaign=campaign, actor=org.marketer)
    portal_services.transition(obj=campaign, name="mark_ready")
    simulated = simulate(campaign, org, django_capture_on_commit_callbacks)
    campaign.refresh_from_db()
    assert campaign.state == "ready"  # a simulation changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        real = engine.start_run(campaign=campaign, actor=org.marketer)
    real.refresh_from_db()
    campaign.refresh_from_db()
    assert (real.state, campaign.state) == ("completed", "completed")
    assert engine.counts(real) == engine.counts(simulated)
    assert sorted(engine.counts(real).values()) == [3, 8, 11]


def test_a_redelivered_task_does_nothing(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    q = act(campaign, "q", "query", conditions={})
    link(campaign, q, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    execution = ActivityExecution.objects.get(run=run, activity=q)
    assert engine.run_activity(execution_id=execution.pk) == "skipped"
    assert targeting.work_table(run.run_key, output_table(q, "out")).count() == 15


def test_pause_holds_activities_and_resume_continues(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    q = act(campaign, "q", "query", conditions={})
    end = act(campaign, "end", "end")
    link(campaign, q, end)
    portal_services.transition(obj=campaign, name="mark_ready")
    run = engine.start_run(campaign=campaign, actor=org.marketer)  # tasks not yet enqueued
    engine.pause_run(run=run, actor=org.marketer)
    execution = ActivityExecution.objects.get(run=run, activity=q)
    assert engine.run_activity(execution_id=execution.pk) == "skipped"
    campaign.refresh_from_db()
    assert campaign.state == "paused"
    with django_capture_on_commit_callbacks(execute=True):
        engine.resume_run(run=run, actor=org.marketer)
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert (run.state, campaign.state) == ("completed", "completed")


def test_stop_ends_the_run(campaign, audience, org):
    q = act(campaign, "q", "query", conditions={})
    link(campaign, q, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    run = engine.start_run(campaign=campaign, actor=org.marketer)
    engine.stop_run(run=run, actor=org.marketer)
    campaign.refresh_from_db()
    assert campaign.state == "stopped"
    assert (
        engine.run_activity(execution_id=ActivityExecution.objects.get(run=run, activity=q).pk)
        == "skipped"
    )


def test_a_failed_activity_fails_the_run_and_can_be_retried_alone(
    campaign, audience, org, django_capture_on_commit_callbacks, monkeypatch
):
    from campaigns.workflow import activities

    q = act(campaign, "q", "query", conditions={})
    dedup = act(campaign, "dedup", "deduplication")
    link(campaign, q, dedup)
    link(campaign, dedup, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    original = activities.Deduplication.run
    monkeypatch.setattr(
        activities.Deduplication,
        "run",
        lambda self, ctx: (_ for _ in ()).throw(RuntimeError("disk full")),
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert (run.state, campaign.state) == ("failed", "failed")
    assert "disk full" in run.error
    failed = ActivityExecution.objects.get(run=run, activity=dedup)
    done_before = ActivityExecution.objects.get(run=run, activity=q).finished_at
    monkeypatch.setattr(activities.Deduplication, "run", original)
    with django_capture_on_commit_callbacks(execute=True):
        engine.retry_activity(execution=failed, actor=org.marketer)
    run.refresh_from_db()
    assert run.state == "completed"
    assert ActivityExecution.objects.get(run=run, activity=q).finished_at == done_before


def test_a_local_operator_cannot_simulate_without_the_right(campaign, org):
    act(campaign, "q", "query", conditions={})
    with pytest.raises(PermissionDenied):
        engine.start_run(campaign=campaign, actor=org.approver, simulate=True)


def test_a_child_campaign_queries_only_its_entity(
    org, audience, django_capture_on_commit_callbacks
):
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    child = CampaignFactory(
        name="Child",
        kind="child",
        collaborative_type="by_campaign",
        entity=org.store_b,
        parent=parent,
    )
    q = act(child, "q", "query", conditions={})
    link(child, q, act(child, "end", "end"))
    run = simulate(child, org, django_capture_on_commit_callbacks)
    assert contacts_of(run, q) == {"B0", "B1", "B2", "B3", "B4"}


def test_the_admin_edits_simulates_and_shows_counts(
    campaign, audience, org, client, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    q = act(campaign, "q", "query", conditions=QUERY)
    link(campaign, q, act(campaign, "end", "end"))
    client.force_login(org.marketer)
    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    assert "Simulate (counts only)" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:campaigns_campaign_run", args=[campaign.pk, "simulate"]), follow=True
        )
    assert "Simulation started over 2 steps; nothing is sent" in response.content.decode()
    from campaigns.models import WorkflowRun

    run = WorkflowRun.objects.get()
    page = client.get(reverse("admin:campaigns_workflowrun_change", args=[run.pk]))
    body = page.content.decode()
    assert "Completed" in body
    assert "populations per transition" in body.lower() and "<p>11</p>" in body


def test_activity_settings_are_validated_in_the_admin_form(campaign):
    from campaigns.admin import ActivityInlineForm

    form = ActivityInlineForm(
        data={
            "key": "q",
            "type": "query",
            "settings": '{"conditions": {"field": "secret", "op": "eq", "value": 1}}',
            "position_x": 0,
            "position_y": 0,
        },
        instance=Activity(campaign=campaign),
    )
    assert not form.is_valid()
    assert any("unknown field" in error for error in form.errors["settings"])


def test_the_diagram_draws_activities_and_counts_and_escapes_labels(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    from campaigns.workflow import diagram

    q = act(campaign, "q", "query", conditions=QUERY)
    q.label = "<script>alert(1)</script>"
    q.save()
    link(campaign, q, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    svg = str(diagram.render(campaign, run))
    assert "<svg" in svg and svg.endswith("</svg></div>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert ">11</text>" in svg  # the population of q → end
    assert "Query (build an audience)" in svg


def test_a_wait_parks_the_run_until_beat_wakes_it(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    q = act(campaign, "q", "query", conditions=QUERY)
    wait = act(campaign, "wait", "wait", days=2)
    end = act(campaign, "end", "end")
    link(campaign, q, wait)
    link(campaign, wait, end)
    portal_services.transition(obj=campaign, name="mark_ready")
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    parked = ActivityExecution.objects.get(run=run, activity=wait)
    run.refresh_from_db()
    assert (parked.state, run.state) == ("waiting", "running")
    assert engine.wake_due() == 0
    assert engine.run_activity(execution_id=parked.pk) == "waiting"  # too early: stays parked
    with (
        time_machine.travel(timezone.now() + timedelta(days=2, minutes=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert engine.wake_due() == 1
    run.refresh_from_db()
    campaign.refresh_from_db()
    assert (run.state, campaign.state) == ("completed", "completed")
    assert contacts_of(run, wait) == contacts_of(run, q)


def test_a_simulation_does_not_wait(campaign, audience, org, django_capture_on_commit_callbacks):
    q = act(campaign, "q", "query", conditions=QUERY)
    later = act(campaign, "later", "scheduler", at="2099-01-01T09:00:00+00:00")
    link(campaign, q, later)
    link(campaign, later, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed"


@pytest.mark.parametrize(
    ("type_", "options", "message"),
    [
        ("wait", {}, "give a duration"),
        ("wait", {"hours": -1}, "whole numbers"),
        ("scheduler", {"at": "tomorrow"}, "date and time"),
    ],
)
def test_wait_and_scheduler_settings_are_validated(campaign, type_, options, message):
    q = act(campaign, "q", "query", conditions={})
    step = act(campaign, "step", type_, **options)
    link(campaign, q, step)
    assert any(message in p for p in engine.validate_workflow(campaign))


def test_the_local_operator_sees_its_childs_workflow(
    org, audience, client, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    child = CampaignFactory(
        name="Child",
        kind="child",
        collaborative_type="by_campaign",
        entity=org.store_a,
        parent=parent,
    )
    q = act(child, "q", "query", conditions={})
    link(child, q, act(child, "end", "end"))
    simulate(child, org, django_capture_on_commit_callbacks)
    client.force_login(org.operator_a)
    body = client.get(reverse("campaigns:detail", args=[child.pk])).content.decode()
    assert "<svg" in body and ">10</text>" in body
    client.force_login(org.operator_b)
    assert client.get(reverse("campaigns:detail", args=[child.pk])).status_code == 404


def test_a_saved_audience_feeds_the_workflow(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    from campaigns.models import SavedQuery

    saved = SavedQuery.objects.create(name="French", entity=org.hq, conditions=FRENCH)
    read = act(campaign, "read", "read_audience", saved_query=saved.pk)
    link(campaign, read, act(campaign, "end", "end"))
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert contacts_of(run, read) == {"A1", "A3", "A5", "A7", "A9"}
    assert Activity.objects.get(pk=read.pk).settings == {"saved_query": saved.pk}


def test_simulating_again_drops_the_older_simulations_tables(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    from django.db import connection

    from campaigns.models import WorkTable

    q = act(campaign, "q", "query", conditions=QUERY)
    link(campaign, q, act(campaign, "end", "end"))

    def tables_of(run):
        return {entry.table_name for entry in WorkTable.objects.filter(run_key=run.run_key)}

    runs = [simulate(campaign, org, django_capture_on_commit_callbacks)]
    written_first = tables_of(runs[0])
    assert written_first and written_first <= set(connection.introspection.table_names())
    runs += [simulate(campaign, org, django_capture_on_commit_callbacks) for _ in range(2)]
    assert [run.state for run in runs] == ["completed"] * 3
    tables = set(connection.introspection.table_names())
    assert not written_first & tables and not tables_of(runs[0])
    assert contacts_of(runs[0], q) == set()  # a dropped step reads as empty
    assert tables_of(runs[1]) <= tables and tables_of(runs[2]) <= tables
    assert contacts_of(runs[1], q) == contacts_of(runs[2], q) != set()
    assert engine.counts(runs[0]) == engine.counts(runs[2])  # the counts stay


def test_split_by_conditions_without_limits_gives_each_contact_to_its_first_branch(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    everyone = act(campaign, "all", "query", conditions={})
    split = act(
        campaign,
        "split",
        "split",
        branches=[
            {
                "label": "store_b",
                "conditions": {"field": "entity.code", "op": "eq", "value": "STORE_B"},
            },
            {"label": "consenting", "conditions": QUERY},
            {"label": "french", "conditions": FRENCH},
        ],
        remainder="others",
    )
    end = act(campaign, "end", "end")
    link(campaign, everyone, split)
    for label in ("store_b", "consenting", "french", "others"):
        link(campaign, split, end, label)
    run = simulate(campaign, org, django_capture_on_commit_callbacks)
    assert run.state == "completed", run.error
    assert contacts_of(run, split, "store_b") == {"B0", "B1", "B2", "B3", "B4"}
    assert contacts_of(run, split, "consenting") == {"A0", "A1", "A2", "A3", "A4", "A5"}
    assert contacts_of(run, split, "french") == {"A7", "A9"}
    assert contacts_of(run, split, "others") == {"A6", "A8"}


def test_a_retried_activity_rewrites_only_its_own_tables(
    campaign, audience, org, django_capture_on_commit_callbacks, monkeypatch
):
    from campaigns.models import WorkTable
    from campaigns.workflow import activities

    q = act(campaign, "q", "query", conditions=QUERY)
    dedup = act(campaign, "dedup", "deduplication")
    link(campaign, q, dedup)
    link(campaign, dedup, act(campaign, "end", "end"))
    portal_services.transition(obj=campaign, name="mark_ready")
    original = activities.Deduplication.run

    def write_then_fail(self, ctx):
        original(self, ctx)  # its table is written, then the activity fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(activities.Deduplication, "run", write_then_fail)
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    run.refresh_from_db()
    assert run.state == "failed"
    query_table = WorkTable.objects.get(run_key=run.run_key, name=output_table(q, "out"))
    # the failed step's table went with its transaction
    assert not WorkTable.objects.filter(run_key=run.run_key, name=output_table(dedup, "out"))
    monkeypatch.setattr(activities.Deduplication, "run", original)
    failed = ActivityExecution.objects.get(run=run, activity=dedup)
    with django_capture_on_commit_callbacks(execute=True):
        engine.retry_activity(execution=failed, actor=org.marketer)
    run.refresh_from_db()
    assert run.state == "completed"
    assert WorkTable.objects.get(pk=query_table.pk).table_name == query_table.table_name
    assert contacts_of(run, dedup) == contacts_of(run, q) != set()
