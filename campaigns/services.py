"""Campaign services: child campaigns and scheduled runs created from accepted orders, the
local entity's edits of its child, and the campaign life cycle."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from api import webhooks
from api.choices import WebhookEvent
from campaigns.choices import CampaignKind, CampaignState, CollaborativeType, RunState
from campaigns.models import Activity, Campaign, ScheduledRun
from campaigns.personalisation import change_values, delete_stored
from portal import services as portal_services
from portal.exceptions import DomainError

logger = logging.getLogger(__name__)

EDITABLE_CHILD_STATES = frozenset({CampaignState.DRAFT, CampaignState.READY})


def create_child_campaign(*, order: Any, actor: Any) -> Campaign:
    """The child campaign of an accepted by-campaign order; created once, whatever happens.

    The one-to-one link to the order is the guarantee: a second call (a repeated approval, a
    retried task) returns the existing child, and a concurrent insert loses on the constraint.
    """
    existing = Campaign.objects.filter(order=order).first()
    if existing:
        return existing
    parent = order.package.reference_campaign
    try:
        with transaction.atomic():
            child = Campaign.objects.create(
                name=f"{parent.name} — {order.entity.name}"[:200],
                description=parent.description,
                entity=order.entity,
                kind=CampaignKind.CHILD,
                collaborative_type=parent.collaborative_type,
                parent=parent,
                order=order,
                personalisation_values=dict(order.values),
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            copy_campaign_content(source=parent, target=child)
            local = apply_local_values(parent=parent, child=child, values=order.local_values)
            portal_services.record_audit(
                obj=child,
                action="create_child",
                actor=actor,
                to_state=child.state,
                comment=f"Created from order {order} of package “{order.package}”.",
                extra={"order": order.pk, "parent": parent.pk, "local_conditions": local},
            )
            webhooks.emit(WebhookEvent.CHILD_CAMPAIGN_CREATED, obj=child)
    except IntegrityError:
        return Campaign.objects.get(order=order)
    return child


def local_targeting(*, campaign: Campaign, values: Mapping[str, Any] | None) -> dict:
    """An order's local values as the condition tree ANDed to the campaign's targeting
    query (``{}`` when the campaign defines no local condition or none was given)."""
    from campaigns.targeting import local

    parameters = local.campaign_parameters(campaign)
    if not parameters or not values:
        return {}
    dimension = local.step_dimension(local.targeting_step(campaign))
    return local.condition_for(parameters, values, dimension)


def apply_local_values(*, parent: Campaign, child: Campaign, values: Any) -> dict:
    """Complete the child's targeting query with the order's local values: the copied query
    step's conditions become ``parent's AND local``. Returns the local tree applied."""
    return and_local_tree(
        parent=parent, child=child, tree=local_targeting(campaign=parent, values=values)
    )


def and_local_tree(*, parent: Campaign, child: Campaign, tree: Mapping[str, Any]) -> dict:
    """AND a local condition tree to the copied targeting query step of ``child`` (a copy
    of ``parent``). Returns the tree applied (``{}`` when there is none or no such step)."""
    from campaigns.targeting import local

    source = local.targeting_step(parent)
    if not tree or source is None:
        return {}
    step = child.activities.filter(key=source.key, type="query").first()
    if step is None:
        return {}
    settings = dict(step.settings or {})
    settings["conditions"] = local.with_local(settings.get("conditions"), tree)
    step.settings = settings
    step.save(update_fields=["settings"])
    return dict(tree)


def set_local_conditions(*, campaign: Campaign, parameters: list[Any], actor: Any) -> Campaign:
    """The central team sets which conditions of a reference campaign's targeting query the
    ordering entities complete. Validated against the registry and the query step's
    dimension; ``ValidationError`` names each parameter at fault."""
    from campaigns.targeting import local

    portal_services.check_may_act_for(
        actor=actor, entity=campaign.entity, perm="campaigns.change_campaign"
    )
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.kind != CampaignKind.REFERENCE:
            raise DomainError("Only reference campaigns have local conditions.")
        raw = [p.as_json() if isinstance(p, local.LocalParameter) else p for p in parameters]
        step = local.targeting_step(campaign)
        if raw and step is None:
            raise ValidationError(
                "The workflow has no query step: add one before defining local conditions."
            )
        parsed = local.parse_spec(raw, local.step_dimension(step))
        campaign.local_conditions = [p.as_json() for p in parsed]
        campaign.save(update_fields=["local_conditions", "updated_at"])
        portal_services.record_audit(
            obj=campaign,
            action="set_local_conditions",
            actor=actor,
            comment=", ".join(p.label for p in parsed) or "No local condition.",
            extra={"local_conditions": campaign.local_conditions},
        )
    return campaign


def copy_campaign_content(*, source: Campaign, target: Campaign) -> None:
    """Copy what a child inherits from its parent: its workflow (activities and transitions),
    then whatever other apps registered (typology rules, when they exist). Personalisation
    field definitions are read from the parent, not copied."""
    from campaigns.workflow.copy import copy_workflow

    copy_workflow(source=source, target=target)
    for hook in _content_copiers:
        hook(source=source, target=target)


_content_copiers: list[Any] = []


def register_content_copier(hook: Any) -> None:
    """Apps that hang content off campaigns (workflows, typologies) register their copier."""
    _content_copiers.append(hook)


def schedule_order_run(*, order: Any, actor: Any) -> ScheduledRun:
    """The parent's run for an accepted simple / by-form order (created once)."""
    existing = ScheduledRun.objects.filter(order=order).first()
    if existing:
        return existing
    package = order.package
    try:
        with transaction.atomic():
            run = ScheduledRun.objects.create(
                campaign=package.reference_campaign,
                entity=order.entity,
                order=order,
                personalisation_values=dict(order.values),
                local_targeting=local_targeting(
                    campaign=package.reference_campaign, values=order.local_values
                ),
                run_at=package.execution_at,
            )
            portal_services.record_audit(
                obj=run,
                action="schedule_run",
                actor=actor,
                to_state=run.state,
                comment=f"Scheduled from order {order}.",
            )
    except IntegrityError:
        return ScheduledRun.objects.get(order=order)
    return run


def realise_order(*, order: Any, actor: Any) -> Campaign | ScheduledRun | None:
    """What an accepted order turns into, by the package's collaborative type."""
    kind = order.package.reference_campaign.collaborative_type
    if kind == CollaborativeType.BY_CAMPAIGN:
        return create_child_campaign(order=order, actor=actor)
    if kind in (CollaborativeType.SIMPLE, CollaborativeType.BY_FORM):
        return schedule_order_run(order=order, actor=actor)
    return None


def stop_child_for_order(*, order: Any, actor: Any) -> None:
    """The order was cancelled: stop its child if it has not run, cancel its scheduled run."""
    child = Campaign.objects.select_for_update().filter(order=order).first()
    if child and child.state in EDITABLE_CHILD_STATES:
        child.scheduled_start_at = None
        portal_services.transition(
            obj=child,
            name="stop",
            actor=actor,
            check_permission=False,
            comment="Its order was cancelled.",
        )
    run = ScheduledRun.objects.select_for_update().filter(order=order).first()
    if run and run.state == RunState.SCHEDULED:
        portal_services.transition(
            obj=run, name="cancel", actor=actor, comment="Its order was cancelled."
        )


def update_child_values(
    *,
    campaign: Campaign,
    actor: Any,
    data: Mapping[str, Any],
    files: Mapping[str, Any] | None = None,
) -> Campaign:
    """The local entity changes its child campaign's personalisation values (before it runs),
    validated against the parent's field definitions."""
    portal_services.check_may_act_for(
        actor=actor, entity=campaign.entity, perm="campaigns.change_campaign"
    )
    change = None
    try:
        with transaction.atomic():
            campaign = _locked_editable_child(campaign)
            change = change_values(
                campaign.parent.personalisation_fields.all(),
                data,
                files,
                campaign.personalisation_values,
                folder=f"campaigns/{campaign.pk}",
            )
            campaign.personalisation_values = change.values
            campaign.save(update_fields=["personalisation_values", "updated_at"])
            portal_services.record_audit(
                obj=campaign, action="personalise", actor=actor, extra={"changed": change.changed}
            )
            transaction.on_commit(partial(delete_stored, change.replaced))
    except Exception:
        if change is not None:
            delete_stored(change.stored.values())
        raise
    return campaign


def child_edit_refusal(campaign: Campaign) -> str:
    """Why the local entity may not change this child campaign now ('' when it may): the
    rule the forms check when they open and the services check again when they save."""
    if campaign.kind != CampaignKind.CHILD:
        return "Only child campaigns can be changed by their local entity."
    if is_run_campaign(campaign):
        return "This campaign runs a simple or by-form order as it was ordered: it cannot change."
    if campaign.state not in EDITABLE_CHILD_STATES:
        return f"A {campaign.get_state_display().lower()} campaign can no longer be changed."
    return ""


def _locked_editable_child(campaign: Campaign) -> Campaign:
    """The child campaign, locked, while the local entity may still change it."""
    campaign = (
        Campaign.objects.select_for_update(of=("self",))
        .select_related("parent")
        .get(pk=campaign.pk)
    )
    if refusal := child_edit_refusal(campaign):
        raise DomainError(refusal)
    return campaign


def child_may_edit(activity: Activity) -> frozenset[str]:
    """The settings a local entity may change on an activity of its child campaign: those
    its type allows, when the parent's activity (same key) lets local entities edit it."""
    return editable_steps(activity.campaign, [activity]).get(activity.pk, frozenset())


def editable_steps(
    campaign: Campaign, activities: list[Activity] | None = None
) -> dict[int, frozenset[str]]:
    """For a child campaign's activities (all by default): the settings its local entity
    may change on each, read from the parent in one query."""
    from campaigns.workflow.forms import local_fields

    if campaign.kind != CampaignKind.CHILD or campaign.parent_id is None:
        return {}
    allowed = set(
        Activity.objects.filter(campaign_id=campaign.parent_id, local_edit=True).values_list(
            "key", "type"
        )
    )
    editable = {}
    for activity in campaign.activities.all() if activities is None else activities:
        keys = local_fields(activity.type)
        if keys and (activity.key, activity.type) in allowed:
            editable[activity.pk] = keys
    return editable


def update_child_activity(
    *, activity: Activity, settings: Mapping[str, Any], actor: Any
) -> Activity:
    """The local entity changes an activity of its child's workflow, within what the parent
    allows: only the keys ``child_may_edit`` names; everything else stays as the parent set
    it. The changed workflow must still be valid (problems name the activity)."""
    from campaigns.workflow.engine import validate_workflow

    portal_services.check_may_act_for(
        actor=actor, entity=activity.campaign.entity, perm="campaigns.change_campaign"
    )
    if not isinstance(settings, Mapping):
        raise DomainError("Settings must be an object.")
    with transaction.atomic():
        _locked_editable_child(activity.campaign)
        activity = Activity.objects.select_for_update().get(pk=activity.pk)
        editable = child_may_edit(activity)
        if not editable:
            raise PermissionDenied("The parent campaign does not let you change this step.")
        fixed = sorted(
            key
            for key in set(settings) | set(activity.settings)
            if key not in editable and settings.get(key) != activity.settings.get(key)
        )
        if fixed:
            raise DomainError(
                f"Step “{activity}”: {', '.join(fixed)} set by the parent campaign cannot "
                "be changed."
            )
        before = activity.settings
        activity.settings = dict(settings)
        activity.save(update_fields=["settings"])
        # An open canvas of this workflow is now stale: its save will be refused.
        Campaign.objects.filter(pk=activity.campaign_id).update(
            workflow_version=F("workflow_version") + 1
        )
        problems = validate_workflow(activity.campaign)
        if problems:
            raise DomainError("The change would break the workflow.", problems=problems)
        portal_services.record_audit(
            obj=activity.campaign,
            action="edit_activity",
            actor=actor,
            comment=f"Changed step “{activity}”.",
            extra={"activity": activity.key, "before": before, "after": activity.settings},
        )
    return activity


def run_campaign_transition(
    *, campaign: Campaign, name: str, actor: Any, reason: str = ""
) -> Campaign:
    """A life-cycle move asked for by a person (mark ready, pause, stop); ``reason`` (asked
    before a stop) is the audit entry's comment."""
    if name not in {"mark_ready", "pause", "stop"}:
        raise DomainError("This action is not available here.")
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if name == "stop":
            campaign.scheduled_start_at = None  # a stopped campaign starts no more
        portal_services.transition(obj=campaign, name=name, actor=actor, comment=reason)
    return campaign


# The local entity runs its child ------------------------------------------------------------

# Settings a child must keep as its parent set them, whatever the parent lets it edit.
KEPT_SETTINGS = frozenset({"typology", "requires_approval"})
# Limits a child may lower but never raise above its parent's.
LIMIT_SETTINGS = frozenset({"limits", "default_limit"})


def start_refusal(campaign: Campaign, *, at: datetime | None = None) -> str:
    """Why ``campaign`` may not start (run for real) at ``at`` ('' when it may).

    The one rule of a child campaign's start, whoever asks (its local entity in the portal,
    the central team in the admin, the API, the scheduled start): its order is accepted,
    ``at`` is within the package's execution window, and its workflow keeps the typology
    and limits the parent set. Other campaigns have no such rule."""
    if campaign.kind != CampaignKind.CHILD:
        return ""
    order = campaign.order
    if order is None:
        return "This child campaign has no order: it cannot run."
    # The order's part of the rule is the order's (packages → campaigns, never back).
    if refusal := order.run_refusal(at or timezone.now()):
        return refusal
    return "; ".join(kept_settings_problems(campaign))


def kept_settings_problems(campaign: Campaign) -> list[str]:
    """Where the child's workflow departs from what its parent set: a step the parent does
    not have, a setting the parent does not let it change, its typology or approval, or a
    limit above the parent's. Each problem names the step."""
    from campaigns.targeting import local
    from campaigns.workflow.forms import local_fields

    parent_steps = {
        (a.key, a.type): a for a in Activity.objects.filter(campaign_id=campaign.parent_id)
    }
    # The order's local values are ANDed to the parent's targeting query: that is kept too.
    targeting = local.targeting_step(campaign.parent) if campaign.parent_id else None
    tree = _applied_local_tree(campaign) if targeting else {}
    problems = []
    for activity in campaign.activities.all():
        parent = parent_steps.get((activity.key, activity.type))
        name = f"Step “{activity}”"
        if parent is None:
            problems.append(f"{name} is not in the parent campaign.")
            continue
        editable = local_fields(activity.type) if parent.local_edit else frozenset()
        mine, theirs = activity.settings or {}, parent.settings or {}
        if tree and parent.pk == targeting.pk:
            theirs = {**theirs, "conditions": local.with_local(theirs.get("conditions"), tree)}
        changed = sorted(
            key
            for key in set(mine) | set(theirs)
            if mine.get(key) != theirs.get(key)
            and (key in KEPT_SETTINGS or (key not in editable and key not in LIMIT_SETTINGS))
        )
        if changed:
            problems.append(f"{name}: {', '.join(changed)} must stay as the parent set.")
        problems += [f"{name}: {p}" for p in _raised_limits(mine, theirs)]
    return problems


def _applied_local_tree(campaign: Campaign) -> dict:
    """The local condition tree the copy path ANDed to this child's targeting query: its
    scheduled run's (a run campaign) or its order's local values (a by-campaign child)."""
    run = ScheduledRun.objects.filter(execution_campaign=campaign).first()
    if run is not None:
        return run.local_targeting or {}
    if campaign.order is None or campaign.parent is None:
        return {}
    return local_targeting(campaign=campaign.parent, values=campaign.order.local_values)


def _raised_limits(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """The limits of a child's step above its parent's (an empty limit has no ceiling)."""
    if not LIMIT_SETTINGS & (set(mine) | set(theirs)):
        return []
    problems = []
    ceiling = theirs.get("default_limit")
    own = mine.get("default_limit")
    if ceiling is not None and (own is None or own > ceiling):
        problems.append(f"the default limit may not exceed the parent's {ceiling}.")
    parent_limits = theirs.get("limits") or {}
    child_limits = mine.get("limits") or {}
    for code in sorted(set(parent_limits) | set(child_limits)):
        top = parent_limits.get(code, ceiling)
        value = child_limits.get(code, mine.get("default_limit"))
        if top is not None and (value is None or value > top):
            problems.append(f"the limit of {code} may not exceed the parent's {top}.")
    return problems


def check_may_run(*, campaign: Campaign, actor: Any) -> None:
    """The actor may start (or schedule) this campaign: a child campaign (parents, references
    and the rest are run by the central team from the central workspace), and a role that
    changes campaigns, acting for the campaign's entity. One rule for the portal and the API."""
    if campaign.kind != CampaignKind.CHILD:
        raise DomainError(
            "Only a child campaign is started here; other campaigns are run from the central "
            "workspace."
        )
    portal_services.check_may_act_for(
        actor=actor, entity=campaign.entity, perm="campaigns.change_campaign"
    )


def start_campaign(*, campaign: Campaign, actor: Any) -> Any:
    """Run the campaign's workflow now (portal, API): the engine checks ``start_refusal``
    under the campaign's row lock, and audits the start."""
    from campaigns.workflow import engine

    check_may_run(campaign=campaign, actor=actor)
    return engine.start_run(campaign=campaign, actor=actor)


def schedule_start(*, campaign: Campaign, actor: Any, at: datetime) -> Campaign:
    """Plan the campaign's start at ``at`` (in the future, within the package's window);
    a periodic task starts it then. Scheduling again moves it."""
    check_may_run(campaign=campaign, actor=actor)
    if timezone.is_naive(at):
        raise DomainError("Give the start time with its time zone.")
    if at <= timezone.now():
        raise DomainError("The scheduled start must be in the future; use Start to run now.")
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.state != CampaignState.READY:
            raise DomainError(
                f"Only a ready campaign can be scheduled; this one is "
                f"{campaign.get_state_display().lower()}."
            )
        if refusal := start_refusal(campaign, at=at):
            raise DomainError(refusal)
        _set_scheduled_start(
            campaign, at, actor=actor, action="schedule_start",
            comment=f"Start scheduled for {timezone.localtime(at):%Y-%m-%d %H:%M}.",
        )  # fmt: skip
    return campaign


def unschedule_start(*, campaign: Campaign, actor: Any) -> Campaign:
    """Withdraw the campaign's scheduled start."""
    check_may_run(campaign=campaign, actor=actor)
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.scheduled_start_at is None:
            raise DomainError("No start is scheduled.")
        _set_scheduled_start(
            campaign, None, actor=actor, action="unschedule_start",
            comment="Scheduled start withdrawn.",
        )  # fmt: skip
    return campaign


def _set_scheduled_start(
    campaign: Campaign, at: datetime | None, *, actor: Any, action: str, comment: str
) -> None:
    """Store (or clear) the locked campaign's scheduled start and audit the change."""
    before = campaign.scheduled_start_at
    campaign.scheduled_start_at = at
    campaign.save(update_fields=["scheduled_start_at", "updated_at"])
    extra = {"before": before.isoformat() if before else None}
    if at is not None:
        extra["at"] = at.isoformat()
    portal_services.record_audit(
        obj=campaign, action=action, actor=actor, comment=comment, extra=extra
    )


def _locked(campaign: Campaign) -> Campaign:
    return (
        Campaign.objects.select_for_update(of=("self",))
        .select_related("order__package", "entity")
        .get(pk=campaign.pk)
    )


def start_scheduled_campaigns(*, now: datetime | None = None) -> int:
    """Start the campaigns whose scheduled start has come (Celery beat, every minute).

    Each one is claimed by clearing its ``scheduled_start_at`` with a conditional update in
    the transaction that starts it: a second worker, or the same task delivered twice, finds
    nothing to claim. A start the rule refuses by then (the window closed, the order was
    cancelled) is audited with its reason and not retried."""
    from campaigns.workflow import engine

    now = now or timezone.now()
    started = 0
    due = list(
        Campaign.objects.filter(scheduled_start_at__lte=now)
        .order_by("scheduled_start_at", "pk")
        .values_list("pk", "scheduled_start_at")[:100]
    )
    for pk, at in due:
        try:
            with transaction.atomic():
                # Claimed under its row lock: a concurrent task skips it, a repeated one finds
                # it no longer scheduled (the start clears the time in the same transaction).
                campaign = (
                    Campaign.objects.select_for_update(skip_locked=True)
                    .filter(pk=pk, scheduled_start_at=at)
                    .first()
                )
                if campaign is None:
                    continue
                engine.start_run(campaign=campaign, actor=None)
                started += 1
        except DomainError as exc:
            with transaction.atomic():
                if not Campaign.objects.filter(pk=pk, scheduled_start_at=at).update(
                    scheduled_start_at=None
                ):
                    continue
                campaign = Campaign.objects.get(pk=pk)
                portal_services.record_audit(
                    obj=campaign,
                    action="scheduled_start_refused",
                    comment=f"The scheduled start did not happen: {exc}",
                    extra={"at": at.isoformat()},
                )
    return started


# Scheduled runs of simple and by-form orders --------------------------------------------------

RUN_TYPES = frozenset({CollaborativeType.SIMPLE, CollaborativeType.BY_FORM})
RUN_BATCH = 100  # runs executed per tick of the periodic task; the rest wait a minute


def is_run_campaign(campaign: Campaign) -> bool:
    """A child that executes a simple or by-form order: ordered as is, never edited."""
    return campaign.kind == CampaignKind.CHILD and campaign.collaborative_type in RUN_TYPES


def due_runs(now: datetime) -> QuerySet:
    """Scheduled runs whose time has come: ``run_at`` (the package's execution date when the
    order was accepted) is past; a run without one waits for its package's execution date,
    and runs at once when the package has none."""
    waiting = Q(run_at__isnull=True) & (
        Q(order__package__execution_at__isnull=True) | Q(order__package__execution_at__lte=now)
    )
    return ScheduledRun.objects.filter(Q(run_at__lte=now) | waiting, state=RunState.SCHEDULED)


def execute_scheduled_runs(*, now: datetime | None = None) -> int:
    """Execute the due scheduled runs (Celery beat, every minute); the number started.

    Each run is claimed under its row lock (``skip_locked``: a concurrent task passes it by)
    and only while it is still scheduled, so a repeated or concurrent task starts nothing
    twice; the one-to-one links (order → campaign, run → campaign) guarantee it again."""
    now = now or timezone.now()
    due = list(due_runs(now).order_by("run_at", "pk").values_list("pk", flat=True)[:RUN_BATCH])
    return sum(execute_run(pk) is not None for pk in due)


def execute_run(pk: int) -> Campaign | None:
    """Execute one scheduled run: copy the reference campaign for the entity (its workflow,
    the order's personalisation values, the local targeting ANDed to its query), start it
    under the child start rule and mark the run done, all in one transaction. A refusal or
    an error rolls all of it back and marks the run failed with the reason (audited); a
    lost database connection leaves it scheduled for the next tick. Returns the campaign
    started, or None (not claimed, or failed)."""
    from campaigns.workflow import engine

    try:
        with transaction.atomic():
            run = (
                ScheduledRun.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=RunState.SCHEDULED)
                .first()
            )
            if run is None:
                return None
            campaign = create_run_campaign(run)
            portal_services.transition(
                obj=campaign, name="mark_ready", comment="Ordered as is: ready to run."
            )
            engine.start_run(campaign=campaign, actor=None)
            portal_services.transition(
                obj=run,
                name="mark_done",
                campaign=campaign,
                comment=f"Started as campaign “{campaign}”.",
                extra={"campaign": campaign.pk},
            )
            return campaign
    except (OperationalError, InterfaceError):
        raise  # the database is away: the run stays scheduled for the next tick
    except Exception as exc:
        if not isinstance(exc, DomainError | ValidationError | PermissionDenied):
            logger.exception("Scheduled run %s failed", pk)
        _fail_run(pk, _reason(exc))
        return None


def create_run_campaign(run: ScheduledRun) -> Campaign:
    """The campaign that executes ``run``: a child of the reference campaign for the run's
    entity (its targets are that entity's contacts), copied by the child's copy path with the
    run's personalisation values and local targeting; locked (``child_edit_refusal``)."""
    parent = run.campaign
    campaign = Campaign.objects.create(
        name=f"{parent.name} — {run.entity.name}"[:200],
        description=parent.description,
        entity=run.entity,
        kind=CampaignKind.CHILD,
        collaborative_type=parent.collaborative_type,
        parent=parent,
        order=run.order,
        personalisation_values=dict(run.personalisation_values),
    )
    copy_campaign_content(source=parent, target=campaign)
    tree = and_local_tree(parent=parent, child=campaign, tree=run.local_targeting)
    if run.local_targeting and not tree:
        raise DomainError("The reference campaign no longer has the query step to complete.")
    portal_services.record_audit(
        obj=campaign,
        action="create_run_campaign",
        to_state=campaign.state,
        comment=f"Created to execute the scheduled run of order {run.order}.",
        extra={"run": run.pk, "order": run.order_id, "local_conditions": tree},
    )
    return campaign


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        text = " ".join(exc.messages)
    else:
        text = str(exc) or type(exc).__name__
    problems = getattr(exc, "problems", None)
    if problems and not all(p in text for p in problems):
        text = f"{text} {' '.join(problems)}"
    return text[:2000]


def _fail_run(pk: int, reason: str) -> None:
    with transaction.atomic():
        run = ScheduledRun.objects.select_for_update().filter(pk=pk, state=RunState.SCHEDULED)
        run = run.first()
        if run is not None:
            portal_services.transition(
                obj=run, name="fail", reason=reason, comment=f"The run did not start: {reason}"
            )


def children_overview(parent: Campaign) -> QuerySet:
    """The parent's child campaigns with their entity, run state and counts (portal and
    admin pages of the parent), in one query whatever the number of children."""
    return with_run_figures(parent.children.all()).order_by("entity__code", "pk")


def with_run_figures(campaigns: QuerySet) -> QuerySet:
    """Campaigns with ``targeted`` (their deliveries' prepared targets), ``sent`` (messages
    sent), ``last_run`` and ``last_run_state`` (their latest real run) as annotations, and
    their entity joined: a list of them costs one query."""
    from campaigns.models import Delivery, Message, MessageStatus, WorkflowRun

    deliveries = Delivery.objects.filter(campaign=OuterRef("pk"))
    runs = WorkflowRun.objects.filter(campaign=OuterRef("pk"), simulate=False)
    sent = Message.objects.filter(delivery__campaign=OuterRef("pk"), status=MessageStatus.SENT)
    return campaigns.select_related(
        "entity"
    ).annotate(
        targeted=Coalesce(
            Subquery(
                deliveries.order_by()
                .values("campaign")
                .annotate(total=Sum("targeted"))
                .values("total")[:1]
            ),
            0,
        ),
        sent=Coalesce(
            Subquery(
                sent.order_by()
                .values("delivery__campaign")
                .annotate(total=Count("*"))  # from the partial index of sent messages alone
                .values("total")[:1]
            ),
            0,
        ),
        last_run=Subquery(runs.order_by("-started_at", "-pk").values("started_at")[:1]),
        last_run_state=Subquery(runs.order_by("-started_at", "-pk").values("state")[:1]),
    )


def transition_message(campaign: Campaign, name: str) -> str:
    """What a life-cycle button did, said from the campaign's state afterwards."""
    state = campaign.get_state_display().lower()
    if name == "stop":
        return f"Stopped; “{campaign}” is {state}."
    if name == "pause":
        return f"Paused; “{campaign}” is {state}: no further step starts."
    if name == "start":
        return f"Started; “{campaign}” is {state}: the workers execute its workflow."
    return f"Marked ready; “{campaign}” is {state} and can be run."


def stop_confirmation(campaign: Campaign) -> Any:
    """The confirmation page of "Stop" (admin and portal)."""
    from portal.confirm import Confirmation

    return Confirmation(
        title=f"Stop the campaign “{campaign}”?",
        button="Stop the campaign",
        consequences=[
            "Nothing more is sent from it; a stopped campaign cannot be started again.",
        ],
    )


def contact_search(text: str, *, path: str = "") -> Q:
    """What a contact search box matches: part of a first or last name or of an email, or
    the exact customer id. ``path`` reaches the contact from another model ("contact__").

    Every branch has its index on PostgreSQL (trigram indexes for the parts, the unique index
    for the id), so the planner combines them instead of scanning the table: the customer id
    is matched as written, like any key."""
    return (
        Q(**{f"{path}last_name__icontains": text})
        | Q(**{f"{path}first_name__icontains": text})
        | Q(**{f"{path}email__icontains": text})
        | Q(**{f"{path}external_id": text})
    )
