"""Checks of a model's values that belong to the modules above the models.

Some rules need what the models must not import: a delivery's content is checked by the
template sandbox and the channel rules (``campaigns.delivery.services``), a typology's rules
by ``campaigns.delivery.typology``, a triggered message's content by ``campaigns.triggers``.
Those modules own their rules and register them here when the app is ready
(``CampaignsConfig.ready``); a model's ``clean()`` runs what is registered for it. So a
ModelForm (the admin), a serializer or a service calling ``full_clean()`` applies the same
rules as the services' own callers, and the import circle inside ``campaigns/`` is gone:
models depend on nothing above them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError

# A check returns the problems of one instance, as messages per field (empty: none).
Check = Callable[[Any], Mapping[str, list[str]]]

_checks: defaultdict[type, list[Check]] = defaultdict(list)


def register(model: type, check: Check) -> None:
    """Run ``check`` in ``model.clean()`` (once, however many times the app is readied)."""
    if check not in _checks[model]:
        _checks[model].append(check)


def registered(model: type) -> list[Check]:
    return list(_checks[model])


def run(instance: Any) -> None:
    """Raise ValidationError naming each field of every registered check's problems."""
    problems: dict[str, list[str]] = {}
    for check in _checks[type(instance)]:
        for field, messages in (check(instance) or {}).items():
            problems.setdefault(field, []).extend(messages)
    if problems:
        raise ValidationError(problems)
