"""The order list the admin exports (``portal.exports``)."""

from __future__ import annotations

from typing import Any

from packages.models import Order
from portal.exports import Column, ExportKind


def values_text(values: Any) -> str:
    """Personalisation values as ``name=value; …`` (a file as its name, never its path)."""
    parts = []
    for name, value in sorted((values or {}).items()):
        if isinstance(value, dict):
            value = value.get("name", "")
        parts.append(f"{name}={'' if value is None else value}")
    return "; ".join(parts)


ORDER_COLUMNS = (
    Column("id", "id"),
    Column("package", "package__label"),
    Column("entity_code", "entity__code", header="entity code"),
    Column("entity_name", "entity__name", header="entity"),
    Column("sequence", "sequence"),
    Column("state", "state"),
    Column("ordered_by", "ordered_by__username", header="ordered by"),
    Column("values", "values", header="personalisation", render=values_text),
    Column("comment", "comment"),
    Column("late_personalisation", "late_personalisation"),
    Column("created_at", "created_at"),
    Column("submitted_at", "submitted_at"),
    Column("decided_at", "decided_at"),
    Column("decision_comment", "decision_comment"),
)

ORDERS = ExportKind(
    name="orders",
    label="Orders",
    model=Order,
    columns=ORDER_COLUMNS,
    visible=lambda user: Order.objects.visible_to(user),
    permission="packages.view_order",
)
