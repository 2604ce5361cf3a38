"""The workflow canvas: a campaign's graph as JSON, and the save of a whole graph.

A save names the version it started from (optimistic concurrency: the second of two
concurrent saves is refused and changes nothing), is validated as a whole (settings through
the types' forms, inputs, outputs, cycles, dangling transitions), and then written in one
transaction: activities matched by key (so run history stays attached), transitions by
(source, output, target). Central marketers change anything; a local entity changes only the
settings its parent campaign lets it change, on a child campaign.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F

from campaigns import services
from campaigns.choices import CampaignKind, CampaignState
from campaigns.models import Activity, Campaign, Transition, WorkflowRun
from campaigns.models.workflow import ACTIVITY_TYPES
from campaigns.workflow.activities import TYPES
from campaigns.workflow.engine import Problem, graph_problems
from campaigns.workflow.forms import FORMS
from portal import services as portal_services
from portal.exceptions import DomainError
from portal.models import is_central_user

SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")  # the Activity.key SlugField's own rule
MAX_STEPS = 200
MAX_ARROWS = 600
MAX_POSITION = 100_000
CENTRAL_STATES = frozenset({CampaignState.DRAFT, CampaignState.READY})


class GraphRefused(DomainError):
    """The graph has problems; nothing was saved. ``problems`` name their steps."""

    def __init__(self, problems: list[Problem]) -> None:
        self.graph_problems = problems
        super().__init__(
            "The workflow was not saved: " + " ".join(p.message for p in problems),
            problems=[p.message for p in problems],
        )


class StaleGraph(DomainError):
    """Someone saved the workflow since this canvas was loaded."""


def palette() -> list[dict[str, Any]]:
    """The activity types the canvas offers, with their inputs and default outputs."""
    return [
        {
            "type": name,
            "label": label,
            "min_inputs": TYPES[name].min_inputs,
            "max_inputs": TYPES[name].max_inputs,
            "outputs": TYPES[name].outputs({}),
            "summary": FORMS[name].summary,
        }
        for name, label in ACTIVITY_TYPES
    ]


def outputs_of(type_: str, settings: Any) -> list[str]:
    kind = TYPES.get(type_)
    if kind is None or not isinstance(settings, dict):
        return []
    try:
        return kind.outputs(settings)
    except (KeyError, TypeError):
        return []


def mode_for(campaign: Campaign, user: Any) -> str:
    """``edit`` (everything), ``local`` (allowed settings of a child) or ``view``."""
    if not user.has_perm("campaigns.change_campaign"):
        return "view"
    if is_central_user(user):
        return "edit" if campaign.state in CENTRAL_STATES else "view"
    if campaign.kind == CampaignKind.CHILD and not services.child_edit_refusal(campaign):
        return "local"
    return "view"


def graph_of(campaign: Campaign, *, user: Any, run: WorkflowRun | None = None) -> dict[str, Any]:
    """The campaign's graph for the canvas, with the counts of ``run`` (default: the last)."""
    activities = list(campaign.activities.all())
    by_id = {a.pk: a for a in activities}
    editable = services.editable_steps(campaign, activities)
    run = run or campaign.runs.first()
    counts = dict(run.counts.values_list("transition_id", "rows")) if run else {}
    return {
        "version": campaign.workflow_version,
        "mode": mode_for(campaign, user),
        "steps": [
            {
                "key": a.key,
                "type": a.type,
                "label": a.label,
                "settings": a.settings,
                "x": a.position_x,
                "y": a.position_y,
                "local_edit": a.local_edit,
                "outputs": outputs_of(a.type, a.settings),
                "editable": sorted(editable.get(a.pk, ())),
            }
            for a in activities
        ],
        "arrows": [
            {
                "source": by_id[t.source_id].key,
                "label": t.label,
                "target": by_id[t.target_id].key,
                "count": counts.get(t.pk),
            }
            for t in campaign.transitions.all()
            if t.source_id in by_id and t.target_id in by_id
        ],
        "run": {
            "id": run.pk,
            "simulate": run.simulate,
            "state": run.state,
            "finished": run.finished_at is not None,
        }
        if run
        else None,
    }


def _shape(graph: Any) -> tuple[list[dict], list[tuple[str, str, str]], list[Problem]]:
    """The steps and arrows of a posted graph, or the problems of its shape."""
    problems: list[Problem] = []
    if not isinstance(graph, dict):
        return [], [], [Problem(None, "The graph must be an object with steps and arrows.")]
    steps, arrows = graph.get("steps"), graph.get("arrows", [])
    if not isinstance(steps, list) or not isinstance(arrows, list):
        return [], [], [Problem(None, "steps and arrows must be lists.")]
    if len(steps) > MAX_STEPS or len(arrows) > MAX_ARROWS:
        return [], [], [Problem(None, f"At most {MAX_STEPS} steps and {MAX_ARROWS} arrows.")]
    clean_steps, keys = [], set()
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            problems.append(Problem(None, f"Step {index + 1} must be an object."))
            continue
        key = step.get("key")
        if not isinstance(key, str) or not SLUG.match(key) or len(key) > 50:
            problems.append(
                Problem(
                    None, f"Step {index + 1}: the key must be a short identifier (a-z, 0-9, -, _)."
                )
            )
            continue
        if key in keys:
            problems.append(Problem(key, f"Step “{key}”: the key is used twice."))
            continue
        keys.add(key)
        label = step.get("label") or ""
        if not isinstance(label, str) or len(label) > 200:
            problems.append(
                Problem(key, f"Step “{key}”: the label is text of at most 200 characters.")
            )
            label = ""
        if step.get("type") not in TYPES:
            problems.append(
                Problem(key, f"Step “{key}”: {step.get('type')!r} is not an activity type.")
            )
            continue
        position = []
        for axis in ("x", "y"):
            value = step.get(axis, 0)
            if isinstance(value, float):
                value = round(value)
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_POSITION:
                problems.append(Problem(key, f"Step “{key}”: {axis} must be a whole number."))
                value = 0
            position.append(value)
        clean_steps.append(
            {
                "key": key,
                "type": step["type"],
                "label": label,
                "settings": step.get("settings") if step.get("settings") is not None else {},
                "x": position[0],
                "y": position[1],
                "local_edit": bool(step.get("local_edit")),
            }
        )
    clean_arrows = []
    for index, arrow in enumerate(arrows):
        if not isinstance(arrow, dict) or not all(
            isinstance(arrow.get(k), str) and arrow.get(k) for k in ("source", "label", "target")
        ):
            problems.append(
                Problem(None, f"Transition {index + 1} needs a source, an output and a target.")
            )
            continue
        if arrow["source"] == arrow["target"]:
            problems.append(
                Problem(arrow["source"], f"Step “{arrow['source']}” is linked to itself.")
            )
            continue
        clean_arrows.append((arrow["source"], arrow["label"][:64], arrow["target"]))
    for source, label, target in clean_arrows:
        if target not in keys:
            message = f"Step “{source}”: its output “{label}” goes to the unknown step “{target}”."
            problems.append(Problem(source if source in keys else None, message))
        if source not in keys:
            message = f"Step “{target}”: an input comes from the unknown step “{source}”."
            problems.append(Problem(target if target in keys else None, message))
    return clean_steps, list(dict.fromkeys(clean_arrows)), problems


def _local_changes(
    campaign: Campaign, steps: list[dict], arrows: list[tuple[str, str, str]]
) -> dict[str, dict]:
    """For a local entity: the new settings of the steps it changed, after checking it
    changed nothing else (structure, labels, locked steps or settings): PermissionDenied."""
    current = {a.key: a for a in campaign.activities.all()}
    editable = services.editable_steps(campaign, list(current.values()))
    by_id = {a.pk: a.key for a in current.values()}
    present = {
        (by_id[t.source_id], t.label, by_id[t.target_id]) for t in campaign.transitions.all()
    }
    if {s["key"]: s["type"] for s in steps} != {k: a.type for k, a in current.items()} or set(
        arrows
    ) != present:
        raise PermissionDenied("The parent campaign does not let you add, remove or link steps.")
    changed = {}
    for step in steps:
        activity = current[step["key"]]
        if step["label"] != activity.label or step["local_edit"] != activity.local_edit:
            raise PermissionDenied(f"Step “{activity}”: its name is set by the parent campaign.")
        if step["settings"] == activity.settings:
            continue
        allowed = editable.get(activity.pk, frozenset())
        if not allowed:
            raise PermissionDenied(f"Step “{activity}” is locked by the parent campaign.")
        settings = step["settings"] if isinstance(step["settings"], dict) else {}
        fixed = sorted(
            key
            for key in set(settings) | set(activity.settings)
            if key not in allowed and settings.get(key) != activity.settings.get(key)
        )
        if fixed:
            raise PermissionDenied(
                f"Step “{activity}”: {', '.join(fixed)} set by the parent campaign "
                "cannot be changed."
            )
        changed[step["key"]] = settings
    return changed


def save_graph(*, campaign: Campaign, graph: Any, version: Any, actor: Any) -> int:
    """Save the whole graph drawn on the canvas; returns the new version. Refused with
    ``StaleGraph`` when another save came since ``version``, ``GraphRefused`` naming each
    problem on its step, ``PermissionDenied`` for what the actor may not change."""
    portal_services.check_may_act_for(
        actor=actor, entity=campaign.entity, perm="campaigns.change_campaign"
    )
    steps, arrows, problems = _shape(graph)
    if problems:
        raise GraphRefused(problems)
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update(of=("self",)).get(pk=campaign.pk)
        if isinstance(version, bool) or not isinstance(version, int):
            raise DomainError("The save must name the version it started from.")
        if version != campaign.workflow_version:
            raise StaleGraph(
                "Someone else saved this workflow since you opened it: nothing was saved. "
                "Reload the page to see their changes, then make yours again."
            )
        mode = mode_for(campaign, actor)
        if mode == "view":
            if is_central_user(actor) and actor.has_perm("campaigns.change_campaign"):
                raise DomainError(
                    f"This campaign is {campaign.get_state_display().lower()}: only a draft "
                    "or ready campaign's workflow can be changed."
                )
            if campaign.kind == CampaignKind.CHILD and (
                refusal := services.child_edit_refusal(campaign)
            ):
                raise DomainError(refusal)
            raise PermissionDenied("You may not change this workflow.")
        current = {a.key: a for a in campaign.activities.all()}
        if mode == "local":
            changed = _local_changes(campaign, steps, arrows)
            for step in steps:  # locals move nothing: the parent's layout stays
                activity = current[step["key"]]
                step.update(
                    label=activity.label, local_edit=activity.local_edit,
                    x=activity.position_x, y=activity.position_y,
                    settings=changed.get(step["key"], activity.settings),
                )  # fmt: skip
        if (
            campaign.kind == CampaignKind.CHILD
            and mode == "edit"
            and services.child_edit_refusal(campaign)
        ):
            raise DomainError(services.child_edit_refusal(campaign))
        # Settings in their normal form (numbers as numbers, empty values left out).
        activities = []
        for step in steps:
            settings = step["settings"]
            if isinstance(settings, dict):
                form = FORMS[step["type"]](settings=settings, campaign=campaign)
                if form.is_valid():
                    settings = form.settings()
            activities.append(
                Activity(
                    campaign=campaign, key=step["key"], type=step["type"], label=step["label"],
                    settings=settings, position_x=step["x"], position_y=step["y"],
                    local_edit=step["local_edit"],
                )
            )  # fmt: skip
        problems = graph_problems(activities, arrows, campaign=campaign)
        if problems:
            raise GraphRefused(problems)
        before = {key: a.settings for key, a in current.items()}
        _write(campaign, current, activities, arrows)
        Campaign.objects.filter(pk=campaign.pk).update(workflow_version=F("workflow_version") + 1)
        portal_services.record_audit(
            obj=campaign,
            action="edit_workflow",
            actor=actor,
            comment=f"Saved the workflow on the canvas ({len(activities)} steps).",
            extra={
                "version": version + 1,
                "changed": sorted(a.key for a in activities if before.get(a.key) != a.settings),
                "removed": sorted(set(current) - {a.key for a in activities}),
            },
        )
    return version + 1


def _write(
    campaign: Campaign,
    current: dict[str, Activity],
    activities: list[Activity],
    arrows: list[tuple[str, str, str]],
) -> None:
    keys = {a.key for a in activities}
    Activity.objects.filter(campaign=campaign).exclude(key__in=keys).delete()
    fields = ["type", "label", "settings", "position_x", "position_y", "local_edit"]
    saved: dict[str, Activity] = {}
    updates = []
    for activity in activities:
        existing = current.get(activity.key)
        if existing is None:
            continue
        activity.pk = existing.pk
        saved[activity.key] = activity
        if any(getattr(activity, f) != getattr(existing, f) for f in fields):
            updates.append(activity)  # only the steps that changed are written
    Activity.objects.bulk_update(updates, fields)
    created = [a for a in activities if a.key not in saved]
    for activity in created:  # a handful at most: save() keeps the pk on every database
        activity.save()
        saved[activity.key] = activity
    # In the canvas's order: an exclusion's first input is the population it keeps from.
    wanted = [(saved[s].pk, label, saved[t].pk) for s, label, t in arrows]
    have = {
        (item.source_id, item.label, item.target_id): item.pk
        for item in Transition.objects.filter(campaign=campaign)
    }
    stale = [pk for arrow, pk in have.items() if arrow not in set(wanted)]
    Transition.objects.filter(pk__in=stale).delete()
    Transition.objects.bulk_create(
        [
            Transition(campaign=campaign, source_id=s, label=label, target_id=t)
            for s, label, t in wanted
            if (s, label, t) not in have
        ]
    )
