"""Campaigns (reference, parent, child, local) and their personalisation-field definitions."""

from __future__ import annotations

import keyword
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from campaigns.choices import (
    CampaignKind,
    CampaignState,
    CollaborativeType,
    FieldType,
    RunState,
)
from campaigns.models import checks
from portal.models import Entity, EntityOwnedQuerySet

# Names the message templates already use at the top level, and Jinja2's own words.
RESERVED_NAMES = frozenset(
    {
        "contact", "entity", "record", "order", "campaign", "delivery", "perso", "message",
        "package", "site_url", "unsubscribe_url", "preferences_url", "mirror_url",
        "postal_address", "loop", "self", "super", "range", "dict",
        "lipsum", "cycler", "joiner", "namespace", "true", "false", "none", "and", "or", "not",
        "in", "is", "if", "else", "elif", "for", "endfor", "block", "extends", "include",
        "import", "macro", "call", "filter", "set", "with", "without", "context", "raw",
    }
)  # fmt: skip

identifier_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{0,49}$",
    "Use lower-case letters, digits and '_', starting with a letter (at most 50 characters).",
)


def validate_template_identifier(value: str) -> None:
    if keyword.iskeyword(value) or value in RESERVED_NAMES:
        raise ValidationError(f"“{value}” is reserved in message templates; choose another name.")


class CampaignQuerySet(EntityOwnedQuerySet):
    def references(self) -> CampaignQuerySet:
        return self.filter(kind=CampaignKind.REFERENCE)


class Campaign(ConcurrentTransitionMixin, models.Model):
    """A campaign: a central reference (collaborative) campaign that packages offer, a parent
    run centrally, a child created for a local entity from an approved order, or a local one.
    Workflows, typology rules and deliveries hang off it."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="campaigns")
    kind = models.CharField(
        max_length=16, choices=CampaignKind.choices, default=CampaignKind.REFERENCE
    )
    collaborative_type = models.CharField(
        max_length=24, choices=CollaborativeType.choices, blank=True
    )
    state = FSMField(
        max_length=16, choices=CampaignState.choices, default=CampaignState.DRAFT, protected=True
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    order = models.OneToOneField(
        "packages.Order",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="child_campaign",
        help_text="The approved order a child campaign was created from (one child per order).",
    )
    personalisation_values = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    local_conditions = models.JSONField(
        default=list,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text="Reference campaigns: the conditions of the targeting query that each "
        "ordering entity completes, with the values or ranges allowed "
        "(campaigns.targeting.local; edited through the admin's form, validated there).",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    workflow_version = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="Grows with every saved change of the workflow: a canvas save names the "
        "version it started from and is refused when another save came first.",
    )
    scheduled_start_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="A child campaign's start planned by its local entity; a periodic task "
        "starts it then (see campaigns.services.start_scheduled_campaigns).",
    )
    targeted_count = models.PositiveIntegerField(default=0)
    sent_count = models.PositiveIntegerField(default=0)

    objects = CampaignQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "state"]),
            models.Index(fields=["entity", "state"]),
            models.Index(
                fields=["scheduled_start_at"],
                condition=Q(scheduled_start_at__isnull=False),
                name="campaigns_scheduled_start",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind=CampaignKind.REFERENCE) | ~Q(collaborative_type=""),
                name="campaigns_reference_has_type",
            ),
            models.CheckConstraint(
                condition=~Q(kind=CampaignKind.CHILD) | Q(parent__isnull=False),
                name="campaigns_child_has_parent",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def autocomplete_label(self) -> str:
        """How pickers name it, so that two “Spring sale” campaigns are told apart."""
        kind = self.get_collaborative_type_display() or self.get_kind_display()
        return f"{self.name} — {kind} · {self.get_state_display().lower()} · #{self.pk}"

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        if self.kind == CampaignKind.REFERENCE:
            if not self.collaborative_type:
                errors["collaborative_type"] = "A reference campaign needs a collaborative type."
            if self.entity_id and self.entity.kind != "central":
                errors["entity"] = "Reference campaigns belong to the central entity."
        if self.kind == CampaignKind.CHILD and not self.parent_id:
            errors["parent"] = "A child campaign needs its parent."
        if errors:
            raise ValidationError(errors)

    # Life cycle ---------------------------------------------------------------------------

    @transition(
        field=state,
        source=CampaignState.DRAFT,
        target=CampaignState.READY,
        permission="campaigns.change_campaign",
        custom={"label": "Mark ready"},
    )
    def mark_ready(self) -> None:
        """Approved for execution."""

    @transition(
        field=state,
        source=[CampaignState.READY, CampaignState.PAUSED],
        target=CampaignState.RUNNING,
        permission="campaigns.change_campaign",
        custom={"label": "Start"},
    )
    def start(self) -> None:
        """Execution starts (or resumes)."""

    @transition(
        field=state,
        source=CampaignState.RUNNING,
        target=CampaignState.PAUSED,
        permission="campaigns.change_campaign",
        custom={"label": "Pause"},
    )
    def pause(self) -> None:
        """Execution halts between activities."""

    @transition(field=state, source=CampaignState.RUNNING, target=CampaignState.COMPLETED)
    def complete(self) -> None:
        """Every activity is done."""

    @transition(field=state, source=CampaignState.RUNNING, target=CampaignState.FAILED)
    def fail(self) -> None:
        """An activity failed."""

    @transition(
        field=state,
        source=CampaignState.FAILED,
        target=CampaignState.RUNNING,
        permission="campaigns.change_campaign",
        custom={"label": "Restart"},
    )
    def restart(self) -> None:
        """The failed activity is retried."""

    @transition(
        field=state,
        source=[
            CampaignState.DRAFT,
            CampaignState.READY,
            CampaignState.RUNNING,
            CampaignState.PAUSED,
        ],
        target=CampaignState.STOPPED,
        permission="campaigns.change_campaign",
        custom={"label": "Stop"},
    )
    def stop(self) -> None:
        """Execution is abandoned; nothing more is sent."""


# The options each field type uses (the admin shows only these; the others stay empty).
FIELD_TYPE_OPTIONS: dict[str, frozenset[str]] = {
    FieldType.TEXT: frozenset({"max_length"}),
    FieldType.LONG_TEXT: frozenset({"max_length"}),
    FieldType.NUMBER: frozenset({"min_value", "max_value"}),
    FieldType.DATE: frozenset(),
    FieldType.CHOICE: frozenset({"choices"}),
    FieldType.BOOLEAN: frozenset(),
    FieldType.FILE: frozenset({"allowed_extensions", "max_file_size_kb"}),
}
OPTION_OWNERS = {
    "max_length": "Only text fields have a maximum length.",
    "min_value": "Only number fields have a minimum.",
    "max_value": "Only number fields have a maximum.",
    "allowed_extensions": "Only file fields have allowed extensions.",
    "max_file_size_kb": "Only file fields have a size limit.",
}
DEFAULT_FILE_EXTENSIONS = "pdf,png,jpg,jpeg"
DEFAULT_FILE_SIZE_KB = 2048


class PersonalisationField(models.Model):
    """One field of the form local entities fill in when they order a package built on the
    reference campaign; its value is available to message templates under its name."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="personalisation_fields"
    )
    name = models.CharField(
        max_length=50,
        validators=[identifier_validator, validate_template_identifier],
        help_text="Identifier used in templates, e.g. store_offer → {{ perso.store_offer }}.",
    )
    label = models.CharField(max_length=200)
    help_text = models.CharField(max_length=500, blank=True)
    field_type = models.CharField(max_length=16, choices=FieldType.choices)
    required = models.BooleanField(default=False)
    default = models.CharField(
        max_length=500, blank=True, help_text="Initial value, written as the user would type it."
    )
    max_length = models.PositiveIntegerField(
        null=True, blank=True, help_text="Text fields: maximum number of characters."
    )
    min_value = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    max_value = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    choices = models.JSONField(
        default=list, blank=True, help_text='Choice fields: a JSON list, e.g. ["Red", "Blue"].'
    )
    allowed_extensions = models.CharField(
        max_length=200,
        blank=True,
        help_text="File fields: comma-separated extensions.",
    )
    max_file_size_kb = models.PositiveIntegerField(
        null=True, blank=True, help_text="File fields: maximum size in KiB."
    )
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "name"], name="campaigns_personalisation_field_unique_name"
            ),
            models.CheckConstraint(
                condition=Q(min_value__isnull=True)
                | Q(max_value__isnull=True)
                | Q(min_value__lte=models.F("max_value")),
                name="campaigns_personalisation_field_min_le_max",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.name})"

    @property
    def extensions(self) -> list[str]:
        return [
            ext.strip().lower().lstrip(".")
            for ext in self.allowed_extensions.split(",")
            if ext.strip()
        ]

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        if self.field_type == FieldType.CHOICE:
            if (
                not isinstance(self.choices, list)
                or not self.choices
                or not all(isinstance(c, str) and c.strip() for c in self.choices)
            ):
                errors["choices"] = "Give the options as a non-empty JSON list of texts."
            elif len(set(self.choices)) != len(self.choices):
                errors["choices"] = "Options must be distinct."
        elif self.choices:
            errors["choices"] = "Only choice fields have options."
        # Each type keeps only its own options: a text field stores no file extensions.
        kept = FIELD_TYPE_OPTIONS.get(self.field_type, frozenset())
        for option, message in OPTION_OWNERS.items():
            if option not in kept and getattr(self, option) not in (None, ""):
                errors.setdefault(option, message)
        if self.field_type == FieldType.FILE and not self.extensions:
            errors["allowed_extensions"] = "List at least one allowed extension."
        if (
            self.min_value is not None
            and self.max_value is not None
            and Decimal(self.min_value) > Decimal(self.max_value)
        ):
            errors["max_value"] = "The maximum must not be below the minimum."
        if not errors and self.default and self.field_type == FieldType.FILE:
            errors["default"] = "File fields cannot have a default."
        if errors:
            raise ValidationError(errors)
        # The default passes the generated form field: ``campaigns.personalisation``'s rule
        # (registered in ``checks``).
        checks.run(self)


class ScheduledRun(ConcurrentTransitionMixin, models.Model):
    """A run of a (parent) campaign for one entity with its order's personalisation values,
    created when a simple or by-form order is accepted. When it is due, a periodic task
    (``campaigns.services.execute_scheduled_runs``) copies the campaign for the entity into
    ``execution_campaign`` and starts it: done, or failed with its reason."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="scheduled_runs")
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="scheduled_runs")
    order = models.OneToOneField(
        "packages.Order", on_delete=models.PROTECT, related_name="scheduled_run"
    )
    personalisation_values = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    local_targeting = models.JSONField(
        default=dict,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text="The order's local conditions as a condition tree, ANDed to the campaign's "
        "targeting query when this run executes.",
    )
    run_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it runs: the package's execution date. Empty: as soon as the package's "
        "execution date has come (at once when the package has none).",
    )
    state = FSMField(
        max_length=16, choices=RunState.choices, default=RunState.SCHEDULED, protected=True
    )
    execution_campaign = models.OneToOneField(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="executed_run",
        help_text="The campaign this run created and started: the reference campaign's "
        "workflow for this entity alone, with the order's values, locked.",
    )
    failure_reason = models.TextField(blank=True, help_text="Why the run did not start.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["run_at", "id"]
        indexes = [models.Index(fields=["state", "run_at"])]

    def __str__(self) -> str:
        return f"{self.campaign} for {self.entity.code}"

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    @transition(field=state, source=RunState.SCHEDULED, target=RunState.CANCELLED)
    def cancel(self) -> None:
        """The order was withdrawn before the run."""

    @transition(field=state, source=RunState.SCHEDULED, target=RunState.DONE)
    def mark_done(self, campaign: Campaign) -> None:
        """The execution campaign it created has started."""
        self.execution_campaign = campaign

    @transition(field=state, source=RunState.SCHEDULED, target=RunState.FAILED)
    def fail(self, reason: str) -> None:
        """It could not start (refused or broken); nothing of it was kept."""
        self.failure_reason = reason
