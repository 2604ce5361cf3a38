"""Message personalisation with Jinja2's sandbox: HTML autoescaped, text not; unknown
variables fail when the template is saved (checked against a sample recipient with
StrictUndefined), and templates never reach Python internals or the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from campaigns.targeting.registry import BOOKING_FIELDS, CONTACT_FIELDS

HTML = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
TEXT = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
CONTACT_KEYS = [key for key in CONTACT_FIELDS if "." not in key]
RECORD_KEYS = [key for key in BOOKING_FIELDS if "." not in key]
ENTITY_KEYS = ["code", "name", "contact_email"]


class Data(dict):
    """Enrichment values: a name the run did not attach renders empty, not an error."""

    def __missing__(self, key: str) -> str:
        return ""


def sample_context(*, multi_level: bool, perso: Mapping[str, Any]) -> dict[str, Any]:
    """A recipient with every field the templates may use (validation and blank preview)."""
    context: dict[str, Any] = {
        "contact": {key: f"<{key}>" for key in CONTACT_KEYS},
        "entity": {key: f"<{key}>" for key in ENTITY_KEYS},
        "perso": perso if isinstance(perso, Data) else dict(perso),
        "data": Data(),
        "campaign": {"name": "<campaign>"},
    }
    if multi_level:
        context["record"] = {key: f"<{key}>" for key in RECORD_KEYS}
    return context


def validate_template(source: str, *, html: bool, context: Mapping[str, Any]) -> list[str]:
    """Problems of a template: syntax (with its line), unknown variables, sandbox refusals."""
    env = HTML if html else TEXT
    try:
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: {exc.message}"]
    try:
        template.render(**context)
    except UndefinedError as exc:
        return [f"unknown variable: {exc.message}"]
    except (SecurityError, OverflowError) as exc:  # OverflowError: the sandbox's range cap
        return [f"not allowed: {exc}"]
    except Exception as exc:  # a filter given bad input, a division by zero…
        return [f"cannot render: {type(exc).__name__}: {exc}"]
    return []


def render(source: str, *, html: bool, context: Mapping[str, Any]) -> str:
    return (HTML if html else TEXT).from_string(source).render(**context)
