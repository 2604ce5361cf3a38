"""Engagement events: what happened to a message after it was handed to a provider.

One narrow row per event (delivered, opened, clicked, bounced, complained, unsubscribed),
written by the tracking endpoints, the provider webhooks and the bounce mailbox, read by the
engagement reports. Built for volume: a big integer key, small-integer kinds and agent
classes, the delivery and entity copied from the message so that reports read this table
alone, and links that the database does not check row by row (no foreign key to scan or
cascade through: a delivery's events are deleted with it by one indexed delete).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from campaigns.models.delivery import Delivery, Message
from portal.models import Entity


class EventKind(models.IntegerChoices):
    """What happened. Stored as a small integer; ``parse`` reads the names too."""

    DELIVERED = 1, "Delivered"
    OPEN = 2, "Opened"
    CLICK = 3, "Clicked"
    BOUNCE_HARD = 4, "Hard bounce"
    BOUNCE_SOFT = 5, "Soft bounce"
    COMPLAINT = 6, "Complaint"
    UNSUBSCRIBE = 7, "Unsubscribed"

    @classmethod
    def parse(cls, value: Any) -> EventKind:
        """A kind from a member, its number or its name ("bounce_hard", "click")."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, str):
            key = value.strip().upper()
            if key in cls.__members__:
                return cls[key]
            if key.isdigit():
                return cls(int(key))
        raise ValueError(f"Unknown event kind: {value!r}.")


class AgentClass(models.IntegerChoices):
    """The kind of software that opened or clicked, read from its user agent."""

    UNKNOWN = 0, "Unknown"
    BROWSER = 1, "Desktop browser"
    MOBILE = 2, "Mobile"
    MAIL_CLIENT = 3, "Mail client"
    APPLE_PROXY = 4, "Apple Mail Privacy Protection"
    IMAGE_PROXY = 5, "Mailbox image proxy"
    SCANNER = 6, "Security scanner"
    BOT = 7, "Bot or script"
    SERVER = 8, "Provider or server"  # webhooks, bounce mailbox

    @classmethod
    def parse(cls, value: Any) -> AgentClass:
        if isinstance(value, cls):
            return value
        if isinstance(value, int):
            return cls(value)
        if not value:
            return cls.UNKNOWN
        key = str(value).strip().upper()
        if key in cls.__members__:
            return cls[key]
        raise ValueError(f"Unknown agent class: {value!r}.")


class Event(models.Model):
    """One engagement event of one message. ``machine``: an open or click made by software
    (Apple's proxy, a security scanner, a click seconds after the send, a HEAD request), kept
    out of human rates. ``link``: the index of the clicked link in the delivery's frozen list
    (``Delivery.tracked_links``). ``ip`` only when ENGAGEMENT_STORE_IP is on. ``ref``: the
    provider's event id, so that a webhook delivered twice records one event."""

    id = models.BigAutoField(primary_key=True)
    message = models.ForeignKey(
        Message, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False, null=True, blank=True,
    )  # fmt: skip
    delivery = models.ForeignKey(
        Delivery, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False, null=True, blank=True,
    )  # fmt: skip
    entity = models.ForeignKey(
        Entity, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False,
        db_index=False, null=True, blank=True,
        help_text="The entity of the message's contact (its owner in reports).",
    )  # fmt: skip
    kind = models.PositiveSmallIntegerField(choices=EventKind.choices)
    at = models.DateTimeField(default=timezone.now)
    link = models.PositiveSmallIntegerField(null=True, blank=True)
    agent = models.PositiveSmallIntegerField(choices=AgentClass.choices, default=AgentClass.UNKNOWN)
    machine = models.BooleanField(default=False)
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=255, blank=True, help_text="A bounce's diagnostic.")
    ref = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The figures: one delivery's events message by message (a streaming group by
            # message, no sort and no hash), read from the index alone (PostgreSQL).
            models.Index(
                fields=["delivery", "message", "kind", "machine"],
                include=["link", "entity"],
                name="event_report",
            ),
            # The timeline: one delivery's events in time order.
            models.Index(
                fields=["delivery", "at"], include=["kind", "machine"], name="event_timeline"
            ),
            # The clicks per link (clicks only), with what the link table counts.
            models.Index(
                fields=["delivery", "link", "message"],
                include=["machine", "entity"],
                condition=Q(kind=3),  # EventKind.CLICK
                name="event_clicks",
            ),
            # A message's events (its contact's history; a webhook's "seen already?").
            models.Index(fields=["message", "kind"], name="event_message"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "ref"], condition=~Q(ref=""), name="event_once_per_provider_ref"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of message {self.message_id}"


class Seen(models.IntegerChoices):
    """Bits of ``MessageEngagement.seen``: what a message's events showed at least once."""

    DELIVERED = 1, "delivered"
    BOUNCED_HARD = 2, "bounced_hard"
    BOUNCED_SOFT = 4, "bounced_soft"
    OPENED = 8, "opened"  # a human open, or a human click
    CLICKED = 16, "clicked"  # a human click
    UNSUBSCRIBED = 32, "unsubscribed"
    COMPLAINTS = 64, "complaints"
    MACHINE_OPENS = 128, "machine_opens"
    MACHINE_CLICKS = 256, "machine_clicks"


class MessageEngagement(models.Model):
    """One row per message with events: the bits of what they showed (``Seen``), OR-ed in by
    every event write (an upsert). The reports' unique figures read this (one narrow row per
    engaged message) instead of grouping the events."""

    message_id = models.BigIntegerField(primary_key=True)
    delivery_id = models.BigIntegerField()
    entity_id = models.BigIntegerField(null=True)
    seen = models.IntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(
                fields=["delivery_id", "entity_id"],
                include=["seen"],
                name="engagement_per_delivery",
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.message_id}: {self.seen}"


class EngagementHour(models.Model):
    """Opens and clicks per delivery, entity, hour, kind and machine flag: the timeline,
    added to by every event write (an upsert)."""

    delivery_id = models.BigIntegerField()
    entity_id = models.BigIntegerField(default=0, help_text="0: none")
    hour = models.DateTimeField()
    kind = models.PositiveSmallIntegerField(choices=EventKind.choices)
    machine = models.BooleanField()
    events = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["delivery_id", "hour", "entity_id", "kind", "machine"],
                name="engagement_hour_once",
            )
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id} {self.hour:%Y-%m-%d %H}: {self.events}"


class SentBlock(models.Model):
    """Sent messages per delivery, block of message ids (``id // BLOCK``) and entity (0:
    none), with the first send time: the reports' "sent" and the chart's start, read without
    scanning the messages. Counted again, set-based, for the blocks of a chunk once its
    sending ends (``campaigns.engagement.sent``), and for the whole delivery when it finishes;
    a count, not an increment, so that a chunk sent twice or taken over counts right."""

    BLOCK = 1024

    delivery_id = models.BigIntegerField()
    block = models.BigIntegerField()
    entity_id = models.BigIntegerField(default=0, help_text="0: none")
    sent = models.PositiveIntegerField(default=0)
    first_sent_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["delivery_id", "block", "entity_id"], name="sent_block_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}/{self.block}/{self.entity_id}: {self.sent}"
