"""A condition tree said in words, for the people who read it rather than write JSON.

``condition_words({"and": [{"field": "email_consent", "op": "eq", "value": True}, …]})``
→ "Email consent is yes and has bookings where Booking date is in the last 365 days".
Labels come from the targeting registry; a node it does not know is said plainly ("an
unknown condition") rather than shown as JSON. The one renderer used by the portal's pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from campaigns.targeting.registry import BOOL, DIMENSIONS

OPERATOR_WORDS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
    "contains": "contains",
    "starts_with": "starts with",
    "lt": "is less than",
    "lte": "is at most",
    "gt": "is more than",
    "gte": "is at least",
    "between": "is between",
    "in_last_days": "is in the last",
    "in_next_days": "is in the next",
    "more_than_days_ago": "is more than",
}
DAYS = {"in_last_days", "in_next_days", "more_than_days_ago"}
NO_VALUE = {"is_empty", "is_not_empty"}


def condition_words(tree: Any, dimension: str = "contact") -> str:
    """The whole tree in one sentence ("everyone" when it has no condition)."""
    if not tree:
        return "everyone"
    return _node(tree, dimension if dimension in DIMENSIONS else "contact", top=True)


def _node(node: Any, dimension: str, top: bool = False) -> str:
    if not isinstance(node, Mapping):
        return "an unknown condition"
    for key, joiner in (("and", " and "), ("or", " or ")):
        if key in node:
            items = node[key] if isinstance(node[key], list) else []
            if not items:
                return "everyone" if key == "and" else "no one"
            said = joiner.join(_node(item, dimension) for item in items)
            return said if top or len(items) == 1 else f"({said})"
    if "not" in node:
        return f"not ({_node(node['not'], dimension, top=True)})"
    if "relation" in node:
        return _relation(node, dimension)
    if "field" in node:
        return _field(node, dimension)
    return "an unknown condition"


def _relation(node: Mapping, dimension: str) -> str:
    spec = DIMENSIONS[dimension].relations.get(str(node.get("relation")))
    label = (spec.label if spec else str(node.get("relation"))).lower()
    where = node.get("where")
    condition = f" where {_node(where, spec.dimension, top=True)}" if where and spec else ""
    op = node.get("op")
    if op == "not_exists":
        return f"has no {label}{condition}"
    if op == "count_gte":
        return f"has at least {_value(node.get('value'))} {label}{condition}"
    return f"has {label}{condition}"


def _field(node: Mapping, dimension: str) -> str:
    spec = DIMENSIONS[dimension].fields.get(str(node.get("field")))
    label = spec.label if spec else str(node.get("field"))
    op = str(node.get("op"))
    verb = OPERATOR_WORDS.get(op, op.replace("_", " "))
    if op in NO_VALUE:
        return f"{label} {verb}"
    value = node.get("value")
    if op in DAYS:
        suffix = " days ago" if op == "more_than_days_ago" else " days"
        return f"{label} {verb} {_value(value)}{suffix}"
    if op == "between" and isinstance(value, list) and len(value) == 2:
        return f"{label} {verb} {_value(value[0])} and {_value(value[1])}"
    if spec is not None and spec.type == BOOL:
        return f"{label} {verb} {'yes' if value else 'no'}"
    return f"{label} {verb} {_value(value)}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value) or "nothing"
    if value is None or value == "":
        return "“”"
    return f"“{value}”" if isinstance(value, str) else str(value)
