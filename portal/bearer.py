"""Bearer secrets in outgoing email: password-reset links, approval links, any signed token.

The outbox never stores a secret that grants access. Code that writes a notification carrying
one seals it: the rendered text holds a *placeholder* where the secret goes, and the row holds
a *reference* — a kind registered below plus the ids its resolver needs. The sending task asks
the resolver for the secret just before it hands the email to the transport, so only the email
itself carries it; a resend derives it again (or mints a fresh one), and a resolver refuses
when the recipient no longer should get it (the account changed its address, the approver
lost the right). Every screen that shows a notification shows its text with the placeholders
redacted.

Apps register their kinds in ``AppConfig.ready()``::

    bearer.register("approval_link", approval_link_secret)
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.utils.html import escape

from portal.exceptions import DomainError

if TYPE_CHECKING:
    from portal.models import Notification

REDACTED = "[hidden: sent to the recipient only]"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SecretUnavailable(DomainError):
    """The secret cannot be given to this recipient any more (the object is gone, the account
    changed, the right was lost): the email is not sent."""


# A resolver receives the notification being sent and the stored reference (as keyword
# arguments) and returns the secret as it must appear in the text (URL-safe, no markup).
Resolver = Callable[..., str]
_resolvers: dict[str, Resolver] = {}


def register(kind: str, resolver: Resolver) -> None:
    """Declare how to derive the secrets of ``kind`` at send time."""
    _resolvers[kind] = resolver


def registered_kinds() -> list[str]:
    return sorted(_resolvers)


@dataclass(frozen=True)
class Secret:
    """What to derive at send time: a registered kind and the ids its resolver needs."""

    kind: str
    ref: Mapping[str, Any] = field(default_factory=dict)


class Sealed:
    """The secrets of one email: placeholders to render into its text, references to store.

    ``sealed["token"]`` is the placeholder of the secret named ``token``: put it where the
    secret goes (in a URL built with ``reverse`` too: it is made of URL-safe characters).
    """

    def __init__(self, **named: Secret) -> None:
        for name, secret in named.items():
            if not _NAME.match(name):
                raise ValueError(f"Secret names are lower-case identifiers, not {name!r}.")
            if secret.kind not in _resolvers:
                raise LookupError(f"No resolver is registered for secrets of kind {secret.kind!r}.")
        self.key = secrets.token_hex(8)
        self.named = named

    def __getitem__(self, name: str) -> str:
        if name not in self.named:
            raise KeyError(name)
        return placeholder(self.key, name)

    def as_json(self) -> dict[str, Any]:
        """What the outbox row stores: the placeholder key and the references, no secret."""
        return {
            "key": self.key,
            "items": {
                name: {"kind": secret.kind, "ref": dict(secret.ref)}
                for name, secret in self.named.items()
            },
        }


def placeholder(key: str, name: str) -> str:
    return f"secret-{key}-{name}"


def reveal(notification: Notification) -> tuple[str, str, str]:
    """Subject, text and HTML body of ``notification`` with its secrets in place — for the
    sending task only. Raises ``SecretUnavailable`` when a secret cannot be derived."""
    subject, text, html = notification.subject, notification.body_text, notification.body_html
    stored = notification.secret_refs or {}
    for name, item in (stored.get("items") or {}).items():
        resolver = _resolvers.get(item.get("kind", ""))
        if resolver is None:
            raise SecretUnavailable(f"No resolver for secrets of kind {item.get('kind')!r}.")
        value = resolver(notification=notification, **(item.get("ref") or {}))
        mark = placeholder(stored["key"], name)
        subject = subject.replace(mark, value)
        text = text.replace(mark, value)
        html = html.replace(mark, escape(value))
    return subject, text, html


def redact(text: str, notification: Notification) -> str:
    """``text`` of ``notification`` as anyone but its recipient may read it."""
    key = (notification.secret_refs or {}).get("key")
    if not key or not text:
        return text
    return re.sub(rf"secret-{re.escape(key)}-[a-z0-9_]+", REDACTED, text)
