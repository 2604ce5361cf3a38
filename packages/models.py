"""Campaign packages (kits), their documents, and local entities' orders."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from campaigns.choices import AUDIENCE_TYPES
from campaigns.models import Campaign
from packages.choices import (
    ACCEPTED_ORDER_STATES,
    ApprovalMode,
    ExpiryDefault,
    OrderState,
    PackageState,
)
from portal.models import Entity, EntityOwnedQuerySet, is_central_user


class PackageQuerySet(models.QuerySet["Package"]):
    def visible_to(self, user: Any, now: Any = None) -> PackageQuerySet:
        """Central users see every package. Local users see a package while it is published,
        inside its visibility window and offered to one of their entities, and always once
        one of their entities has ordered it, or once it is cancelled after publication."""
        if is_central_user(user):
            return self.all()
        entities = Entity.objects.visible_to(user)
        offered = Package.audience.through.objects.filter(entity__in=entities)
        ordered = Order.objects.filter(entity__in=entities)
        # A cancelled package stays readable by the entities it was offered to: its
        # cancellation email links to it.
        return (
            self.open_now(now).filter(pk__in=offered.values("package_id"))
            | self.filter(pk__in=ordered.values("package_id")).exclude(state=PackageState.DRAFT)
            | self.filter(
                state=PackageState.CANCELLED,
                published_at__isnull=False,
                pk__in=offered.values("package_id"),
            )
        )

    def open_now(self, now: Any = None) -> PackageQuerySet:
        """Published and inside the visibility window."""
        now = now or timezone.now()
        return self.filter(state=PackageState.PUBLISHED).filter(
            Q(visible_from__isnull=True) | Q(visible_from__lte=now),
            Q(visible_until__isnull=True) | Q(visible_until__gte=now),
        )


def document_upload_to(instance: PackageDocument, filename: str) -> str:
    return f"packages/{instance.package_id}/documents/{filename}"


class Package(ConcurrentTransitionMixin, models.Model):
    """A kit that makes a reference campaign available to local entities for ordering."""

    label = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True, db_index=True)
    reference_campaign = models.ForeignKey(
        Campaign, on_delete=models.PROTECT, related_name="packages"
    )
    execution_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the campaign is to run: the start of its execution window (local "
        "entities may start their child campaigns from then on; empty: once approved).",
    )
    execution_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The end of the execution window: no child campaign starts after it "
        "(empty: no end).",
    )
    visible_from = models.DateTimeField(null=True, blank=True)
    visible_until = models.DateTimeField(null=True, blank=True)
    registration_deadline = models.DateTimeField(
        null=True, blank=True, help_text="No order or change after it."
    )
    personalisation_deadline = models.DateTimeField(
        null=True, blank=True, help_text="Soft: later changes are accepted with a warning."
    )
    audience = models.ManyToManyField(
        Entity, blank=True, related_name="packages", limit_choices_to={"kind": "local"}
    )
    approval_mode = models.CharField(
        max_length=16, choices=ApprovalMode.choices, default=ApprovalMode.MANUAL
    )
    allow_multiple_orders = models.BooleanField(
        default=False, help_text="Let an entity place several orders for this package."
    )
    notify_on_publish = models.BooleanField(
        default=True, help_text="Email the audience entities' operators when published."
    )
    notify_on_submit = models.BooleanField(
        default=True, help_text="Email the central approvers when an order is submitted."
    )
    notify_on_decision = models.BooleanField(
        default=True, help_text="Email the ordering entity when its order is decided."
    )
    reminder_days = models.PositiveIntegerField(
        default=3,
        help_text="Remind entities that have not ordered this many days before the "
        "registration deadline (0: no reminder).",
    )
    approval_days = models.PositiveIntegerField(
        default=3, help_text="Days approvers have to decide an order."
    )
    approval_expiry_default = models.CharField(
        max_length=16, choices=ExpiryDefault.choices, default=ExpiryDefault.STAY_EXPIRED
    )
    state = FSMField(
        max_length=16, choices=PackageState.choices, default=PackageState.DRAFT, protected=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)

    objects = PackageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("publish_package", "May publish, close, cancel and archive packages")]
        indexes = [models.Index(fields=["state", "visible_from", "visible_until"])]

    def __str__(self) -> str:
        return self.label

    @property
    def owning_entity(self) -> Entity:
        return self.reference_campaign.entity

    @property
    def collaborative_type(self) -> str:
        return self.reference_campaign.collaborative_type

    @property
    def needs_audience(self) -> bool:
        return self.collaborative_type in AUDIENCE_TYPES

    def registration_open(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.registration_deadline is None or now <= self.registration_deadline

    def personalisation_late(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.personalisation_deadline is not None and now > self.personalisation_deadline

    def is_visible_now(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return (self.visible_from is None or self.visible_from <= now) and (
            self.visible_until is None or now <= self.visible_until
        )

    def execution_window_refusal(self, at: Any) -> str:
        """Why a child campaign of this package may not start at ``at`` ('' when it may)."""
        if self.execution_at and at < self.execution_at:
            return (
                "The package's execution window opens on "
                f"{timezone.localtime(self.execution_at):%Y-%m-%d %H:%M}."
            )
        if self.execution_until and at > self.execution_until:
            return (
                "The package's execution window closed on "
                f"{timezone.localtime(self.execution_until):%Y-%m-%d %H:%M}."
            )
        return ""

    def publication_problems(self, now: Any = None) -> list[str]:
        """Every reason the package cannot be published, in plain words."""
        now = now or timezone.now()
        problems: list[str] = []
        campaign = self.reference_campaign
        if campaign.kind != "reference":
            problems.append("The campaign is not a reference (collaborative) campaign.")
        if campaign.state in {"stopped", "failed", "completed"}:
            problems.append(f"The reference campaign is {campaign.get_state_display().lower()}.")
        if self.registration_deadline is None:
            problems.append("Set a registration deadline.")
        elif self.registration_deadline <= now:
            problems.append("The registration deadline is already past.")
        if self.needs_audience and not self.audience.exists():
            problems.append(
                f"A {campaign.get_collaborative_type_display().lower()} package needs an "
                "audience of local entities."
            )
        if self.audience.exclude(kind="local").exists():
            problems.append("The audience may contain local entities only.")
        if self.audience.filter(active=False).exists():
            names = ", ".join(self.audience.filter(active=False).values_list("code", flat=True))
            problems.append(f"Inactive entities in the audience: {names}.")
        if self.visible_from and self.visible_until and self.visible_from >= self.visible_until:
            problems.append("The visibility end must come after its start.")
        if self.visible_until and self.visible_until <= now:
            problems.append("The visibility end is already past.")
        if self.registration_deadline:
            if self.visible_from and self.registration_deadline <= self.visible_from:
                problems.append("The registration deadline must come after the visibility start.")
            if self.visible_until and self.registration_deadline > self.visible_until:
                problems.append("The registration deadline must not come after the visibility end.")
            if self.execution_at and self.registration_deadline > self.execution_at:
                problems.append("The registration deadline must not come after the execution date.")
        if self.execution_at and self.execution_until and self.execution_until <= self.execution_at:
            problems.append("The execution window must end after it starts.")
        if (
            self.personalisation_deadline
            and self.execution_at
            and self.personalisation_deadline > self.execution_at
        ):
            problems.append("The personalisation deadline must not come after the execution date.")
        return problems

    # Life cycle ---------------------------------------------------------------------------

    @transition(
        field=state,
        source=PackageState.DRAFT,
        target=PackageState.PUBLISHED,
        permission="packages.publish_package",
        custom={"label": "Publish"},
    )
    def publish(self) -> None:
        self.published_at = timezone.now()

    @transition(
        field=state,
        source=PackageState.PUBLISHED,
        target=PackageState.CLOSED,
        permission="packages.publish_package",
        custom={"label": "Close"},
    )
    def close(self) -> None:
        """No longer offered; running campaigns carry on."""

    @transition(
        field=state,
        source=PackageState.CLOSED,
        target=PackageState.ARCHIVED,
        permission="packages.publish_package",
        custom={"label": "Archive"},
    )
    def archive(self) -> None:
        """Kept for reporting only."""

    @transition(
        field=state,
        source=[PackageState.DRAFT, PackageState.PUBLISHED],
        target=PackageState.CANCELLED,
        permission="packages.publish_package",
        custom={"label": "Cancel"},
    )
    def cancel(self) -> None:
        """Withdrawn: open orders are cancelled with it."""


class PackageDocument(models.Model):
    """A file shown to local entities with the package (not part of the campaign)."""

    package = models.ForeignKey(Package, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=200)
    file = models.FileField(upload_to=document_upload_to)
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title", "id"]

    def __str__(self) -> str:
        return self.title


class PackageReminder(models.Model):
    """Records that an entity was reminded of a package's deadline (sent once)."""

    package = models.ForeignKey(Package, on_delete=models.CASCADE, related_name="reminders")
    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="+")
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["package", "entity"], name="packages_reminder_once")
        ]

    def __str__(self) -> str:
        return f"{self.package} reminded to {self.entity.code}"


class Order(ConcurrentTransitionMixin, models.Model):
    """A local entity's subscription to a package, with its personalisation values."""

    package = models.ForeignKey(Package, on_delete=models.PROTECT, related_name="orders")
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="orders")
    sequence = models.PositiveIntegerField(
        default=1,
        editable=False,
        help_text="1 for packages taking one order per entity; 1, 2, … when several are allowed.",
    )
    ordered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    values = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    local_values = models.JSONField(
        default=dict,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text="The values the entity gave to the reference campaign's local conditions.",
    )
    comment = models.TextField(blank=True)
    state = FSMField(
        max_length=16, choices=OrderState.choices, default=OrderState.DRAFT, protected=True
    )
    late_personalisation = models.BooleanField(
        default=False, help_text="Changed after the personalisation deadline."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision_comment = models.TextField(blank=True)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_order", "May approve or reject orders")]
        constraints = [
            models.UniqueConstraint(
                fields=["package", "entity", "sequence"],
                condition=~Q(state=OrderState.CANCELLED),
                name="packages_order_one_per_entity",
                violation_error_message="This entity has already ordered this package.",
            )
        ]
        indexes = [
            models.Index(fields=["package", "state"]),
            models.Index(fields=["entity", "state"]),
        ]

    def __str__(self) -> str:
        suffix = f" #{self.sequence}" if self.sequence > 1 else ""
        return f"{self.package} — {self.entity.code}{suffix}"

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    def run_refusal(self, at: Any) -> str:
        """Why the campaign of this order (its child, or its scheduled run's) may not start
        at ``at`` ('' when it may): the order is accepted, the package published or closed,
        ``at`` within its execution window. Part of ``campaigns.services.start_refusal``."""
        if self.state not in ACCEPTED_ORDER_STATES:
            return f"Its order is {self.get_state_display().lower()}, not approved: it cannot run."
        package = self.package
        if package.state not in (PackageState.PUBLISHED, PackageState.CLOSED):
            return f"The package is {package.get_state_display().lower()}: it cannot run."
        return package.execution_window_refusal(at)

    def clean(self) -> None:
        super().clean()
        if self.entity_id and self.entity.kind != "local":
            raise ValidationError({"entity": "Only local entities order packages."})

    @transition(
        field=state,
        source=OrderState.DRAFT,
        target=OrderState.SUBMITTED,
        permission="packages.change_order",
        custom={"label": "Submit"},
    )
    def submit(self) -> None:
        self.submitted_at = timezone.now()

    @transition(
        field=state,
        source=OrderState.SUBMITTED,
        target=OrderState.APPROVED,
        permission="packages.decide_order",
        custom={"label": "Approve"},
    )
    def approve(self, *, by: Any = None, note: str = "") -> None:
        self._decide(by, note)

    @transition(
        field=state,
        source=OrderState.SUBMITTED,
        target=OrderState.REJECTED,
        permission="packages.decide_order",
        custom={"label": "Reject"},
    )
    def reject(self, *, by: Any = None, note: str = "") -> None:
        self._decide(by, note)

    @transition(
        field=state,
        source=[
            OrderState.DRAFT,
            OrderState.SUBMITTED,
            OrderState.APPROVED,
            OrderState.PREREGISTERED,
        ],
        target=OrderState.CANCELLED,
        permission="packages.change_order",
        custom={"label": "Cancel"},
    )
    def cancel(self) -> None:
        """The entity withdraws (or the package was cancelled)."""

    def _decide(self, by: Any, note: str) -> None:
        self.decided_at = timezone.now()
        self.decided_by = by if getattr(by, "is_authenticated", False) else None
        self.decision_comment = note
