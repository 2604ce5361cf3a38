"""Typed settings: one Django form per activity type, the only place their rules live.

A settings form is bound either to a POST (the canvas side panel, the portal's child-step
page) or to a settings object as stored on the activity (``SettingsForm(settings=…)``: the
engine, the canvas save, the admin and copies validate exactly what they store). Its
``settings()`` is the normalised object to store. ``local_fields`` names the settings a local
entity may change in a child campaign when the parent allows it; the others are shown
disabled and keep the parent's value whatever is posted.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime, parse_time

from campaigns import targeting
from campaigns.choices import Channel
from campaigns.targeting.registry import DIMENSIONS
from campaigns.targeting.worktables import DEFAULT_PRIORITY, PRIORITY_FIELDS
from portal import validation
from portal.models import Entity

ENTITY_PATHS = {"contact": {"entity"}, "booking": {"contact__entity", "store__entity"},
                "subscription": {"contact__entity"}}  # fmt: skip
MAX_LIMIT = 100_000_000
MAX_WAIT_DAYS = 3650  # ten years: a wait or schedule beyond that is a typing error
MAX_TIMES = 100_000
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EVERY = ("hour", "day", "week")
EMPTY = (None, "", [], {})
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


def _parse(parser: Any, value: Any) -> Any:
    """A date, time or datetime parsed from text, or None when it is not one."""
    try:
        return parser(str(value if value is not None else ""))
    except ValueError:
        return None


def _whole(value: Any, name: str, low: int, high: int) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f"{name} must be a whole number from {low} to {high}"]
    return []


def _conditions_problems(dimension: str, conditions: Any, where: str = "conditions") -> list[str]:
    try:
        targeting.compile_conditions(dimension, conditions)
    except targeting.TargetingError as exc:
        return [f"{where}: {message}" for message in exc.messages]
    return []


def _json(value: Any, name: str) -> Any:
    """A value posted as JSON text (the query builder's hidden field) or given as data."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return validation.load_json(value)
    except validation.InputError as exc:
        raise ValidationError(f"{name}: {exc.message}") from None


# Fields --------------------------------------------------------------------------------------


class WholeNumberField(forms.Field):
    """A whole number in a range; the message names the setting. Given as data, it must be
    a JSON number (never a boolean or text)."""

    widget = forms.NumberInput

    def __init__(self, *, low: int = 0, high: int = MAX_LIMIT, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        self.low, self.high = low, high
        super().__init__(**kwargs)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        return {**super().widget_attrs(widget), "min": self.low, "max": self.high, "step": 1}

    def to_python(self, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = value.strip() if isinstance(value, str) else ""
        digits = text[1:] if text[:1] in "+-" else text
        if digits.isascii() and digits.isdigit() and len(digits) <= 30:
            return int(text)
        return value

    def validate(self, value: Any) -> None:
        super().validate(value)
        if problems := _whole(value, self.setting, self.low, self.high):
            raise ValidationError(problems)

    setting = "value"  # set by the form to the field's name


class ConditionsField(forms.Field):
    """A condition tree, edited with the query builder (which writes JSON in a hidden
    input); read in words beside it. Checked against the dimension by the form."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value or {})

    def to_python(self, value: Any) -> Any:
        value = _json(value, "conditions")
        if value is not None and not isinstance(value, dict):
            raise ValidationError("conditions must be a condition or a group of conditions")
        return value or {}


class RowsWidget(forms.Widget):
    """A table of rows, one input per column, and one empty row to add another; posted as
    ``<name>-<row>-<column>``. Columns whose name ends with ``_json`` are hidden inputs."""

    template_name = "campaigns/widgets/rows.html"

    def __init__(self, columns: list[tuple[str, str]], attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.columns = columns

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        rows = value if isinstance(value, list) else []
        table = []
        for index, row in enumerate([*rows, {}]):
            cells = []
            for key, label in self.columns:
                raw = row.get(key) if isinstance(row, dict) else None
                if isinstance(raw, (dict, list)):
                    raw = json.dumps(raw)
                cells.append(
                    {
                        "name": f"{name}-{index}-{key}",
                        "label": label,
                        "value": "" if raw is None else raw,
                        "hidden": key in ("conditions", "where"),
                    }
                )
            table.append(cells)
        context["widget"].update({"columns": self.columns, "rows": table})
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        rows = []
        for index in range(200):
            row = {key: data.get(f"{name}-{index}-{key}", "") for key, _ in self.columns}
            if not any(f"{name}-{index}-{key}" in data for key, _ in self.columns):
                break
            if any(str(v).strip() for k, v in row.items() if k not in ("conditions", "where")):
                rows.append(row)
        return rows

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return f"{name}-0-{self.columns[0][0]}" not in data


class LimitsWidget(forms.Widget):
    """Distribution limits as a table: one number per local entity (empty: the default)."""

    template_name = "campaigns/widgets/limits.html"

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        limits = value if isinstance(value, dict) else {}
        entities = list(Entity.objects.filter(parent__isnull=False).order_by("code")[:500])
        context["widget"]["rows"] = [
            {"code": e.code, "name": e.name, "value": limits.get(e.code, "")} for e in entities
        ]
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        prefix = f"{name}-"
        return {
            key[len(prefix) :]: value
            for key, value in data.items()
            if key.startswith(prefix) and str(value).strip()
        }


class LimitsField(forms.Field):
    widget = LimitsWidget

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise ValidationError("limits must map entity codes to numbers")
        return {
            code: int(v) if isinstance(v, str) and v.strip().isdigit() else v
            for code, v in value.items()
        }

    def validate(self, value: Any) -> None:
        problems = []
        known = set(Entity.objects.filter(code__in=list(value)).values_list("code", flat=True))
        if unknown := set(value) - known:
            problems.append(f"unknown entity code(s) in limits: {', '.join(sorted(unknown))}")
        for code, limit in value.items():
            problems += _whole(limit, f"limits.{code}", 0, MAX_LIMIT)
        if problems:
            raise ValidationError(problems)


class ObjectIdField(forms.TypedChoiceField):
    """The id of a row (a saved audience, a typology), offered as a list of the first ones
    but accepted for any existing row: validity is asked of the database, not the list."""

    def __init__(self, *, model_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("coerce", int)
        super().__init__(**kwargs)
        self.model_path = model_path

    def _model(self) -> Any:
        from django.apps import apps

        return apps.get_model(self.model_path)

    def offer(self, empty: str) -> None:
        rows = self._model().objects.order_by("-pk").values_list("pk", "name")[:500]
        self.choices = [("", empty)] + [(str(pk), name) for pk, name in rows]

    def valid_value(self, value: Any) -> bool:
        text = str(value)
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= validation.MAX_ID:
            return False
        return self._model().objects.filter(pk=int(text)).exists()


class ListField(forms.Field):
    """A list of words: comma-separated in a text box, or a JSON list as data."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(map(str, value)) if isinstance(value, list) else value

    def to_python(self, value: Any) -> Any:
        if value in (None, ""):
            return []
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


# Forms ---------------------------------------------------------------------------------------


class SettingsForm(forms.Form):
    """Base of the typed settings forms (see the module's docstring)."""

    type_name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    inputs: ClassVar[str] = "one"
    outputs_doc: ClassVar[str] = "out"
    example: ClassVar[dict[str, Any]] = {}
    local_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        data: Any = None,
        *,
        settings: dict[str, Any] | None = None,
        initial: dict[str, Any] | None = None,
        campaign: Any = None,
        editable: frozenset[str] | None = None,
        **kwargs: Any,
    ) -> None:
        base = settings if settings is not None else initial
        self.stored = dict(base) if isinstance(base, dict) else {}
        # Bound to the stored settings themselves when no POST is given.
        self.raw = self.stored if data is None and settings is not None else None
        super().__init__(data if data is not None else ({} if self.raw is not None else None),
                         initial=self.stored, **kwargs)  # fmt: skip
        self.campaign = campaign
        for name, field in self.fields.items():
            if isinstance(field, WholeNumberField):
                field.setting = name
            if editable is not None and name not in editable:
                field.disabled = True

    def _widget_data_value(self, widget: forms.Widget, html_name: str) -> Any:
        if self.raw is not None:
            return self.raw.get(html_name[len(self.prefix) + 1 :] if self.prefix else html_name)
        return super()._widget_data_value(widget, html_name)

    def settings(self) -> dict[str, Any]:
        """The settings to store: the form's values (empty ones left out); any key the form
        does not know, or that it shows disabled (the parent's), kept exactly as it was."""
        kept = {
            k: v for k, v in self.stored.items() if k not in self.fields or self.fields[k].disabled
        }
        values = {
            k: v
            for k, v in self.cleaned_data.items()
            if v not in EMPTY and not self.fields[k].disabled
        }
        return {**kept, **values}

    def problems(self) -> list[str]:
        """Every error as one sentence naming its setting."""
        found = []
        for name, errors in self.errors.items():
            for error in errors:
                text = str(error)
                found.append(text if name == "__all__" or text.startswith(name) else
                             f"{name}: {text}")  # fmt: skip
        return found

    def _post_clean(self) -> None:
        # Stored numbers must be JSON numbers: "3" would pass the field and break a run.
        if self.raw is None:
            return
        for name, field in self.fields.items():
            value = self.raw.get(name)
            wrong = isinstance(value, bool) or not isinstance(value, int)
            known = name in self.errors
            if (
                isinstance(field, WholeNumberField)
                and value not in (None, "")
                and wrong
                and not known
            ):
                self.add_error(name, f"{name} must be a whole number")


class NoSettingsForm(SettingsForm):
    pass


class QueryForm(SettingsForm):
    type_name = "query"
    summary = "Builds an audience from conditions on contacts or their records."
    inputs = "none, or one from a scheduler or a wait that starts it"
    example = {"dimension": "contact", "conditions": {"field": "email_consent", "op": "eq",
               "value": True}}  # fmt: skip
    local_fields = frozenset({"conditions"})

    dimension = forms.ChoiceField(
        required=False,
        choices=[(name, name) for name in DIMENSIONS],
        error_messages={"invalid_choice": f"dimension must be one of {', '.join(DIMENSIONS)}"},
        help_text="What a row is: a contact, or one of its records (booking, subscription).",
    )
    conditions = ConditionsField(
        help_text="Who is targeted, within the campaign's entity; empty: everyone there."
    )
    entity_path = forms.ChoiceField(
        required=False,
        label="Entity path",
        choices=[("", "—"), *sorted({(p, p) for paths in ENTITY_PATHS.values() for p in paths})],
        help_text="Which entity a row belongs to, for distribution.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "dimension" in self.errors:
            return cleaned
        dimension = cleaned.get("dimension") or "contact"
        if "conditions" in cleaned:
            for problem in _conditions_problems(dimension, cleaned["conditions"]):
                self.add_error("conditions", problem)
        path = cleaned.get("entity_path")
        if path and path not in ENTITY_PATHS.get(dimension, ()):
            self.add_error(
                "entity_path", f"entity_path must be one of {sorted(ENTITY_PATHS[dimension])}"
            )
        return cleaned


class ReadAudienceForm(SettingsForm):
    type_name = "read_audience"
    summary = "Reads a saved audience (a saved query) as the population."
    inputs = "none, or one from a scheduler or a wait that starts it"
    example = {"saved_query": 1}
    local_fields = frozenset({"saved_query"})
    MESSAGE = "saved_query must be the id of a saved audience"

    saved_query = ObjectIdField(
        model_path="campaigns.SavedQuery",
        label="Saved audience",
        error_messages={"required": MESSAGE, "invalid_choice": MESSAGE},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["saved_query"].offer("—")


class UnionForm(NoSettingsForm):
    type_name = "union"
    summary = "Everyone in any input, once per contact and record."
    inputs = "two or more"


class IntersectionForm(NoSettingsForm):
    type_name = "intersection"
    summary = "The rows of the first input whose contact is in every other input."
    inputs = "two or more"


class ExclusionForm(NoSettingsForm):
    type_name = "exclusion"
    summary = (
        "The first input without the contacts of the others: the kept rows on ``out`` "
        "(shown as “kept”), the taken-out rows on ``removed``."
    )
    inputs = "two or more (the first is the population, the others are taken out of it)"
    outputs_doc = "out (kept), removed"


class DeduplicationForm(NoSettingsForm):
    type_name = "deduplication"
    summary = "One row per contact (the first one), e.g. after a booking-level query."


class EndForm(NoSettingsForm):
    type_name = "end"
    summary = "Marks the end of a branch: the incoming populations are the result."
    inputs = "one or more"
    outputs_doc = "none"


BRANCH_COLUMNS = [("label", "Label"), ("percent", "Percent"), ("limit", "Limit"),
                  ("conditions", "Conditions")]  # fmt: skip


class SplitForm(SettingsForm):
    type_name = "split"
    summary = (
        "Branches by conditions on the contact, or by percentages (a stable pseudo-random "
        "bucket per contact), each optionally limited; a row goes to the first branch it "
        "fits. ``remainder`` names an output for the rows no branch took."
    )
    outputs_doc = "one per branch label, and the remainder's label when given"
    example = {"branches": [{"label": "test", "percent": 10}, {"label": "french", "conditions":
               {"field": "language", "op": "eq", "value": "fr"}, "limit": 500}],
               "remainder": "others"}  # fmt: skip
    local_fields = frozenset({"branches"})

    branches = forms.Field(
        required=False,
        widget=RowsWidget(BRANCH_COLUMNS),
        help_text="Each branch: a label, and either a percentage or conditions; an optional limit.",
    )
    remainder = forms.CharField(
        required=False, max_length=64, help_text="The output for rows no branch took."
    )

    def clean_branches(self) -> list[dict[str, Any]]:
        branches = self.cleaned_data.get("branches")
        if not isinstance(branches, list) or not branches:
            raise ValidationError("branches must be a non-empty list")
        problems, labels, total, clean = [], set(), 0, []
        for index, branch in enumerate(branches):
            where = f"branches[{index}]"
            if not isinstance(branch, dict):
                problems.append(f"{where} must be an object")
                continue
            branch = dict(branch)
            for key in ("percent", "limit"):
                value = branch.get(key)
                if isinstance(value, str):
                    text = value.strip()
                    branch[key] = int(text) if text.isdigit() else (text or None)
                if branch.get(key) is None:
                    branch.pop(key, None)
            try:
                conditions = _json(branch.get("conditions"), f"{where}.conditions")
            except ValidationError as exc:
                problems += exc.messages
                continue
            if conditions:
                branch["conditions"] = conditions
            else:
                branch.pop("conditions", None)
            label = branch.get("label")
            if not isinstance(label, str) or not label or label in labels:
                problems.append(f"{where}.label must be a distinct, non-empty text")
            labels.add(label)
            if "percent" in branch:
                percent = branch["percent"]
                if (
                    isinstance(percent, bool)
                    or not isinstance(percent, int)
                    or not (0 < percent <= 100)
                ):
                    problems.append(f"{where}.percent must be a whole number from 1 to 100")
                else:
                    total += percent
            else:
                problems += _conditions_problems(
                    "contact", branch.get("conditions") or {}, f"{where}.conditions"
                )
            if "limit" in branch:
                problems += _whole(branch["limit"], f"{where}.limit", 0, MAX_LIMIT)
            clean.append(branch)
        if total > 100:
            problems.append("percentages add up to more than 100")
        if problems:
            raise ValidationError(problems)
        return clean

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        remainder = cleaned.get("remainder")
        labels = {b.get("label") for b in cleaned.get("branches") or []}
        if remainder and remainder in labels:
            self.add_error("remainder", "remainder must be a label distinct from the branches")
        return cleaned


class DistributionForm(SettingsForm):
    type_name = "distribution"
    summary = (
        "Shares the input among local entities: at most the entity's limit (or the default "
        "limit) rows each, in the given order of priority."
    )
    example = {"limits": {"STORE_A": 100}, "default_limit": 50, "order": ["-contact__created_at"]}
    local_fields = frozenset({"limits", "default_limit"})

    limits = LimitsField(help_text="Rows each entity may keep; empty: the default limit.")
    default_limit = WholeNumberField(label="Default limit", high=MAX_LIMIT)
    order = ListField(
        initial=list(DEFAULT_PRIORITY),
        help_text="Priority, comma-separated, a leading - for descending: "
        + ", ".join(sorted(PRIORITY_FIELDS))
        + ". Default (and tie-break): contact_id, the longest-standing contacts first.",
    )

    def clean_order(self) -> list[str]:
        order = self.cleaned_data.get("order")
        if not isinstance(order, list) or any(
            not isinstance(item, str) or item.lstrip("-") not in PRIORITY_FIELDS for item in order
        ):
            raise ValidationError(f"order may use {', '.join(sorted(PRIORITY_FIELDS))}")
        return order


class WaitForm(SettingsForm):
    type_name = "wait"
    summary = "Passes its input on after a duration (days, hours and minutes together)."
    inputs = "none (it then starts the workflow) or one"
    example = {"days": 2}
    local_fields = frozenset({"days", "hours", "minutes"})

    days = WholeNumberField(high=MAX_WAIT_DAYS, help_text="Days to wait.")
    hours = WholeNumberField(high=MAX_WAIT_DAYS * 24, help_text="Hours, added to the days.")
    minutes = WholeNumberField(
        high=MAX_WAIT_DAYS * 24 * 60, help_text="Minutes, added to the rest."
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        units = [cleaned.get(key) or 0 for key in ("days", "hours", "minutes")]
        if self.errors:
            return cleaned
        if not any(units):
            raise ValidationError("give a duration in days, hours or minutes")
        if timedelta(days=units[0], hours=units[1], minutes=units[2]) > timedelta(
            days=MAX_WAIT_DAYS
        ):
            raise ValidationError(
                f"a wait lasts at most {MAX_WAIT_DAYS} days (days, hours and minutes together)"
            )
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.raw is not None:  # old messages, kept: "… must be whole numbers of at least 0"
            for key in ("days", "hours", "minutes"):
                value = self.raw.get(key)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0
                ):
                    self.add_error(
                        None, "days, hours and minutes must be whole numbers of at least 0"
                    )
                    break


class SchedulerForm(SettingsForm):
    type_name = "scheduler"
    summary = (
        "Starts the workflow (or passes its input on) at a moment: once (``at``) or "
        "recurring (every hour at ``minute``, every day at ``time``, every week on "
        "``weekdays`` at ``time``; optionally ``times`` occurrences, ``until`` a moment). "
        "A recurring scheduler starts a new run at each occurrence."
    )
    inputs = "none (it starts the workflow) or one"
    example = {"every": "week", "time": "09:00", "weekdays": ["monday", "thursday"], "times": 4}
    local_fields = frozenset({"at", "every", "time", "minute", "weekdays", "times", "until"})

    at = forms.CharField(
        required=False,
        help_text="Once: a date and time such as 2030-05-01T09:00:00+02:00.",
        widget=forms.TextInput(attrs={"placeholder": "2030-05-01T09:00:00+02:00"}),
    )
    every = forms.ChoiceField(
        required=False,
        choices=[("", "— once —"), *[(e, e) for e in EVERY]],
        error_messages={"invalid_choice": f"every must be one of {', '.join(EVERY)}"},
    )
    time = forms.CharField(required=False, help_text="Time of day (HH:MM), daily or weekly.")
    minute = WholeNumberField(high=59, help_text="Minute of the hour, hourly.")
    weekdays = forms.MultipleChoiceField(
        required=False,
        choices=[(d, d.capitalize()) for d in WEEKDAYS],
        widget=forms.CheckboxSelectMultiple,
        error_messages={"invalid_choice": f"weekdays must list some of {', '.join(WEEKDAYS)}",
                        "invalid_list": f"weekdays must list some of {', '.join(WEEKDAYS)}"},
    )  # fmt: skip
    times = WholeNumberField(low=1, high=MAX_TIMES, help_text="Number of occurrences.")
    until = forms.CharField(required=False, help_text="Last possible moment (ISO 8601).")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        every = cleaned.get("every")
        if "every" in self.errors:
            return cleaned
        if not every:
            if _parse(parse_datetime, cleaned.get("at")) is None:
                self.add_error("at", "at must be a date and time such as 2030-05-01T09:00:00+02:00")
            for key in ("time", "minute", "weekdays", "times", "until"):
                cleaned.pop(key, None)
            return cleaned
        cleaned.pop("at", None)
        if every == "hour":
            cleaned["minute"] = cleaned.get("minute") or 0
        elif _parse(parse_time, cleaned.get("time")) is None:
            self.add_error("time", "time must be a time of day such as 09:30")
        if every == "week" and not cleaned.get("weekdays") and "weekdays" not in self.errors:
            self.add_error("weekdays", f"weekdays must list some of {', '.join(WEEKDAYS)}")
        until = cleaned.get("until")
        if until and _parse(parse_datetime, until) is None:
            self.add_error(
                "until", "until must be a date and time such as 2030-05-01T09:00:00+02:00"
            )
        return cleaned


ENRICHMENT_COLUMNS = [("name", "Name"), ("field", "Field"), ("record", "Record"),
                      ("relation", "Relation"), ("aggregate", "Aggregate"),
                      ("where", "Where")]  # fmt: skip


class EnrichmentForm(SettingsForm):
    type_name = "enrichment"
    summary = (
        "Attaches data to each row for personalisation: a contact field, a field of the "
        "row's record, or an aggregate (count, sum, min, max, avg) over a relation."
    )
    example = {"fields": [{"name": "bookings", "relation": "bookings", "aggregate": "count"},
               {"name": "lang", "field": "language"}]}  # fmt: skip

    fields = forms.Field(
        required=False,
        label="Data",
        widget=RowsWidget(ENRICHMENT_COLUMNS),
        help_text="Name (lower-case identifier) and either a field, a record and its field, "
        "or a relation with an aggregate.",
    )

    def clean_fields(self) -> list[dict[str, Any]]:
        from campaigns.workflow.activities import TYPES

        items = self.cleaned_data.get("fields")
        if not isinstance(items, list) or not items:
            raise ValidationError("fields must be a non-empty list")
        problems: list[str] = []
        names: set[str] = set()
        clean = []
        for index, item in enumerate(items):
            where = f"fields[{index}]"
            if not isinstance(item, dict):
                problems.append(f"{where} must be an object")
                continue
            item = {k: v for k, v in item.items() if v not in ("", None)}
            if isinstance(item.get("where"), str):
                try:
                    item["where"] = _json(item["where"], f"{where}.where")
                except ValidationError as exc:
                    problems += exc.messages
                    continue
            name = item.get("name")
            if not isinstance(name, str) or not IDENTIFIER.match(name) or name in names:
                problems.append(
                    f"{where}.name must be a distinct identifier (lower-case letters, digits, _)"
                )
            names.add(name)
            try:
                TYPES["enrichment"].expression(item)
            except (KeyError, TypeError, ValueError, targeting.TargetingError) as exc:
                message = "; ".join(getattr(exc, "messages", [str(exc).strip("'")]))
                problems.append(f"{where}: {message}")
            clean.append(item)
        if problems:
            raise ValidationError(problems)
        return clean


class LocalApprovalForm(DistributionForm):
    type_name = "local_approval"
    summary = (
        "Collaborative by target approval: the input is shared among entities (the "
        "distribution's limits), each entity reviews its list and approves it; the output "
        "keeps the approved lists without the contacts removed from them. At the deadline, "
        "entities that did not answer get ``on_deadline``. In report mode the input passes "
        "on and each entity is sent a report instead."
    )
    example = {"limits": {"STORE_A": 200}, "default_limit": 100, "deadline_hours": 48,
               "on_deadline": "send_none"}  # fmt: skip
    local_fields = frozenset({"deadline_hours"})

    mode = forms.ChoiceField(
        required=False,
        choices=[("approve", "Approve the list"), ("report", "Report what was sent")],
        help_text="approve (default): each entity reviews its list; report: it is sent a report.",
        error_messages={"invalid_choice": "mode must be approve or report"},
    )
    deadline_hours = WholeNumberField(
        low=1, high=24 * 90, label="Deadline (hours)", help_text="Hours to decide (default 72)."
    )
    on_deadline = forms.ChoiceField(
        required=False,
        label="At the deadline",
        help_text="For entities that did not answer (default: send to all).",
        choices=[("send_all", "Send to all (as if approved)"), ("send_none", "Send to none")],
        error_messages={"invalid_choice": "on_deadline must be send_all or send_none"},
    )


DELIVERY_TEXTS = ("subject", "push_title", "sender", "reply_to", "category")


class DeliveryForm(SettingsForm):
    type_name = "delivery"
    summary = (
        "Hands its population to a delivery: in a real run it is prepared (typology, "
        "personalisation), approved when asked, and sent; the population passes on."
    )
    example = {"channel": "email", "subject": "Hello {{ contact.first_name }}",
               "html_body": "<p>Hello {{ contact.first_name }}</p>",
               "text_body": "Hello {{ contact.first_name }}"}  # fmt: skip

    channel = forms.ChoiceField(
        choices=Channel.choices,
        help_text="Email, SMS, push or a direct-mail export file.",
        error_messages={
            "required": f"channel must be one of {', '.join(Channel.values)}",
            "invalid_choice": f"channel must be one of {', '.join(Channel.values)}",
        },
    )
    dimension = forms.ChoiceField(
        required=False,
        choices=[("", "contact"), ("booking", "booking (one message per booking)")],
    )
    typology = ObjectIdField(
        model_path="campaigns.Typology", required=False, empty_value=None,
        help_text="The typology rules applied at preparation (consent, pressure, capacity…).",
        error_messages={"invalid_choice": "typology must be the id of a typology"},
    )  # fmt: skip
    requires_approval = forms.BooleanField(required=False)
    subject = forms.CharField(required=False, max_length=255)
    push_title = forms.CharField(required=False, max_length=255)
    html_body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}))
    text_body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}))
    sender = forms.CharField(required=False, max_length=255)
    reply_to = forms.CharField(required=False, max_length=255)
    category = forms.CharField(required=False, max_length=64)
    columns = ListField(help_text="Direct mail: columns of the export, comma-separated.")
    export_format = forms.ChoiceField(
        required=False, choices=[("", "csv"), ("csv", "csv"), ("xlsx", "xlsx")]
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["typology"].offer("— none —")

    def clean(self) -> dict[str, Any]:
        from campaigns.delivery.services import activity_problems

        cleaned = super().clean()
        if "channel" in self.errors:
            return cleaned
        settings = {**self.stored, **{k: v for k, v in cleaned.items() if v not in EMPTY}}
        for problem in activity_problems(settings, self.campaign):
            name, _, rest = problem.partition(": ")
            if name in self.fields and rest and name not in self.errors:
                self.add_error(name, problem)
            elif problem not in self.non_field_errors():
                self.add_error(None, problem)
        return cleaned


ALL_FORMS = (QueryForm, ReadAudienceForm, UnionForm, IntersectionForm, ExclusionForm,
             SplitForm, DeduplicationForm, DistributionForm, WaitForm, SchedulerForm,
             EnrichmentForm, LocalApprovalForm, DeliveryForm, EndForm)  # fmt: skip
FORMS: dict[str, type[SettingsForm]] = {form.type_name: form for form in ALL_FORMS}


def settings_form(type_: str) -> type[SettingsForm]:
    return FORMS[type_]


def settings_problems(type_: str, settings: Any, campaign: Any = None) -> list[str]:
    """Every problem of an activity's stored settings, each naming its setting."""
    form_class = FORMS.get(type_)
    if form_class is None:
        return [f"unknown type {type_!r}"]
    if not isinstance(settings, dict):
        return ["settings must be an object"]
    return form_class(settings=settings, campaign=campaign).problems()


def local_fields(type_: str) -> frozenset[str]:
    form_class = FORMS.get(type_)
    return form_class.local_fields if form_class else frozenset()
