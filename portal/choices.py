"""Choices shared by the portal app."""

from django.db import models


class EntityKind(models.TextChoices):
    CENTRAL = "central", "Central"
    REGION = "region", "Region"
    LOCAL = "local", "Local entity"


class Role(models.TextChoices):
    CENTRAL_MARKETER = "central_marketer", "Central marketer"
    CENTRAL_APPROVER = "central_approver", "Central approver"
    LOCAL_OPERATOR = "local_operator", "Local operator"
    LOCAL_APPROVER = "local_approver", "Local approver"


CENTRAL_ROLES = frozenset({Role.CENTRAL_MARKETER, Role.CENTRAL_APPROVER})
LOCAL_ROLES = frozenset({Role.LOCAL_OPERATOR, Role.LOCAL_APPROVER})


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class ExportState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Being prepared"
    DONE = "done", "Ready"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", "Excel (XLSX)"
