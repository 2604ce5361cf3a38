"""Exact counts computed by the database, in one query, without loading a row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet

from campaigns.targeting.compiler import compile_conditions
from campaigns.targeting.registry import DIMENSIONS
from portal.models import Entity, is_central_user


@dataclass(frozen=True)
class CountResult:
    rows: int
    contacts: int

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "contacts": self.contacts}


def target_queryset(
    dimension: str, conditions: Any, *, user: Any = None, entity: Entity | None = None
) -> QuerySet:
    """The rows a condition tree selects, limited to what ``user`` may see and, when given, to
    one entity's subtree."""
    q = compile_conditions(dimension, conditions)  # refuses unknown dimensions
    spec = DIMENSIONS[dimension]
    queryset = spec.model.objects.filter(q)
    if user is not None and not is_central_user(user):
        queryset = queryset.filter(**{f"{spec.entity_path}__in": Entity.objects.visible_ids(user)})
    if entity is not None:
        # The subtree's ids as values, not as a subquery: the planner then knows how many
        # rows they select (all of them, for the central entity) and scans accordingly.
        subtree = list(entity.descendants().values_list("pk", flat=True))
        queryset = queryset.filter(**{f"{spec.entity_path}__in": subtree})
    return queryset


def count(
    dimension: str, conditions: Any, *, user: Any = None, entity: Entity | None = None
) -> CountResult:
    """Exact number of rows and of distinct contacts, in one aggregate query."""
    queryset = target_queryset(dimension, conditions, user=user, entity=entity)
    return count_queryset(dimension, queryset)


def count_queryset(dimension: str, queryset: QuerySet) -> CountResult:
    """Exact rows and distinct contacts of a target already built by ``target_queryset``."""
    spec = DIMENSIONS.get(dimension)
    if spec is not None and spec.contact_path == "pk":
        rows = queryset.count()
        return CountResult(rows=rows, contacts=rows)
    totals = queryset.aggregate(rows=Count("pk"), contacts=Count("contact", distinct=True))
    return CountResult(rows=totals["rows"], contacts=totals["contacts"])
