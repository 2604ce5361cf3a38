"""Choices of the API app: token scopes live in models.py; webhook events and statuses here."""

from __future__ import annotations

from django.db import models


class WebhookEvent(models.TextChoices):
    """Events an endpoint may subscribe to. Adding one: a member here, then one
    ``webhooks.emit(...)`` call in the service where it happens (inside its transaction)."""

    PACKAGE_PUBLISHED = "package.published", "Package published"
    ORDER_SUBMITTED = "order.submitted", "Order submitted"
    ORDER_APPROVED = "order.approved", "Order approved"
    ORDER_REJECTED = "order.rejected", "Order rejected"
    ORDER_CANCELLED = "order.cancelled", "Order cancelled"
    CHILD_CAMPAIGN_CREATED = "campaign.child_created", "Child campaign created"
    DELIVERY_SENT = "delivery.sent", "Delivery sent"
    CONTACT_UNSUBSCRIBED = "contact.unsubscribed", "Contact unsubscribed"
    MESSAGE_BOUNCED = "message.bounced", "Message bounced"
    MESSAGE_COMPLAINED = "message.complained", "Spam complaint"


class WebhookStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
