"""Deliveries: typologies (reusable sets of rules), deliveries and their message rows.

A delivery's preparation writes one message row per recipient (unique per delivery, contact
and secondary record), marks the rows each typology rule excludes, and keeps the data to
render each message at send time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from campaigns.choices import Channel, Dimension, Purpose
from campaigns.models import checks
from campaigns.models.audience import Contact
from campaigns.models.campaign import Campaign
from campaigns.models.workflow import Activity, WorkflowRun
from portal.models import Entity, EntityOwnedQuerySet


class Typology(models.Model):
    """A named, reusable, ordered set of typology rules (consent, blocklist, pressure…)."""

    name = models.CharField(max_length=200)
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="typologies")
    description = models.TextField(blank=True)
    purpose = models.CharField(
        max_length=16,
        choices=Purpose.choices,
        default=Purpose.MARKETING,
        help_text="Marketing emails carry unsubscribe links and headers and the sender's "
        "postal address; transactional ones may omit them.",
    )
    rules = models.JSONField(
        default=list,
        blank=True,
        help_text='Ordered rules, e.g. [{"rule": "consent"}, {"rule": "pressure", "max": 3, '
        '"days": 7}]; a recipient is excluded by the first rule that matches.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "typologies"

    def __str__(self) -> str:
        return self.name

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    def clean(self) -> None:
        """The rules are ``campaigns.delivery.typology``'s (registered in ``checks``)."""
        checks.run(self)


class DeliveryState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PREPARING = "preparing", "Preparing"
    PREPARED = "prepared", "Prepared"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    READY = "ready", "Ready to send"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


class DeliveryQuerySet(EntityOwnedQuerySet):
    """A delivery belongs to its campaign's entity."""

    entity_path = "campaign__entity"


class MessageQuerySet(EntityOwnedQuerySet):
    """A message row is seen with its delivery (its campaign's entity)."""

    entity_path = "delivery__campaign__entity"


class Delivery(ConcurrentTransitionMixin, models.Model):
    """One send on one channel: content, target dimension, typology, and its figures."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="deliveries")
    activity = models.ForeignKey(
        Activity, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    run = models.ForeignKey(
        WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    label = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    dimension = models.CharField(
        max_length=16,
        choices=Dimension.choices[:2],
        default=Dimension.CONTACT,
        help_text="One message per contact, or one per booking (multi-level send).",
    )
    category = models.CharField(
        max_length=64, blank=True, help_text="Counted by pressure rules limited to a category."
    )
    typology = models.ForeignKey(
        Typology, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    sender = models.CharField(max_length=255, blank=True)
    reply_to = models.CharField(max_length=255, blank=True)
    subject = models.CharField(max_length=255, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField(blank=True, help_text="Email text part, SMS text, push body.")
    push_title = models.CharField(max_length=255, blank=True)
    push_data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    columns = models.JSONField(
        default=list,
        blank=True,
        help_text='Direct mail: the contact fields of the export file, e.g. ["first_name", '
        '"last_name", "email"].',
    )
    export_format = models.CharField(
        max_length=8,
        choices=[("csv", "CSV"), ("xlsx", "Excel (XLSX)")],
        default="csv",
        help_text="Direct mail: the export file's format.",
    )
    requires_approval = models.BooleanField(default=False)
    track_opens = models.BooleanField(
        default=True, help_text="Email: add an open pixel to the HTML part."
    )
    track_clicks = models.BooleanField(
        default=True, help_text="Email: send the HTML part's links through signed redirects."
    )
    tracked_links = models.JSONField(
        default=list, blank=True, editable=False,
        help_text="The links of the HTML template, frozen when sending starts; a click "
        "token names one by its index.",
    )  # fmt: skip
    saved_query = models.ForeignKey(
        "campaigns.SavedQuery",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A one-off delivery's target (a workflow's delivery gets its population).",
    )
    scheduled_at = models.DateTimeField(
        null=True, blank=True, help_text="Send at this moment (empty: as soon as it is ready)."
    )
    state = FSMField(
        max_length=20, choices=DeliveryState.choices, default=DeliveryState.DRAFT, protected=True
    )
    targeted = models.PositiveIntegerField(default=0)
    exclusions = models.JSONField(default=dict, blank=True, help_text="Rows excluded per rule.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    prepared_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    progress_at = models.DateTimeField(
        null=True, blank=True,
        help_text="The last sign of life of its sending (a claim, a mark, a retry, a recovery).",
    )  # fmt: skip
    export_file = models.FileField(
        upload_to="deliveries/", blank=True, help_text="Direct mail: the file for the printer."
    )
    triggered = models.BooleanField(
        default=False, editable=False,
        help_text="The hidden delivery of an API-triggered message: it stays sending, and its "
        "templates read ``payload``.",
    )  # fmt: skip

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["run", "activity"],
                condition=Q(run__isnull=False, activity__isnull=False),
                name="delivery_once_per_activity_and_run",
            )
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def owning_entity(self) -> Entity:
        return self.campaign.entity

    def clean(self) -> None:
        """Content (templates, what the channel needs) and sender: the rules are the delivery
        services' (registered in ``checks``), as for the workflow's delivery activity."""
        if self.campaign_id is None:
            return
        checks.run(self)

    @transition(
        field=state,
        source=[DeliveryState.DRAFT, DeliveryState.PREPARED, DeliveryState.READY],
        target=DeliveryState.PREPARING,
    )
    def start_preparation(self) -> None:
        """Preparation tasks turn the target into messages, chunk by chunk (the audit entry
        records how many chunks and rows)."""

    @transition(field=state, source=DeliveryState.PREPARING, target=DeliveryState.PREPARED)
    def prepare(self, *, targeted: int, exclusions: dict[str, int], at: Any) -> None:
        self.targeted = targeted
        self.exclusions = exclusions
        self.prepared_at = at

    @transition(field=state, source=DeliveryState.PREPARED, target=DeliveryState.AWAITING_APPROVAL)
    def ask_approval(self) -> None:
        """The delivery waits for a central approver's decision before it can be sent."""

    @transition(
        field=state,
        source=[DeliveryState.PREPARED, DeliveryState.AWAITING_APPROVAL],
        target=DeliveryState.READY,
    )
    def make_ready(self) -> None:
        """Prepared (and approved when approval is required): it may be sent."""

    @transition(field=state, source=DeliveryState.READY, target=DeliveryState.SENDING)
    def start_sending(self) -> None:
        """Sending tasks claim the pending messages in chunks. Every path to sending comes
        through the sending service (``campaigns.delivery.sending.begin_sending``), which runs
        the typology's pressure and capacity rules again first, counting what was sent since
        the preparation (one start at a time: see ``reapply_at_send``), and freezes the
        tracked links."""
        self.progress_at = timezone.now()

    @transition(field=state, source=DeliveryState.SENDING, target=DeliveryState.SENT)
    def finish(self, *, at: Any) -> None:
        self.sent_at = at

    @transition(field=state, source=DeliveryState.SENT, target=DeliveryState.SENDING)
    def resend_in_doubt(self) -> None:
        """A central user chose to send again the messages whose fate is unknown (in doubt):
        the delivery is sending until they are sent."""
        self.progress_at = timezone.now()

    @transition(
        field=state,
        source=[
            DeliveryState.DRAFT,
            DeliveryState.PREPARING,
            DeliveryState.PREPARED,
            DeliveryState.AWAITING_APPROVAL,
            DeliveryState.READY,
        ],
        target=DeliveryState.CANCELLED,
    )
    def cancel(self) -> None:
        """Nothing was sent; pending messages stay unsent."""

    @transition(
        field=state,
        source=[
            DeliveryState.PREPARING,
            DeliveryState.PREPARED,
            DeliveryState.READY,
            DeliveryState.SENDING,
        ],
        target=DeliveryState.FAILED,
    )
    def fail(self, *, error: str) -> None:
        self.error = error


class PreparationChunk(models.Model):
    """One slice (an id range) of the work table a delivery is prepared from: one task turns
    it into messages; the delivery's progress is the share of its chunks done."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="preparation_chunks"
    )
    run_key = models.CharField(max_length=64)
    table = models.CharField(max_length=64)
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    rows = models.PositiveIntegerField(help_text="Work-table rows in the range.")
    done = models.BooleanField(default=False)
    inserted = models.PositiveIntegerField(default=0, help_text="Messages it added.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["first_id"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "first_id"], name="chunk_once_per_range")
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}: {self.first_id}-{self.last_id}"


class MessageStatus(models.TextChoices):
    """A message's life: pending, claimed by a chunk (sending), durably marked in flight the
    moment before it is handed to the provider, then sent or failed. One found in flight
    after its worker died is in doubt: the provider may or may not have accepted it."""

    PENDING = "pending", "Pending"
    EXCLUDED = "excluded", "Excluded"
    SENDING = "sending", "Sending"
    IN_FLIGHT = "in_flight", "Handed to the provider"
    IN_DOUBT = "in_doubt", "In doubt"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# A message in one of these is still to be sent (or being sent) by a chunk task.
UNSENT = ("pending", "sending", "in_flight")


class Message(models.Model):
    """One recipient of a delivery (a contact, or a contact and a booking): its address,
    status, the rule that excluded it, and the data to render its content."""

    # Preparation writes tens of thousands of rows per second: the unique constraint and the
    # contact index are the only ones an insert maintains (the delivery is the constraint's
    # first column); the contact and entity links are not checked row by row by the database
    # (deleting a contact still deletes its messages, through Django).
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    # Empty only for a triggered transactional message to an address that is not a contact.
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="messages", db_constraint=False,
        db_index=False, null=True, blank=True,
    )  # fmt: skip
    secondary_id = models.BigIntegerField(
        default=0, help_text="The booking a multi-level message is about (0: none)."
    )
    entity = models.ForeignKey(
        Entity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        db_constraint=False, db_index=False,
    )  # fmt: skip
    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.PENDING
    )
    rule = models.CharField(max_length=32, blank=True, help_text="The rule that excluded it.")
    data = models.JSONField(null=True, blank=True, help_text="Enrichment values.")
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Claimed, or last heartbeat of its claim (the mark that put it in flight).",
    )  # fmt: skip
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="After a temporary error: not retried before this."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "contact", "secondary_id"], name="message_once_per_recipient"
            )
        ]
        indexes = [
            models.Index(fields=["contact", "sent_at"], name="message_contact_history"),
            # What is left to send, per delivery: chunking, and "is it finished?" after each
            # chunk, without reading the rows already sent.
            models.Index(
                fields=["delivery", "id"],
                condition=Q(status__in=UNSENT),
                name="message_unsent",
            ),
            # Sent messages per delivery and entity (the engagement reports' "sent"), counted
            # from the index alone.
            models.Index(
                fields=["delivery", "entity"],
                condition=Q(status="sent"),
                name="message_sent_per_entity",
            ),
            # Sent messages per channel and day (capacity rules); pending rows skip it.
            models.Index(
                fields=["channel", "sent_at"],
                condition=Q(status="sent"),
                name="message_sent_per_channel",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}/{self.contact_id}: {self.status}"


class Proof(models.Model):
    """A test send of a delivery's rendered message for a sample recipient to a test address,
    before the real send. Sent by a task after the request commits."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="proofs")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    secondary_id = models.BigIntegerField(default=0)
    address = models.CharField(max_length=255)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Proof of {self.delivery} to {self.address}"
