"""Bounded parsing of untrusted input: JSON text and whole numbers from requests.

Malformed input is a client error with the path of the problem, never a 500: JSON nested deep
enough to exhaust Python's recursion (``json.loads`` raises ``RecursionError``, not
``ValueError``), numbers too large for the database or for ``datetime``, digits ``int()``
refuses ("²" passes ``str.isdigit()``; more than 4,300 digits are refused by Python).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

MAX_JSON_DEPTH = 64
# The largest id a database column holds (64-bit signed); bigger ids exist nowhere.
MAX_ID = 2**63 - 1


class InputError(ValueError):
    """Input that cannot be used, with the path of the problem (``conditions``, ``sample``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def as_json(self) -> list[dict[str, str]]:
        return [{"path": self.path, "message": self.message}]


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text: str | bytes, *, path: str = "", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises ``InputError`` (a ``ValueError``) for anything malformed,
    including nesting deeper than ``max_depth``."""
    too_deep = f"Nested deeper than {max_depth} levels."
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(path, too_deep) from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integers of > 4,300 digits
        raise InputError(path, f"Not valid JSON: {exc}") from None
    if json_depth(value) > max_depth:
        raise InputError(path, too_deep)
    return value


def whole_number(raw: Any, *, path: str, minimum: int, maximum: int) -> int:
    """A whole number from request text (ASCII digits, optional sign) within the bounds."""
    text = str(raw).strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not (digits.isascii() and digits.isdigit()) or len(digits) > 30:
        raise InputError(path, f"give a whole number between {minimum} and {maximum}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise InputError(path, f"give a whole number between {minimum} and {maximum}")
    return value


def ids(values: list[str], *, path: str) -> list[int]:
    """Database ids from request text; anything else (or an id no column can hold) refused."""
    return [whole_number(value, path=path, minimum=1, maximum=MAX_ID) for value in values]


class JSONFormField(forms.JSONField):
    """``forms.JSONField`` whose parsing is bounded (deep nesting is a form error, not a 500)."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            load_json(value)
        except InputError as exc:
            raise ValidationError(exc.message, code="invalid") from None
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        if not self.disabled and isinstance(data, str):
            try:
                load_json(data)
            except InputError:
                return forms.fields.InvalidJSONInput(data)
        return super().bound_data(data, initial)
