"""Condition trees (JSON) validated against the registry and compiled to Django ``Q`` objects.

Grammar::

    {}                                             everything
    {"and": [node, …]}  {"or": [node, …]}  {"not": node}
    {"field": "email", "op": "contains", "value": "@example.com"}
    {"relation": "bookings", "op": "exists", "where": node}
    {"relation": "bookings", "op": "count_gte", "value": 2, "where": node}

Every problem is reported with the path of its node (``and[1].value``); nothing becomes SQL
text: the ORM builds the query.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from campaigns.targeting.registry import (
    BOOL,
    CHOICE,
    DATE,
    DATETIME,
    DIMENSIONS,
    NUMBER,
    OPERATORS,
    RELATION_OPERATORS,
    TEXT,
    FieldSpec,
)
from portal.validation import InputError, load_json

MAX_DEPTH = 12
MAX_LIST = 1000
MAX_TEXT = 255
# Bounds of numbers in conditions: far beyond any real amount or count, well inside what the
# database and Python's dates hold.
MAX_NUMBER = Decimal(10**12)
MAX_COUNT = 1_000_000


class TargetingError(ValueError):
    """A condition tree that does not fit the registry; ``problems`` are (path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path or 'conditions'}: {msg}" for path, msg in problems))

    @property
    def messages(self) -> list[str]:
        return [f"{path or 'conditions'}: {message}" for path, message in self.problems]

    def as_json(self) -> list[dict[str, str]]:
        return [{"path": path or "conditions", "message": msg} for path, msg in self.problems]


class _Compiler:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> Q:
        self.problems.append((path, message))
        return Q()

    def node(self, dimension: str, node: Any, path: str, depth: int = 0) -> Q:
        if depth > MAX_DEPTH:
            return self.fail(path, f"nesting deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            return self.fail(path, "each condition must be an object")
        if not node:
            return Q()
        groups = [key for key in ("and", "or", "not") if key in node]
        if groups:
            if len(node) != 1:
                return self.fail(path, "a group has exactly one key: and, or or not")
            key = groups[0]
            here = f"{path}.{key}" if path else key
            if key == "not":
                return ~self.node(dimension, node["not"], here, depth + 1)
            children = node[key]
            if not isinstance(children, list) or not children:
                return self.fail(here, "give a non-empty list of conditions")
            compiled = [
                self.node(dimension, child, f"{here}[{index}]", depth + 1)
                for index, child in enumerate(children)
            ]
            result = compiled[0]
            for item in compiled[1:]:
                result = (result & item) if key == "and" else (result | item)
            return result
        for key in ("relation", "field"):
            if key in node and not isinstance(node[key], str):
                return self.fail(f"{path}.{key}" if path else key, "give a name (text)")
        if "op" in node and not isinstance(node["op"], str):
            return self.fail(f"{path}.op" if path else "op", "give an operator name (text)")
        if "relation" in node:
            return self.relation(dimension, node, path, depth)
        if "field" in node:
            return self.condition(dimension, node, path)
        return self.fail(path, "expected and / or / not, a field condition or a relation")

    def condition(self, dimension: str, node: dict, path: str) -> Q:
        unknown = set(node) - {"field", "op", "value"}
        if unknown:
            return self.fail(path, f"unknown key(s): {', '.join(sorted(unknown))}")
        spec = DIMENSIONS[dimension].fields.get(node["field"])
        if spec is None:
            return self.fail(
                f"{path}.field" if path else "field",
                f"unknown field “{node['field']}” for {dimension}; allowed: "
                + ", ".join(sorted(DIMENSIONS[dimension].fields)),
            )
        op = node.get("op")
        op_path = f"{path}.op" if path else "op"
        if op not in OPERATORS[spec.type]:
            return self.fail(
                op_path,
                f"operator “{op}” does not apply to {spec.type} field “{node['field']}”; "
                f"use one of {', '.join(OPERATORS[spec.type])}",
            )
        value_path = f"{path}.value" if path else "value"
        return self.lookup(spec, op, node.get("value"), value_path)

    def lookup(self, spec: FieldSpec, op: str, raw: Any, path: str) -> Q:
        field = spec.path
        if op in ("is_empty", "is_not_empty"):
            empty = Q(**{f"{field}__isnull": True})
            if spec.type in (TEXT, CHOICE):
                empty |= Q(**{field: ""})
            return empty if op == "is_empty" else ~empty
        if op in ("in_last_days", "in_next_days", "more_than_days_ago"):
            days = self.days(raw, path)
            if days is None:
                return Q()
            today = timezone.localdate()
            if spec.type == DATETIME:
                now = timezone.now()
                start, end = now - dt.timedelta(days=days), now + dt.timedelta(days=days)
            else:
                start, end = today - dt.timedelta(days=days), today + dt.timedelta(days=days)
            if op == "in_last_days":
                return Q(
                    **{
                        f"{field}__gte": start,
                        f"{field}__lte": now if spec.type == DATETIME else today,
                    }
                )
            if op == "in_next_days":
                return Q(
                    **{
                        f"{field}__gte": now if spec.type == DATETIME else today,
                        f"{field}__lte": end,
                    }
                )
            return Q(**{f"{field}__lt": start})
        if op in ("in", "not_in"):
            if not isinstance(raw, list) or not raw or len(raw) > MAX_LIST:
                return self.fail(path, f"give a list of 1 to {MAX_LIST} values")
            values = [self.value(spec, item, f"{path}[{i}]") for i, item in enumerate(raw)]
            q = Q(**{f"{field}__in": values})
            return q if op == "in" else ~q
        if op == "between":
            if not isinstance(raw, list) or len(raw) != 2:
                return self.fail(path, "give [lowest, highest]")
            low = self.value(spec, raw[0], f"{path}[0]")
            high = self.value(spec, raw[1], f"{path}[1]")
            if low is not None and high is not None and low > high:
                return self.fail(path, "the lowest value comes first")
            return Q(**{f"{field}__range": (low, high)})
        value = self.value(spec, raw, path)
        if value is None:
            return Q()
        suffix = {
            "eq": "",
            "ne": "",
            "contains": "__icontains",
            "starts_with": "__istartswith",
            "lt": "__lt",
            "lte": "__lte",
            "gt": "__gt",
            "gte": "__gte",
        }[op]
        if spec.type == TEXT and op in ("eq", "ne"):
            suffix = "__iexact"
        q = Q(**{f"{field}{suffix}": value})
        return ~q if op == "ne" else q

    def days(self, raw: Any, path: str) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 36500:
            self.fail(path, "give a whole number of days between 0 and 36500")
            return None
        return raw

    def value(self, spec: FieldSpec, raw: Any, path: str) -> Any:
        kind = spec.type
        if kind == BOOL:
            if not isinstance(raw, bool):
                self.fail(path, "give true or false")
                return None
            return raw
        if kind in (TEXT, CHOICE):
            if not isinstance(raw, str) or len(raw) > MAX_TEXT:
                self.fail(path, f"give a text of at most {MAX_TEXT} characters")
                return None
            if kind == CHOICE and raw not in spec.choices:
                self.fail(path, f"“{raw}” is not one of {', '.join(spec.choices)}")
                return None
            return raw
        if kind == NUMBER:
            if isinstance(raw, bool):
                self.fail(path, "give a number")
                return None
            try:
                number = Decimal(str(raw))
            except (InvalidOperation, ValueError):
                number = None
            if number is None or not number.is_finite() or abs(number) > MAX_NUMBER:
                self.fail(path, f"give a number between -{MAX_NUMBER} and {MAX_NUMBER}")
                return None
            return number
        if kind in (DATE, DATETIME):
            parsed = None
            if isinstance(raw, str):
                try:  # well-formed but impossible (2026-13-45) raises ValueError
                    parsed = (
                        parse_date(raw)
                        if kind == DATE
                        else (parse_datetime(raw) or parse_date(raw))
                    )
                except ValueError:
                    self.fail(path, f"“{raw[:40]}” is not a real date")
                    return None
            if parsed is None:
                self.fail(path, "give a date as YYYY-MM-DD")
                return None
            if isinstance(parsed, dt.datetime) and timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed)
            elif kind == DATETIME and not isinstance(parsed, dt.datetime):
                parsed = timezone.make_aware(dt.datetime.combine(parsed, dt.time.min))
            return parsed
        self.fail(path, f"unsupported type {kind}")  # pragma: no cover - registry is closed
        return None

    def relation(self, dimension: str, node: dict, path: str, depth: int) -> Q:
        unknown = set(node) - {"relation", "op", "value", "where"}
        if unknown:
            return self.fail(path, f"unknown key(s): {', '.join(sorted(unknown))}")
        spec = DIMENSIONS[dimension].relations.get(node["relation"])
        if spec is None:
            allowed = ", ".join(sorted(DIMENSIONS[dimension].relations)) or "none"
            return self.fail(
                f"{path}.relation" if path else "relation",
                f"unknown relation “{node['relation']}” for {dimension}; allowed: {allowed}",
            )
        op = node.get("op")
        if op not in RELATION_OPERATORS:
            return self.fail(
                f"{path}.op" if path else "op", f"use one of {', '.join(RELATION_OPERATORS)}"
            )
        where_path = f"{path}.where" if path else "where"
        where = self.node(spec.dimension, node.get("where") or {}, where_path, depth + 1)
        related = (
            DIMENSIONS[spec.dimension]
            .model.objects.filter(where)
            .filter(**{spec.back: OuterRef("pk")})
        )
        if op in ("exists", "not_exists"):
            q = Q(Exists(related))
            return q if op == "exists" else ~q
        value_path = f"{path}.value" if path else "value"
        minimum = node.get("value")
        if (isinstance(minimum, bool) or not isinstance(minimum, int)
                or not 1 <= minimum <= MAX_COUNT):  # fmt: skip
            return self.fail(
                value_path, f"give a whole number of at least 1 and at most {MAX_COUNT}"
            )
        counted = related.order_by().values(spec.back).annotate(total=Count("pk")).values("total")
        return Q(GreaterThanOrEqual(Coalesce(Subquery(counted), 0), minimum))


def compile_conditions(dimension: str, conditions: Any) -> Q:
    """Validate a condition tree for a dimension and return its ``Q``; raises
    ``TargetingError`` listing every problem with its path."""
    if not isinstance(dimension, str) or dimension not in DIMENSIONS:
        raise TargetingError([("dimension", f"unknown dimension “{dimension}”")])
    compiler = _Compiler()
    q = compiler.node(dimension, conditions if conditions is not None else {}, "")
    if compiler.problems:
        raise TargetingError(compiler.problems)
    return q


def parse_conditions(raw: Any, path: str = "conditions") -> Any:
    """A condition tree given as JSON text (or already parsed): parsed with bounded depth;
    malformed JSON raises ``TargetingError`` with ``path``."""
    if not isinstance(raw, str | bytes):
        return raw if raw is not None else {}
    try:
        return load_json(raw or "{}", path=path)
    except InputError as exc:
        raise TargetingError([(path, exc.message)]) from None
