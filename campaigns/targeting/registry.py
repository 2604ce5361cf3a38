"""The allow-list of what campaigns may target: dimensions, fields, relations and operators.

Nothing outside this registry can appear in a condition tree, so a marketer's query can only
reach the columns listed here, through the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import models

from campaigns.choices import BookingStatus, SubscriptionStatus
from campaigns.models import Booking, Contact, Subscription

TEXT, NUMBER, DATE, DATETIME, BOOL, CHOICE = "text", "number", "date", "datetime", "bool", "choice"

COMMON_OPERATORS = ("eq", "ne", "in", "not_in", "is_empty", "is_not_empty")
OPERATORS: dict[str, tuple[str, ...]] = {
    TEXT: (*COMMON_OPERATORS, "contains", "starts_with"),
    NUMBER: (*COMMON_OPERATORS, "lt", "lte", "gt", "gte", "between"),
    DATE: (
        *COMMON_OPERATORS,
        "lt",
        "lte",
        "gt",
        "gte",
        "between",
        "in_last_days",
        "in_next_days",
        "more_than_days_ago",
    ),
    BOOL: ("eq", "ne"),
    CHOICE: COMMON_OPERATORS,
}
OPERATORS[DATETIME] = OPERATORS[DATE]
RELATION_OPERATORS = ("exists", "not_exists", "count_gte")


@dataclass(frozen=True)
class FieldSpec:
    path: str
    type: str
    label: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelationSpec:
    path: str
    dimension: str
    label: str
    back: str = "contact"


@dataclass(frozen=True)
class DimensionSpec:
    name: str
    model: type[models.Model]
    contact_path: str
    entity_path: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    relations: dict[str, RelationSpec] = field(default_factory=dict)


CONTACT_FIELDS = {
    "external_id": FieldSpec("external_id", TEXT, "External id"),
    "first_name": FieldSpec("first_name", TEXT, "First name"),
    "last_name": FieldSpec("last_name", TEXT, "Last name"),
    "email": FieldSpec("email", TEXT, "Email"),
    "phone": FieldSpec("phone", TEXT, "Phone"),
    "language": FieldSpec("language", TEXT, "Language"),
    "birth_date": FieldSpec("birth_date", DATE, "Birth date"),
    "email_consent": FieldSpec("email_consent", BOOL, "Email consent"),
    "sms_consent": FieldSpec("sms_consent", BOOL, "SMS consent"),
    "push_consent": FieldSpec("push_consent", BOOL, "Push consent"),
    "blocklisted": FieldSpec("blocklisted", BOOL, "Blocklisted"),
    "created_at": FieldSpec("created_at", DATETIME, "Created"),
    "entity.code": FieldSpec("entity__code", TEXT, "Entity code"),
    "entity.name": FieldSpec("entity__name", TEXT, "Entity name"),
}


def _prefixed(prefix: str, path_prefix: str, fields: dict[str, FieldSpec]) -> dict:
    return {
        f"{prefix}.{name}": FieldSpec(f"{path_prefix}__{spec.path}", spec.type, spec.label)
        for name, spec in fields.items()
    }


BOOKING_FIELDS = {
    "reference": FieldSpec("reference", TEXT, "Reference"),
    "product": FieldSpec("product", TEXT, "Product"),
    "destination": FieldSpec("destination", TEXT, "Destination"),
    "booking_date": FieldSpec("booking_date", DATE, "Booking date"),
    "amount": FieldSpec("amount", NUMBER, "Amount"),
    "status": FieldSpec("status", CHOICE, "Status", tuple(BookingStatus.values)),
    "store.code": FieldSpec("store__code", TEXT, "Store code"),
    "store.city": FieldSpec("store__city", TEXT, "Store city"),
}
SUBSCRIPTION_FIELDS = {
    "product": FieldSpec("product", TEXT, "Product"),
    "start_date": FieldSpec("start_date", DATE, "Start"),
    "end_date": FieldSpec("end_date", DATE, "End"),
    "status": FieldSpec("status", CHOICE, "Status", tuple(SubscriptionStatus.values)),
}

DIMENSIONS: dict[str, DimensionSpec] = {
    "contact": DimensionSpec(
        name="contact",
        model=Contact,
        contact_path="pk",
        entity_path="entity",
        fields=CONTACT_FIELDS,
        relations={
            "bookings": RelationSpec("bookings", "booking", "Bookings"),
            "subscriptions": RelationSpec("subscriptions", "subscription", "Subscriptions"),
        },
    ),
    "booking": DimensionSpec(
        name="booking",
        model=Booking,
        contact_path="contact_id",
        entity_path="contact__entity",
        fields={**BOOKING_FIELDS, **_prefixed("contact", "contact", CONTACT_FIELDS)},
    ),
    "subscription": DimensionSpec(
        name="subscription",
        model=Subscription,
        contact_path="contact_id",
        entity_path="contact__entity",
        fields={**SUBSCRIPTION_FIELDS, **_prefixed("contact", "contact", CONTACT_FIELDS)},
    ),
}


def describe() -> dict:
    """The registry as data, for the query builder's help and the API."""
    return {
        name: {
            "fields": {
                key: {"type": spec.type, "label": spec.label, "operators": OPERATORS[spec.type],
                      **({"choices": spec.choices} if spec.choices else {})}
                for key, spec in dimension.fields.items()
            },
            "relations": {
                key: {"label": rel.label, "dimension": rel.dimension,
                      "operators": RELATION_OPERATORS}
                for key, rel in dimension.relations.items()
            },
        }
        for name, dimension in DIMENSIONS.items()
    }  # fmt: skip
