"""Bounces and complaints reported by email providers (webhooks) or by the bounce mailbox
(RFC 3464 delivery status notifications), one row per provider event and recipient."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from campaigns.models.delivery import Message


class BounceKind(models.TextChoices):
    HARD = "bounce_hard", "Hard bounce"
    SOFT = "bounce_soft", "Soft bounce"
    COMPLAINT = "complaint", "Complaint"


class BounceProvider(models.TextChoices):
    SES = "ses", "Amazon SES (SNS)"
    SENDGRID = "sendgrid", "SendGrid"
    MAILGUN = "mailgun", "Mailgun"
    POSTMARK = "postmark", "Postmark"
    DSN = "dsn", "Bounce mailbox (DSN)"


class ProviderEvent(models.Model):
    """A bounce or complaint as a provider reported it: which of our messages it is about
    (none when it matches none: ``unmatched``), the recipient, the provider's reference, and
    what it did (quarantine, unsubscribe). The provider's event id is unique: a replayed
    webhook or a mailbox read twice records nothing new and has no second effect."""

    provider = models.CharField(max_length=16, choices=BounceProvider.choices)
    event_id = models.CharField(max_length=255, help_text="The provider's id of this event.")
    kind = models.CharField(max_length=16, choices=BounceKind.choices)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="bounces",
        db_constraint=False,
    )  # fmt: skip
    recipient = models.CharField(max_length=255, blank=True)
    reference = models.CharField(
        max_length=255, blank=True, help_text="Message-ID or provider message id reported."
    )
    detail = models.CharField(max_length=500, blank=True, help_text="Status and diagnostic.")
    unmatched = models.BooleanField(default=False, help_text="No message of ours matched.")
    quarantined = models.BooleanField(default=False)
    unsubscribed = models.BooleanField(default=False)
    at = models.DateTimeField(default=timezone.now, help_text="When the provider saw it.")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_once")
        ]
        indexes = [
            # Soft bounces of one address (counting towards quarantine).
            models.Index(fields=["recipient", "kind", "at"], name="provider_event_recipient"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.recipient} ({self.provider})"
