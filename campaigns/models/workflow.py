"""Workflows: a campaign's activities joined by transitions, and their runs.

Each run executes activities in dependency order as Celery tasks; the population carried by
each transition is a work table named after the transition, and its exact size is recorded.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, FSMModelMixin, transition

from campaigns.models.campaign import Campaign
from portal.models import Entity, EntityOwnedQuerySet

ACTIVITY_TYPES = [
    ("query", "Query (build an audience)"),
    ("read_audience", "Read a saved audience"),
    ("union", "Union"),
    ("intersection", "Intersection"),
    ("exclusion", "Exclusion"),
    ("split", "Split"),
    ("deduplication", "Deduplication"),
    ("distribution", "Data distribution"),
    ("wait", "Wait (a duration)"),
    ("scheduler", "Scheduler (a date and time, or recurring)"),
    ("enrichment", "Enrichment (add data for personalisation)"),
    ("local_approval", "Local approval (entities review their lists)"),
    ("delivery", "Delivery"),
    ("end", "End"),
]


class Activity(models.Model):
    """One step of a campaign's workflow, with settings validated by its type."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="activities")
    key = models.SlugField(
        max_length=50, help_text="Short identifier, unique in the workflow (e.g. target)."
    )
    type = models.CharField(max_length=32, choices=ACTIVITY_TYPES)
    label = models.CharField(max_length=200, blank=True)
    settings = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    position_x = models.IntegerField(default=0)
    position_y = models.IntegerField(default=0)
    local_edit = models.BooleanField(
        default=False,
        verbose_name="local entities may change it",
        help_text="In child campaigns, local entities may change this activity's settings "
        "(those its type lets them change: filters, schedules, limits, deadlines).",
    )

    class Meta:
        ordering = ["position_y", "position_x", "id"]
        verbose_name_plural = "activities"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "key"], name="activity_unique_key")
        ]

    def __str__(self) -> str:
        return self.label or self.key

    @property
    def owning_entity(self) -> Entity:
        return self.campaign.entity

    def clean(self) -> None:
        """Only the shape here: the settings' rules live in the type's settings form
        (``campaigns.workflow.forms``), which admin, canvas, portal and engine use."""
        from django.core.exceptions import ValidationError

        if not isinstance(self.settings, dict):
            raise ValidationError({"settings": "Settings must be a JSON object."})


class Transition(models.Model):
    """An arrow from one activity's output (named by ``label`` for splits) to another."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="transitions")
    source = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="outgoing")
    target = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="incoming")
    label = models.CharField(
        max_length=64, default="out", help_text="The source's output: out, or a split branch."
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "label", "target"], name="transition_unique_arrow"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source.key} —{self.label}→ {self.target.key}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.source_id and self.target_id:
            if self.source_id == self.target_id:
                raise ValidationError("A transition cannot loop on its activity.")
            campaigns = {self.source.campaign_id, self.target.campaign_id}
            if self.campaign_id:
                campaigns.add(self.campaign_id)
            if len(campaigns) > 1:
                raise ValidationError("Both activities must belong to this campaign.")


class WorkflowRunState(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class WorkflowRun(ConcurrentTransitionMixin, models.Model):
    """One execution (or simulation) of a campaign's workflow."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    simulate = models.BooleanField(
        default=False, help_text="A dry run: counts only, nothing sent, campaign unchanged."
    )
    state = FSMField(
        max_length=16,
        choices=WorkflowRunState.choices,
        default=WorkflowRunState.RUNNING,
        protected=True,
    )
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        kind = "simulation" if self.simulate else "run"
        return f"{self.campaign} {kind} #{self.pk}"

    @property
    def owning_entity(self) -> Entity:
        return self.campaign.entity

    @property
    def run_key(self) -> str:
        return f"run-{self.pk}"

    @transition(field=state, source=WorkflowRunState.RUNNING, target=WorkflowRunState.COMPLETED)
    def complete(self) -> None:
        self.finished_at = timezone.now()

    @transition(field=state, source=WorkflowRunState.RUNNING, target=WorkflowRunState.FAILED)
    def fail(self, *, error: str) -> None:
        self.error = error
        self.finished_at = timezone.now()

    @transition(field=state, source=WorkflowRunState.FAILED, target=WorkflowRunState.RUNNING)
    def restart(self) -> None:
        """A failed activity is retried; the rest of the run stays as it was."""
        self.error = ""
        self.finished_at = None

    @transition(field=state, source=WorkflowRunState.RUNNING, target=WorkflowRunState.PAUSED)
    def pause(self) -> None:
        """Activities in progress finish; no new one starts."""

    @transition(field=state, source=WorkflowRunState.PAUSED, target=WorkflowRunState.RUNNING)
    def resume(self) -> None:
        """Pending activities start again."""

    @transition(
        field=state,
        source=[WorkflowRunState.RUNNING, WorkflowRunState.PAUSED],
        target=WorkflowRunState.STOPPED,
    )
    def stop(self) -> None:
        self.finished_at = timezone.now()


class ExecutionState(models.TextChoices):
    PENDING = "pending", "Pending"
    WAITING = "waiting", "Waiting"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ActivityExecution(FSMModelMixin, models.Model):
    """One activity within one run: its state, timings, input size and error."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="executions")
    activity = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="executions")
    state = FSMField(
        max_length=16,
        choices=ExecutionState.choices,
        default=ExecutionState.PENDING,
        protected=True,
    )
    rows_in = models.PositiveIntegerField(default=0)
    wake_at = models.DateTimeField(null=True, blank=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "activity"], name="execution_once_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.activity} in {self.run}"

    @transition(
        field=state,
        source=[ExecutionState.PENDING, ExecutionState.WAITING],
        target=ExecutionState.RUNNING,
    )
    def start(self) -> None:
        self.started_at = self.started_at or timezone.now()

    @transition(field=state, source=ExecutionState.PENDING, target=ExecutionState.WAITING)
    def park(self, *, wake_at: Any) -> None:
        """A wait or scheduler activity sleeps until ``wake_at``; beat wakes it."""
        self.wake_at = wake_at
        self.started_at = timezone.now()

    @transition(field=state, source=ExecutionState.RUNNING, target=ExecutionState.DONE)
    def finish(self, *, rows_in: int) -> None:
        self.rows_in = rows_in
        self.finished_at = timezone.now()

    @transition(field=state, source=ExecutionState.RUNNING, target=ExecutionState.FAILED)
    def fail(self, *, error: str) -> None:
        self.error = error
        self.finished_at = timezone.now()

    @transition(field=state, source=ExecutionState.FAILED, target=ExecutionState.PENDING)
    def retry(self) -> None:
        self.error = ""
        self.started_at = None
        self.finished_at = None


class TransitionCount(models.Model):
    """The exact population a transition carried in a run."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="counts")
    transition = models.ForeignKey(Transition, on_delete=models.CASCADE, related_name="counts")
    rows = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "transition"], name="count_once_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.transition}: {self.rows}"


class LocalApprovalMode(models.TextChoices):
    APPROVE = "approve", "Approve the list"
    REPORT = "report", "Report what was sent"


class LocalApprovalQuerySet(EntityOwnedQuerySet):
    pass


class LocalApproval(models.Model):
    """One local entity's share of a local-approval activity in a run: the list it reviews
    (approve mode, decided through an approval request) or the report it receives."""

    execution = models.ForeignKey(
        ActivityExecution, on_delete=models.CASCADE, related_name="local_approvals"
    )
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="local_approvals")
    mode = models.CharField(
        max_length=8, choices=LocalApprovalMode.choices, default=LocalApprovalMode.APPROVE
    )
    rows = models.PositiveIntegerField(help_text="Rows in the entity's list when it was opened.")
    deadline = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = LocalApprovalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "entity__code"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "entity"], name="local_approval_once_per_entity"
            )
        ]

    def __str__(self) -> str:
        return f"{self.execution.activity} for {self.entity}"

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    @property
    def campaign(self) -> Campaign:
        return self.execution.run.campaign


class TargetRemoval(models.Model):
    """A contact a local entity took out of its list, and why."""

    approval = models.ForeignKey(LocalApproval, on_delete=models.CASCADE, related_name="removals")
    contact = models.ForeignKey("campaigns.Contact", on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=255)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    removed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-removed_at"]
        constraints = [
            models.UniqueConstraint(fields=["approval", "contact"], name="removal_once_per_list")
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} removed from {self.approval_id}: {self.reason}"
