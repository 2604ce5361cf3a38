"""Choices of the campaigns app."""

from django.db import models


class CampaignKind(models.TextChoices):
    REFERENCE = "reference", "Reference (collaborative)"
    PARENT = "parent", "Parent"
    CHILD = "child", "Child"
    LOCAL = "local", "Local"


class CollaborativeType(models.TextChoices):
    SIMPLE = "simple", "Simple"
    BY_FORM = "by_form", "By form"
    BY_CAMPAIGN = "by_campaign", "By campaign"
    BY_TARGET_APPROVAL = "by_target_approval", "By target approval"


# Collaborative types whose packages need an audience of local entities.
AUDIENCE_TYPES = frozenset(
    {CollaborativeType.SIMPLE, CollaborativeType.BY_FORM, CollaborativeType.BY_CAMPAIGN}
)


class CampaignState(models.TextChoices):
    DRAFT = "draft", "Draft"
    READY = "ready", "Ready"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


class FieldType(models.TextChoices):
    TEXT = "text", "Text"
    LONG_TEXT = "long_text", "Long text"
    NUMBER = "number", "Number"
    DATE = "date", "Date"
    CHOICE = "choice", "Choice"
    BOOLEAN = "boolean", "Yes / no"
    FILE = "file", "Image or file"


class RunState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    CANCELLED = "cancelled", "Cancelled"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    DIRECT_MAIL = "direct_mail", "Direct mail"


class Dimension(models.TextChoices):
    CONTACT = "contact", "Contacts (one row per contact)"
    BOOKING = "booking", "Bookings (one row per booking, with its contact)"
    SUBSCRIPTION = "subscription", "Subscriptions (one row per subscription, with its contact)"


class BookingStatus(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class ImportKind(models.TextChoices):
    CONTACTS = "contacts", "Contacts"
    STORES = "stores", "Stores"
    BOOKINGS = "bookings", "Bookings"
    SUBSCRIPTIONS = "subscriptions", "Subscriptions"


class ImportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Purpose(models.TextChoices):
    """What a typology's messages are: marketing ones carry unsubscribe links and headers
    (RFC 8058) and the sender's postal address; transactional ones (an order confirmation)
    may omit them."""

    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"
