"""Local conditions: the parts of a reference campaign's targeting query that each ordering
entity completes, within what the central team allowed.

A reference campaign stores a list of parameters (``Campaign.local_conditions``)::

    {"name": "product", "label": "Product", "field": "bookings.product",
     "kind": "choice", "choices": ["Cruise", "Safari"], "required": true}
    {"name": "window", "label": "Booking dates", "field": "bookings.booking_date",
     "kind": "date_window", "min": "2026-01-01", "max": "2026-12-31"}
    {"name": "bookings", "label": "Minimum bookings", "field": "bookings",
     "kind": "integer_min", "min": 1, "max": 10}
    {"name": "language", "label": "Language", "field": "language", "kind": "choice",
     "choices": ["fr", "en"]}

``field`` is a path of the targeting query's dimension in the registry: a field
(``language``), a relation's field (``bookings.product``) or, for a minimum count, a
relation (``bookings``). An entity's values become one condition tree, ANDed to the
campaign's query: the conditions on one relation's fields go into one ``count_gte`` (or
``exists``) node, so that "at least 2 bookings of a cruise in June" means the same bookings.
Every problem names the parameter it is about.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from campaigns.targeting.compiler import MAX_COUNT, MAX_TEXT
from campaigns.targeting.registry import (
    CHOICE,
    DATE,
    DIMENSIONS,
    NUMBER,
    TEXT,
    FieldSpec,
    RelationSpec,
)

CHOICE_KIND, DATE_WINDOW, INTEGER_MIN = "choice", "date_window", "integer_min"
KINDS = {
    CHOICE_KIND: "One value from a list",
    DATE_WINDOW: "A date window (from, to)",
    INTEGER_MIN: "A minimum (number of related records, or a number field)",
}
MAX_PARAMETERS = 20
MAX_CHOICES = 100
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class LocalParameter:
    """One condition the local entity completes."""

    name: str
    label: str
    field: str
    kind: str
    choices: tuple[str, ...] = ()
    minimum: Any = None  # a date (date window) or an int (minimum)
    maximum: Any = None
    required: bool = True
    help_text: str = ""

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "field": self.field,
            "kind": self.kind,
            "required": self.required,
        }
        if self.choices:
            data["choices"] = list(self.choices)
        for key, value in (("min", self.minimum), ("max", self.maximum)):
            if value is not None:
                data[key] = value.isoformat() if isinstance(value, dt.date) else value
        if self.help_text:
            data["help_text"] = self.help_text
        return data

    def allowed(self) -> str:
        """What the centre allows, in words (help text of the order form's field)."""
        if self.kind == CHOICE_KIND:
            return "One of: " + ", ".join(self.choices) + "."
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"Between {_show(low)} and {_show(high)}."
        if low is not None:
            return f"From {_show(low)}."
        if high is not None:
            return f"Up to {_show(high)}."
        return ""


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def resolve(dimension: str, path: str) -> tuple[RelationSpec | None, FieldSpec | None]:
    """The relation and field a parameter's path names; ``ValueError`` when the registry
    does not offer it."""
    spec = DIMENSIONS.get(dimension)
    if spec is None:
        raise ValueError(f"unknown dimension “{dimension}”")
    if path in spec.fields:
        return None, spec.fields[path]
    if path in spec.relations:
        return spec.relations[path], None
    head, _, tail = path.partition(".")
    relation = spec.relations.get(head)
    if relation is not None and tail in DIMENSIONS[relation.dimension].fields:
        return relation, DIMENSIONS[relation.dimension].fields[tail]
    raise ValueError(f"“{path}” is not a targetable field of {dimension}")


def field_choices(dimension: str) -> list[tuple[str, str]]:
    """Every path a parameter may name, labelled, for the admin's picker."""
    spec = DIMENSIONS[dimension]
    choices = [(key, f"{field.label} ({key})") for key, field in spec.fields.items()]
    for key, relation in spec.relations.items():
        choices.append((key, f"Number of {relation.label.lower()} ({key})"))
        for name, field in DIMENSIONS[relation.dimension].fields.items():
            if not name.startswith("contact."):
                choices.append((f"{key}.{name}", f"{relation.label}: {field.label} ({key}.{name})"))
    return choices


def _date(raw: Any) -> dt.date | None:
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            return dt.date.fromisoformat(raw.strip())
        except ValueError:
            return None
    return None


def _int(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d{1,12}\s*", raw):
        return int(raw)
    return None


def parse_parameter(raw: Any, dimension: str) -> LocalParameter:
    """One parameter from its JSON form; ``ValidationError`` keyed by the spec's keys."""
    if not isinstance(raw, Mapping):
        raise ValidationError("Each local condition must be an object.")
    errors: dict[str, str] = {}
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors["name"] = (
            "Give a short name: lower-case letters, digits and _, starting with a letter."
        )
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > 100:
        errors["label"] = "Give a label of 1 to 100 characters."
    kind = raw.get("kind")
    if kind not in KINDS:
        errors["kind"] = f"Choose one of: {', '.join(KINDS)}."
    path = raw.get("field")
    field = None
    if not isinstance(path, str):
        errors["field"] = "Choose a field."
    else:
        try:
            _, field = resolve(dimension, path)
        except ValueError as exc:
            errors["field"] = f"{exc}."
    choices: tuple[str, ...] = ()
    minimum = maximum = None
    if "field" not in errors and kind in KINDS:
        if kind == CHOICE_KIND:
            if field is None or field.type not in (TEXT, CHOICE):
                errors["field"] = "A list of values applies to a text or choice field."
            raw_choices = raw.get("choices")
            if (
                not isinstance(raw_choices, list | tuple)
                or not raw_choices
                or len(raw_choices) > MAX_CHOICES
                or not all(isinstance(c, str) and c.strip() for c in raw_choices)
            ):
                errors["choices"] = f"Give 1 to {MAX_CHOICES} allowed values."
            else:
                choices = tuple(dict.fromkeys(c.strip() for c in raw_choices))
                if any(len(c) > MAX_TEXT for c in choices):
                    errors["choices"] = f"Each value has at most {MAX_TEXT} characters."
                elif field is not None and field.type == CHOICE:
                    wrong = [c for c in choices if c not in field.choices]
                    if wrong:
                        errors["choices"] = (
                            f"Not a value of {field.label}: {', '.join(wrong)}; "
                            f"allowed: {', '.join(field.choices)}."
                        )
        elif kind == DATE_WINDOW:
            if field is None or field.type != DATE:
                errors["field"] = "A date window applies to a date field."
            minimum, maximum = _date(raw.get("min")), _date(raw.get("max"))
            for key, parsed in (("min", minimum), ("max", maximum)):
                if raw.get(key) not in (None, "") and parsed is None:
                    errors[key] = "Give a date as YYYY-MM-DD."
        else:
            if field is not None and field.type != NUMBER:
                errors["field"] = (
                    "A minimum applies to a relation (its number of records) or a number field."
                )
            minimum, maximum = _int(raw.get("min")), _int(raw.get("max"))
            lowest = 1 if field is None else -MAX_COUNT
            for key, parsed in (("min", minimum), ("max", maximum)):
                if raw.get(key) not in (None, "") and (
                    parsed is None or not lowest <= parsed <= MAX_COUNT
                ):
                    errors[key] = f"Give a whole number between {lowest} and {MAX_COUNT}."
            if field is None and minimum is None and "min" not in errors:
                minimum = 1
        if (
            minimum is not None
            and maximum is not None
            and "min" not in errors
            and "max" not in errors
            and minimum > maximum
        ):
            errors["max"] = "The highest allowed value must not come before the lowest."
    help_text = raw.get("help_text") or ""
    if not isinstance(help_text, str) or len(help_text) > 500:
        errors["help_text"] = "Give a help text of at most 500 characters."
    required = raw.get("required", True)
    if not isinstance(required, bool):
        errors["required"] = "Give true or false."
    if errors:
        raise ValidationError(errors)
    return LocalParameter(
        name=name,
        label=label.strip(),
        field=path,
        kind=kind,
        choices=choices,
        minimum=minimum,
        maximum=maximum,
        required=required,
        help_text=help_text,
    )


def parse_spec(raw: Any, dimension: str) -> list[LocalParameter]:
    """The parameters of a reference campaign; ``ValidationError`` whose messages name
    each parameter and key at fault ("Local condition 2 (Product), choices: …")."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PARAMETERS:
        raise ValidationError(f"Give a list of at most {MAX_PARAMETERS} local conditions.")
    parameters: list[LocalParameter] = []
    problems: list[str] = []
    for index, item in enumerate(raw, start=1):
        label = item.get("label") if isinstance(item, Mapping) else None
        where = f"Local condition {index}" + (f" ({label})" if isinstance(label, str) else "")
        try:
            parameters.append(parse_parameter(item, dimension))
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                problems += [
                    f"{where}, {key}: {' '.join(messages)}"
                    for key, messages in exc.message_dict.items()
                ]
            else:
                problems += [f"{where}: {message}" for message in exc.messages]
    names = [p.name for p in parameters]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"Two local conditions are named “{name}”: names must be unique.")
    if problems:
        raise ValidationError(problems)
    return parameters


def stored_parameters(raw: Any, dimension: str) -> list[LocalParameter]:
    """The parameters as stored on a campaign (validated when saved); a spec that no longer
    fits the registry reads as none rather than failing a page."""
    try:
        return parse_spec(raw, dimension)
    except ValidationError:
        return []


# --------------------------------------------------------------------------------------------
# Values an entity gives
# --------------------------------------------------------------------------------------------


def clean_value(parameter: LocalParameter, raw: Any) -> Any:
    """One value, checked against what the centre allowed: ``None`` when empty (and not
    required), else its JSON form. ``ValidationError`` names the parameter."""
    label = parameter.label
    empty = raw in (None, "", [], ()) or (
        isinstance(raw, list | tuple) and all(item in (None, "") for item in raw)
    )
    if empty:
        if parameter.required:
            raise ValidationError(f"{label}: this value is required.")
        return None
    if parameter.kind == CHOICE_KIND:
        if not isinstance(raw, str) or raw not in parameter.choices:
            shown = str(raw)[:40]
            raise ValidationError(
                f"{label}: “{shown}” is not allowed; choose one of {', '.join(parameter.choices)}."
            )
        return raw
    if parameter.kind == DATE_WINDOW:
        if isinstance(raw, Mapping):
            raw = [raw.get("from"), raw.get("to")]
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise ValidationError(f"{label}: give a start and an end date.")
        start, end = _date(raw[0]), _date(raw[1])
        if start is None or end is None:
            raise ValidationError(f"{label}: give both dates as YYYY-MM-DD.")
        if start > end:
            raise ValidationError(f"{label}: the start must not come after the end.")
        if parameter.minimum is not None and start < parameter.minimum:
            raise ValidationError(
                f"{label}: the window may not start before {parameter.minimum.isoformat()}."
            )
        if parameter.maximum is not None and end > parameter.maximum:
            raise ValidationError(
                f"{label}: the window may not end after {parameter.maximum.isoformat()}."
            )
        return [start.isoformat(), end.isoformat()]
    number = _int(raw)
    if number is None:
        raise ValidationError(f"{label}: give a whole number.")
    if parameter.minimum is not None and number < parameter.minimum:
        raise ValidationError(f"{label}: give at least {parameter.minimum}.")
    if parameter.maximum is not None and number > parameter.maximum:
        raise ValidationError(f"{label}: give at most {parameter.maximum}.")
    return number


def clean_values(parameters: list[LocalParameter], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter's value; ``ValidationError`` keyed by parameter name, each message
    naming its label. Values for names the centre did not define are refused too."""
    raw = dict(raw or {})
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for parameter in parameters:
        try:
            value = clean_value(parameter, raw.pop(parameter.name, None))
        except ValidationError as exc:
            errors[parameter.name] = exc.messages
            continue
        if value is not None:
            values[parameter.name] = value
    for name in sorted(raw)[:5]:
        errors.setdefault("__all__", []).append(
            f"“{str(name)[:40]}” is not a condition of this campaign."
        )
    if errors:
        raise ValidationError(errors)
    return values


def value_words(parameter: LocalParameter, value: Any) -> str:
    """A stored value as people read it."""
    if value in (None, "", []):
        return "—"
    if parameter.kind == DATE_WINDOW and isinstance(value, list | tuple) and len(value) == 2:
        return f"{value[0]} to {value[1]}"
    if parameter.kind == INTEGER_MIN:
        return f"at least {value}"
    return str(value)


def value_rows(parameters: list[LocalParameter], values: Mapping[str, Any]) -> list[tuple]:
    """(label, value in words) for each parameter, for the order and approval pages."""
    return [(p.label, value_words(p, (values or {}).get(p.name))) for p in parameters]


# --------------------------------------------------------------------------------------------
# The condition tree
# --------------------------------------------------------------------------------------------


def _field_node(path: str, parameter: LocalParameter, value: Any) -> dict[str, Any]:
    if parameter.kind == CHOICE_KIND:
        return {"field": path, "op": "eq", "value": value}
    if parameter.kind == DATE_WINDOW:
        return {"field": path, "op": "between", "value": list(value)}
    return {"field": path, "op": "gte", "value": value}


def condition_for(
    parameters: list[LocalParameter], values: Mapping[str, Any], dimension: str
) -> dict[str, Any]:
    """The local values as one condition tree of ``dimension`` (``{}`` when none is given).

    Each value is checked again against its parameter: a value stored before the centre
    changed its conditions, and no longer allowed, is left out rather than failing."""
    nodes: list[dict[str, Any]] = []
    by_relation: dict[str, dict[str, Any]] = {}
    for parameter in parameters:
        try:
            value = clean_value(parameter, (values or {}).get(parameter.name))
        except ValidationError:
            continue
        if value is None:
            continue
        relation, field = resolve(dimension, parameter.field)
        if relation is None:
            nodes.append(_field_node(parameter.field, parameter, value))
            continue
        group = by_relation.setdefault(relation.path, {"where": [], "minimum": None})
        if field is None:
            group["minimum"] = max(group["minimum"] or 0, int(value))
        else:
            tail = parameter.field.partition(".")[2]
            group["where"].append(_field_node(tail, parameter, value))
    for name, group in by_relation.items():
        where = group["where"]
        node: dict[str, Any] = {"relation": name}
        if group["minimum"]:
            node.update(op="count_gte", value=group["minimum"])
        else:
            node["op"] = "exists"
        if where:
            node["where"] = where[0] if len(where) == 1 else {"and": where}
        nodes.append(node)
    if not nodes:
        return {}
    return nodes[0] if len(nodes) == 1 else {"and": nodes}


def with_local(conditions: Any, local: Mapping[str, Any]) -> Any:
    """The campaign's conditions ANDed with the local ones."""
    if not local:
        return conditions or {}
    if not conditions:
        return dict(local)
    return {"and": [conditions, dict(local)]}


# --------------------------------------------------------------------------------------------
# A campaign's targeting step
# --------------------------------------------------------------------------------------------


def targeting_step(campaign: Any) -> Any:
    """The query step the local conditions complete: the campaign's first query step in
    workflow order (top to bottom, left to right), or ``None``."""
    return campaign.activities.filter(type="query").first()


def step_dimension(step: Any) -> str:
    return str((step.settings or {}).get("dimension") or "contact") if step else "contact"


def campaign_parameters(campaign: Any) -> list[LocalParameter]:
    """The local conditions a reference campaign defines, as parameters."""
    if not campaign.local_conditions:
        return []
    return stored_parameters(campaign.local_conditions, step_dimension(targeting_step(campaign)))


def campaign_target(campaign: Any) -> tuple[str, Any]:
    """(dimension, conditions) of what the campaign targets before any local value: its
    targeting query step, else its first saved-audience step, else every contact."""
    from campaigns.models import SavedQuery

    step = targeting_step(campaign) or campaign.activities.filter(type="read_audience").first()
    if step is None:
        return "contact", {}
    if step.type == "read_audience":
        query = SavedQuery.objects.filter(pk=(step.settings or {}).get("saved_query")).first()
        return (query.dimension, query.conditions) if query else ("contact", {})
    return step_dimension(step), (step.settings or {}).get("conditions") or {}
