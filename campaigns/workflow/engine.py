"""The workflow engine: validate a graph, start a run (or a simulation), execute each activity
as a Celery task once all its inputs are ready, record counts, and honour pause and stop
between activities. A task delivered twice finds its activity claimed and does nothing."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from campaigns import targeting
from campaigns.choices import CampaignState
from campaigns.models import (
    Activity,
    ActivityExecution,
    Campaign,
    ExecutionState,
    TransitionCount,
    WorkflowRun,
    WorkflowRunState,
    WorkTable,
)
from campaigns.workflow.activities import TYPES, Context, output_table
from campaigns.workflow.forms import settings_problems
from portal import services as portal_services
from portal.exceptions import DomainError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A problem of a workflow, naming its step (an activity key) when it has one."""

    step: str | None
    message: str

    def __str__(self) -> str:
        return self.message


def validate_workflow(campaign: Campaign) -> list[str]:
    """Every problem of the graph, each naming its activity."""
    activities = list(campaign.activities.all())
    transitions = list(campaign.transitions.select_related("source", "target"))
    by_id = {activity.pk: activity for activity in activities}
    problems: list[str] = []
    arrows = []
    for item in transitions:
        if item.source_id not in by_id or item.target_id not in by_id:
            problems.append(f"Transition {item} links an activity of another campaign.")
            continue
        arrows.append((by_id[item.source_id].key, item.label, by_id[item.target_id].key))
    return problems + [str(p) for p in graph_problems(activities, arrows, campaign=campaign)]


def graph_problems(
    activities: list[Activity], arrows: list[tuple[str, str, str]], *, campaign: Any = None
) -> list[Problem]:
    """Every problem of a graph given as (possibly unsaved) activities and arrows
    ``(source key, output label, target key)``: settings (by the type's form), inputs,
    outputs, cycles and unreachable steps, each naming its step."""
    if not activities:
        return [Problem(None, "The workflow has no activity.")]
    problems: list[Problem] = []
    by_key = {activity.key: activity for activity in activities}
    incoming: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    outgoing: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for arrow in arrows:
        source, _label, target = arrow
        if source not in by_key or target not in by_key:
            missing = target if target not in by_key else source
            step = source if source in by_key else (target if target in by_key else None)
            problems.append(Problem(step, f"A transition links the unknown step “{missing}”."))
            continue
        incoming[target].append(arrow)
        outgoing[source].append(arrow)
    for activity in activities:
        kind = TYPES.get(activity.type)
        name = f"Activity “{activity}”"
        key = activity.key

        def add(message: str, key: str = key) -> None:
            problems.append(Problem(key, message))

        if kind is None:
            add(f"{name}: unknown type {activity.type!r}.")
            continue
        settings = activity.settings if isinstance(activity.settings, dict) else None
        if settings is None:
            add(f"{name}: settings must be an object.")
            continue
        own = settings_problems(activity.type, settings, campaign=campaign)
        for problem in own:
            add(f"{name}: {problem}")
        count = len(incoming[key])
        if count < kind.min_inputs:
            add(f"{name} needs at least {kind.min_inputs} incoming transition(s).")
        if kind.max_inputs is not None and count > kind.max_inputs:
            add(f"{name} takes at most {kind.max_inputs} incoming transition(s).")
        if kind.triggered_only and any(
            by_key[source].type not in ("scheduler", "wait") for source, _, _ in incoming[key]
        ):
            add(f"{name} builds its own population: only a scheduler may start it.")
        if not own:
            labels = set(kind.outputs(settings))
            for _, label, _ in outgoing[key]:
                if label not in labels:
                    allowed = ", ".join(sorted(labels)) or "none"
                    add(f"{name} has no output “{label}” (outputs: {allowed}).")
    edges = [(s, t) for s, _, t in arrows if s in by_key and t in by_key]
    looping = _in_cycles([a.key for a in activities], edges)
    if looping:
        problems.append(Problem(None, "The workflow has a cycle: transitions must not loop back."))
        for key in looping:
            problems.append(
                Problem(key, f"Activity “{by_key[key]}” is on a cycle: a transition loops back.")
            )
    reachable = _reachable([a.key for a in activities if not incoming[a.key]], outgoing)
    for activity in activities:
        if activity.key not in reachable:
            problems.append(
                Problem(activity.key, f"Activity “{activity}” cannot be reached from a start.")
            )
    return problems


def _in_cycles(keys: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """The steps left when sources are peeled off repeatedly (Kahn): those on or after a
    cycle, of which the ones that can reach themselves are on it."""
    indegree = dict.fromkeys(keys, 0)
    following: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        following[source].append(target)
        indegree[target] += 1
    queue = deque(key for key, degree in indegree.items() if degree == 0)
    while queue:
        key = queue.popleft()
        for nxt in following[key]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    left = [key for key, degree in indegree.items() if degree > 0]
    on_cycle = []
    for start in left:
        seen, stack = set(), list(following[start])
        while stack:
            key = stack.pop()
            if key == start:
                on_cycle.append(start)
                break
            if key not in seen:
                seen.add(key)
                stack += following[key]
    return on_cycle


def _reachable(starts: list[str], outgoing: dict[str, list[tuple[str, str, str]]]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack += [target for _, _, target in outgoing[key]]
    return seen


def start_run(*, campaign: Campaign, actor: Any, simulate: bool = False) -> WorkflowRun:
    """Start the workflow (the campaign moves to running) or simulate it (counts only)."""
    problems = validate_workflow(campaign)
    if problems:
        raise DomainError("The workflow is not valid: " + " ".join(problems), problems=problems)
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if not simulate:
            from campaigns.services import start_refusal

            if campaign.state != CampaignState.READY:
                raise DomainError(
                    f"Only a ready campaign can run; this one is {campaign.get_state_display()}."
                )
            # The child's rule (order, execution window, kept typology and limits), checked
            # under the lock whoever starts it: portal, admin, API or the scheduled start.
            if refusal := start_refusal(campaign):
                raise DomainError(refusal)
            scheduled = campaign.scheduled_start_at
            campaign.scheduled_start_at = None
            campaign.last_run_at = timezone.now()
            portal_services.transition(
                obj=campaign,
                name="start",
                actor=actor,
                comment="Scheduled start." if actor is None and scheduled else "",
                extra={"scheduled_for": scheduled.isoformat()} if scheduled else None,
            )
        elif actor is not None and not actor.has_perm("campaigns.change_campaign"):
            raise PermissionDenied("Your role does not allow simulating campaigns.")
        run = _create_run(campaign, actor=actor, simulate=simulate)
    return run


def _create_run(campaign: Campaign, *, actor: Any, simulate: bool) -> WorkflowRun:
    """A run with one pending execution per activity; the first ones start on commit."""
    if simulate:
        # Simulated again: the tables of older simulations are dropped (their counts stay);
        # the latest one's stay, to compare with this one, and so do running ones.
        earlier_runs = (
            campaign.runs.filter(simulate=True)
            .exclude(state=WorkflowRunState.RUNNING)
            .order_by("-pk")
            .only("pk")
        )
        for earlier in earlier_runs[1:]:
            targeting.drop_run(earlier.run_key)
    run = WorkflowRun.objects.create(
        campaign=campaign,
        simulate=simulate,
        started_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    ActivityExecution.objects.bulk_create(
        [ActivityExecution(run=run, activity=a) for a in campaign.activities.all()]
    )
    portal_services.record_audit(
        obj=campaign, action="simulate" if simulate else "run", actor=actor, extra={"run": run.pk}
    )
    transaction.on_commit(partial(_enqueue_ready, run.pk))
    return run


def _ready(run: WorkflowRun) -> list[int]:
    """Pending executions whose every input activity is done."""
    done = set(
        run.executions.filter(state=ExecutionState.DONE).values_list("activity_id", flat=True)
    )
    sources: dict[int, set[int]] = defaultdict(set)
    for source_id, target_id in run.campaign.transitions.values_list("source_id", "target_id"):
        sources[target_id].add(source_id)
    return [
        execution.pk
        for execution in run.executions.filter(state=ExecutionState.PENDING)
        if sources[execution.activity_id] <= done
    ]


def _enqueue_ready(run_id: int) -> None:
    from campaigns.tasks import execute_activity

    run = WorkflowRun.objects.get(pk=run_id)
    if run.state != WorkflowRunState.RUNNING:
        return
    for execution_id in _ready(run):
        execute_activity.delay(execution_id)


def run_activity(*, execution_id: int) -> str:
    """Execute one activity of a run (the Celery task's body); idempotent."""
    with transaction.atomic():
        execution = (
            ActivityExecution.objects.select_for_update()
            .select_related("run__campaign", "activity__campaign")
            .get(pk=execution_id)
        )
        run = execution.run
        if run.state != WorkflowRunState.RUNNING:
            return "skipped"
        activity = execution.activity
        incoming = list(activity.incoming.select_related("source").order_by("id"))
        ctx = Context(
            run_key=run.run_key,
            activity=activity,
            input_names=[output_table(item.source, item.label) for item in incoming],
            execution=execution,
            simulate=run.simulate,
        )
        now = timezone.now()
        failure = None
        if execution.state == ExecutionState.WAITING:
            if execution.wake_at > now:
                return "waiting"
        elif execution.state != ExecutionState.PENDING:
            return "skipped"
        elif not run.simulate:
            try:
                with transaction.atomic():
                    wake_at = TYPES[activity.type].park(ctx, now)
            except Exception as exc:  # the activity fails, with its message
                failure, wake_at = exc, None
            if wake_at is not None:
                portal_services.transition(obj=execution, name="park", wake_at=wake_at)
                return "waiting"
        portal_services.transition(obj=execution, name="start")
    if failure is not None:
        logger.error("Activity %s failed: %s", activity, failure)
        _fail(execution_id, f"{type(failure).__name__}: {failure}")
        return "failed"
    try:
        with transaction.atomic():
            TYPES[activity.type].run(ctx)
            # The registry records each table's rows when it is written: no COUNT(*).
            written = dict(
                WorkTable.objects.filter(
                    run_key=run.run_key,
                    name__in=[
                        *ctx.input_names,
                        *(output_table(activity, item.label) for item in activity.outgoing.all()),
                    ],
                ).values_list("name", "rows")
            )
            rows_in = sum(written.get(name, 0) for name in ctx.input_names)
            for item in activity.outgoing.all():
                rows = written.get(output_table(activity, item.label), 0)
                TransitionCount.objects.update_or_create(
                    run=run, transition=item, defaults={"rows": rows}
                )
            portal_services.transition(obj=execution, name="finish", rows_in=rows_in)
    except Exception as exc:  # an activity failure fails the run, with its message
        logger.exception("Activity %s failed", activity)
        _fail(execution_id, f"{type(exc).__name__}: {exc}")
        return "failed"
    _after(run.pk)
    return "done"


def wake(*, execution_id: int) -> bool:
    """Wake a parked activity now (e.g. every local entity has answered); on commit."""
    from campaigns.tasks import execute_activity

    woken = ActivityExecution.objects.filter(pk=execution_id, state=ExecutionState.WAITING).update(
        wake_at=timezone.now()
    )
    if woken:
        transaction.on_commit(partial(execute_activity.delay, execution_id))
    return bool(woken)


def wake_due(*, now: Any = None) -> int:
    """Beat: run the wait and scheduler activities whose time has come."""
    from campaigns.tasks import execute_activity

    now = now or timezone.now()
    due = ActivityExecution.objects.filter(
        state=ExecutionState.WAITING, wake_at__lte=now, run__state=WorkflowRunState.RUNNING
    ).values_list("pk", flat=True)
    woken = 0
    for execution_id in list(due):
        execute_activity.delay(execution_id)
        woken += 1
    return woken


def _move(
    run: WorkflowRun,
    run_transition: str,
    campaign_transition: str,
    *,
    actor: Any = None,
    only_from: str | None = None,
    comment: str = "",
    **kwargs: Any,
) -> None:
    """Move a locked run and, for a real run, its campaign (when it is ``only_from``)."""
    portal_services.transition(
        obj=run, name=run_transition, actor=actor, check_permission=False, **kwargs
    )
    if run.simulate:
        return
    campaign = Campaign.objects.select_for_update().get(pk=run.campaign_id)
    if only_from is None or campaign.state == only_from:
        portal_services.transition(
            obj=campaign, name=campaign_transition, actor=actor, comment=comment
        )


def _fail(execution_id: int, error: str) -> None:
    with transaction.atomic():
        execution = ActivityExecution.objects.select_for_update().get(pk=execution_id)
        portal_services.transition(obj=execution, name="fail", error=error)
        run = WorkflowRun.objects.select_for_update().get(pk=execution.run_id)
        if run.state == WorkflowRunState.RUNNING:
            _move(run, "fail", "fail", only_from=CampaignState.RUNNING, comment=error, error=error)


def _after(run_id: int) -> None:
    """Complete the run when every activity is done; otherwise start the next ones."""
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().select_related("campaign").get(pk=run_id)
        if run.state != WorkflowRunState.RUNNING:
            return
        if not run.executions.exclude(state=ExecutionState.DONE).exists():
            if not run.simulate and _recurs(run):
                # The campaign keeps running: the next occurrence is a new run.
                portal_services.transition(obj=run, name="complete", check_permission=False)
                _create_run(run.campaign, actor=None, simulate=False)
            else:
                _move(run, "complete", "complete")
            return
        transaction.on_commit(partial(_enqueue_ready, run.pk))


def _recurs(run: WorkflowRun) -> bool:
    """The workflow has a recurring scheduler with occurrences left after this run."""
    scheduler = TYPES["scheduler"]
    for activity in run.campaign.activities.filter(type="scheduler"):
        settings = activity.settings
        if not scheduler.recurring(settings):
            continue
        runs = run.campaign.runs.filter(simulate=False).count()
        if settings.get("times") and runs >= settings["times"]:
            return False
        return scheduler.wake_at(settings, timezone.now()) is not None
    return False


def _run_transition(run: WorkflowRun, name: str, actor: Any) -> WorkflowRun:
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().get(pk=run.pk)
        campaign_transition = {"pause": "pause", "resume": "start", "stop": "stop"}[name]
        _move(run, name, campaign_transition, actor=actor)
        if name == "resume":
            transaction.on_commit(partial(_enqueue_ready, run.pk))
    return run


def pause_run(*, run: WorkflowRun, actor: Any) -> WorkflowRun:
    return _run_transition(run, "pause", actor)


def resume_run(*, run: WorkflowRun, actor: Any) -> WorkflowRun:
    return _run_transition(run, "resume", actor)


def stop_run(*, run: WorkflowRun, actor: Any) -> WorkflowRun:
    return _run_transition(run, "stop", actor)


def retry_activity(*, execution: ActivityExecution, actor: Any) -> WorkflowRun:
    """Restart a failed activity only: the run and campaign go back to running."""
    with transaction.atomic():
        execution = ActivityExecution.objects.select_for_update().get(pk=execution.pk)
        portal_services.transition(obj=execution, name="retry", actor=actor)
        # Restarted: the failed step's partial outputs are dropped (written again on its run).
        for item in execution.activity.outgoing.all():
            found = WorkTable.objects.filter(
                run_key=execution.run.run_key, name=output_table(execution.activity, item.label)
            ).first()
            if found is not None:
                found.drop()
        run = WorkflowRun.objects.select_for_update().get(pk=execution.run_id)
        if run.state == WorkflowRunState.FAILED:
            _move(run, "restart", "restart", actor=actor, only_from=CampaignState.FAILED)
        transaction.on_commit(partial(_enqueue_ready, run.pk))
    return run


def counts(run: WorkflowRun) -> dict[int, int]:
    """Rows carried by each transition in a run."""
    return dict(run.counts.values_list("transition_id", "rows"))
