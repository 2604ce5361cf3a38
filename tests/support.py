"""Test helpers: email backends that fail on purpose, client log-in shortcuts."""

from __future__ import annotations

from django.core.mail.backends.base import BaseEmailBackend


class FailingEmailBackend(BaseEmailBackend):
    """Every send raises, like an SMTP server that refuses the connection."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server refused the connection")
