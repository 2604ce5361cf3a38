from django.db import models


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class RequestKind(models.TextChoices):
    ORDER = "order", "Order"
    DELIVERY = "delivery", "Delivery"
    TARGET = "target", "Local target list"


class DecisionChannel(models.TextChoices):
    EMAIL = "email", "Email link"
    PORTAL = "portal", "Portal"
    ADMIN = "admin", "Admin"
    SYSTEM = "system", "Deadline"
