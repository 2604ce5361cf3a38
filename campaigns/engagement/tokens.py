"""The signed token a message's links carry (unsubscribe, preferences, mirror).

One token per message: its id, signed with Django's signing (HMAC-SHA256 of ``SECRET_KEY``)
under its own salt, so that it cannot be forged, altered or reused from another kind of
signed value. It names the message only; the contact and the delivery are read from the
message row. It does not expire: an unsubscribe link must work for as long as the email
lives in a mailbox. Signing costs a few microseconds per message (no query)."""

from __future__ import annotations

from django.core import signing

SALT = "campaigns.engagement.recipient"
# Links rendered in a proof or a preview: they lead to a page that says so and changes nothing.
SAMPLE = "sample"


def signer() -> signing.Signer:
    """A signer with the current keys (one per renderer: building it reads the settings)."""
    return signing.Signer(salt=SALT)


def make(message_id: int, *, using: signing.Signer | None = None) -> str:
    return (using or signer()).sign(str(message_id))


def read(token: str) -> int | None:
    """The message id a token stands for, or None when it is not one we signed."""
    try:
        value = signer().unsign(token)
    except signing.BadSignature:
        return None
    return int(value) if value.isdigit() else None
