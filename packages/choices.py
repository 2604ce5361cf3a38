"""Choices of the packages app."""

from django.db import models


class PackageState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    CLOSED = "closed", "Closed"
    ARCHIVED = "archived", "Archived"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalMode(models.TextChoices):
    MANUAL = "manual", "Manual: entities order, the centre approves"
    AUTOMATIC = "automatic", "Automatic: audience entities are pre-registered"


class OrderState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    PREREGISTERED = "preregistered", "Pre-registered"


# Orders that hold the entity's place in a package (counted as ordered).
ACTIVE_ORDER_STATES = frozenset(
    {
        OrderState.DRAFT,
        OrderState.SUBMITTED,
        OrderState.APPROVED,
        OrderState.PREREGISTERED,
    }
)
# Orders that count as accepted for execution.
ACCEPTED_ORDER_STATES = frozenset({OrderState.APPROVED, OrderState.PREREGISTERED})
# Orders the entity may still change.
EDITABLE_ORDER_STATES = frozenset(
    {OrderState.DRAFT, OrderState.SUBMITTED, OrderState.PREREGISTERED}
)


class ExpiryDefault(models.TextChoices):
    STAY_EXPIRED = "expire", "Expire the request (the order stays undecided)"
    AUTO_APPROVE = "approve", "Approve automatically"
