"""API-triggered (transactional) messages: a definition an external system triggers by its
key, and the record of each accepted trigger (its idempotency key and its message).

A published definition owns a hidden campaign, typology and delivery (always "sending"):
its messages are rows of the one message table, so delivery reports, the contact's history
and pressure rules count them, and they go out through the same chunk sender.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from campaigns.choices import Channel
from campaigns.models import checks
from campaigns.models.delivery import Delivery, Message, Typology
from portal.models import Entity, EntityOwnedQuerySet


class TriggerState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    PAUSED = "paused", "Paused"
    ARCHIVED = "archived", "Archived"


class TriggerKind(models.TextChoices):
    TRANSACTIONAL = "transactional", "Transactional (blocklist and quarantine only)"
    MARKETING = "marketing", "Marketing (consent, blocklist, quarantine, pressure)"


TRIGGER_CHANNELS = [(c.value, c.label) for c in Channel if c != Channel.DIRECT_MAIL]
DEFAULT_SCHEMA = {"type": "object", "properties": {}, "additionalProperties": True}


class TriggerDefinition(ConcurrentTransitionMixin, models.Model):
    """A message an external system sends through the API (``POST /api/v1/triggers/<key>/``)
    with a JSON payload: its channel, content (``payload.*`` and the contact's fields), the
    JSON Schema the payload must match, and its kind (which typology rules apply)."""

    name = models.CharField(max_length=200)
    entity = models.ForeignKey(
        Entity, on_delete=models.PROTECT, related_name="trigger_definitions",
        help_text="The entity whose identity (sender, postal address) the messages carry.",
    )  # fmt: skip
    channel = models.CharField(max_length=16, choices=TRIGGER_CHANNELS, default=Channel.EMAIL)
    kind = models.CharField(
        max_length=16, choices=TriggerKind.choices, default=TriggerKind.TRANSACTIONAL
    )
    category = models.CharField(
        max_length=64, blank=True,
        help_text="Marketing: counted by pressure rules limited to a category, and opt-outs.",
    )  # fmt: skip
    pressure_typology = models.ForeignKey(
        Typology, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Marketing: the pressure rules of this typology apply to each trigger.",
    )  # fmt: skip
    sender = models.CharField(max_length=255, blank=True)
    reply_to = models.CharField(max_length=255, blank=True)
    subject = models.CharField(max_length=255, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField(blank=True, help_text="Email text part, SMS text, push body.")
    push_title = models.CharField(max_length=255, blank=True)
    payload_schema = models.JSONField(
        default=dict, blank=True,
        help_text='The JSON Schema (2020-12) every payload must match, e.g. {"type": "object", '
        '"required": ["order_id"], "properties": {"order_id": {"type": "string"}}}.',
    )  # fmt: skip
    state = FSMField(
        max_length=16, choices=TriggerState.choices, default=TriggerState.DRAFT, protected=True
    )
    key = models.CharField(
        max_length=64, unique=True, null=True, blank=True, editable=False,
        help_text="The key in the trigger's URL; given when it is first published.",
    )  # fmt: skip
    delivery = models.OneToOneField(
        Delivery, null=True, blank=True, editable=False, on_delete=models.PROTECT,
        related_name="trigger_definition",
        help_text="The hidden delivery its messages belong to (reports, history, pressure).",
    )  # fmt: skip
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = EntityOwnedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "triggered message"

    def __str__(self) -> str:
        return self.name

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    def clean(self) -> None:
        """Schema, content and sender: the rules are ``campaigns.triggers``' (registered in
        ``checks``)."""
        checks.run(self)

    @transition(field=state, source=TriggerState.DRAFT, target=TriggerState.PUBLISHED)
    def publish(self, *, at: Any) -> None:
        """Triggers are accepted from now on (the key is given by the service)."""
        self.published_at = at

    @transition(field=state, source=TriggerState.PUBLISHED, target=TriggerState.PAUSED)
    def pause(self) -> None:
        """Triggers are refused (409) until it is resumed; the key stays the same."""

    @transition(field=state, source=TriggerState.PAUSED, target=TriggerState.PUBLISHED)
    def resume(self) -> None:
        """Triggers are accepted again, with the content as it is now."""

    @transition(
        field=state,
        source=[TriggerState.DRAFT, TriggerState.PUBLISHED, TriggerState.PAUSED],
        target=TriggerState.ARCHIVED,
    )
    def archive(self) -> None:
        """For good: its key answers 404; its messages stay in the reports."""


class TriggeredMessageQuerySet(models.QuerySet["TriggeredMessage"]):
    def visible_to(self, user: Any) -> TriggeredMessageQuerySet:
        """The caller's own triggers; central users see every one."""
        from portal.models import is_central_user

        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if is_central_user(user):
            return self.all()
        return self.filter(owner=user)


class TriggeredMessage(models.Model):
    """One accepted trigger: who sent it, its idempotency key and the message it made. The
    key is unique per (token owner, definition): a repeated POST finds this row."""

    definition = models.ForeignKey(
        TriggerDefinition, on_delete=models.PROTECT, related_name="triggered"
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=255, blank=True)
    message = models.OneToOneField(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="trigger"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TriggeredMessageQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "definition", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="trigger_once_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.definition} #{self.pk}"
