"""Channel providers behind one small interface: open once per chunk, send one rendered
message, close. Errors say whether a retry may help and whether the address bounced."""

from __future__ import annotations

import contextlib
import json
import smtplib
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.module_loading import import_string

from campaigns.choices import Channel


@dataclass
class Rendered:
    """One message ready to go: its address, contents and a stable Message-ID."""

    message_id: int
    address: str
    subject: str = ""
    text: str = ""
    html: str = ""
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    sender: str = ""
    reply_to: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class TemporaryError(Exception):
    """Try again later (a 4xx answer, a lost connection)."""


class PermanentError(Exception):
    """Never try again; ``bounce`` says the address itself is bad (quarantine it)."""

    def __init__(self, message: str, *, bounce: bool = False) -> None:
        super().__init__(message)
        self.bounce = bounce


class Provider:
    channel = ""

    def open(self) -> None:
        """Open a connection for a chunk of messages."""

    def send(self, message: Rendered) -> None:  # pragma: no cover - every provider overrides
        raise NotImplementedError

    def close(self) -> None:
        """Close the chunk's connection."""


def _smtp_error(code: int, text: Any) -> Exception:
    detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    message = f"{code} {detail}".strip()
    if 400 <= code < 500:
        return TemporaryError(message)
    # 550/551/553 and enhanced 5.1.x: the mailbox does not exist or cannot exist.
    bounce = code in (550, 551, 553) or detail.startswith("5.1.")
    return PermanentError(message, bounce=bounce)


class EmailProvider(Provider):
    """Email through Django's mail backend (SMTP in production): one connection per chunk."""

    channel = Channel.EMAIL

    def open(self) -> None:
        self.connection = get_connection(fail_silently=False)
        try:
            self.connection.open()
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryError(f"Cannot reach the mail server: {exc}") from exc

    def send(self, message: Rendered) -> None:
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=message.sender or settings.DELIVERY_SENDER,
            to=[message.address],
            reply_to=[message.reply_to] if message.reply_to else None,
            headers=message.headers,
            connection=self.connection,
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise _smtp_error(code, text) from exc
        except smtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.smtp_code, exc.smtp_error) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TemporaryError(f"Connection lost: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.connection.close()


class FileProvider(Provider):
    """SMS and push for local use: one JSON line per message under var/outbox/<channel>.jsonl."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def open(self) -> None:
        settings.DELIVERY_OUTBOX_DIR.mkdir(parents=True, exist_ok=True)
        self.file = (settings.DELIVERY_OUTBOX_DIR / f"{self.channel}.jsonl").open("a")

    def send(self, message: Rendered) -> None:
        line = {"id": message.message_id, "to": message.address, "text": message.text}
        if self.channel == Channel.PUSH:
            line.update(title=message.title, data=message.data)
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def provider_for(channel: str) -> Provider:
    if channel == Channel.EMAIL:
        return EmailProvider()
    path = settings.DELIVERY_PROVIDERS.get(channel)
    if not path:
        raise LookupError(f"No provider for the {channel} channel.")
    return import_string(path)(channel)
