"""Channel providers behind one small interface: open once per chunk, send one rendered
message, close. Errors say whether a retry may help and whether the address bounced."""

from __future__ import annotations

import contextlib
import json
import smtplib
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

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
    """Try again later (a 4xx answer, a lost connection). ``maybe_accepted``: the connection
    was lost while the message was being handed over, so the provider may have accepted it
    (its fate is unknown: in doubt, unless the provider deduplicates)."""

    def __init__(self, message: str, *, maybe_accepted: bool = False) -> None:
        super().__init__(message)
        self.maybe_accepted = maybe_accepted


class PermanentError(Exception):
    """Never try again; ``bounce`` says the address itself is bad (quarantine it)."""

    def __init__(self, message: str, *, bounce: bool = False) -> None:
        super().__init__(message)
        self.bounce = bounce


class Provider:
    channel = ""
    # A provider that deduplicates (the same message sent twice is delivered once) may be
    # sent a message again when its fate is unknown; the others never are.
    idempotent = False

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
            raise TemporaryError(f"Connection lost: {exc}", maybe_accepted=True) from exc

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


class HttpProvider(Provider):
    """SMS and push through an HTTP gateway: one JSON POST per message over one keep-alive
    connection per chunk, to DELIVERY_<CHANNEL>_URL with DELIVERY_<CHANNEL>_TOKEN as a bearer
    token. The message's stable id goes in an ``Idempotency-Key`` header, so a gateway that
    honours it never delivers a message twice, even when a chunk is sent again: a message
    whose fate is unknown after a crash is sent again automatically (``idempotent``).

    Answers: 2xx accepted; 408, 429 and 5xx (or no answer) temporary; other 4xx permanent,
    a bounce when 404/410 or when the JSON answer says ``"bounce": true``."""

    idempotent = True

    def __init__(self, channel: str) -> None:
        self.channel = channel
        gateway = settings.DELIVERY_HTTP_GATEWAYS.get(channel) or {}
        self.url = urlsplit(gateway.get("url", ""))
        self.token = gateway.get("token", "")
        if self.url.scheme not in ("http", "https") or not self.url.hostname:
            raise LookupError(f"Set DELIVERY_{channel.upper()}_URL to the gateway's http(s) URL.")

    def open(self) -> None:
        kind = HTTPSConnection if self.url.scheme == "https" else HTTPConnection
        self.connection = kind(self.url.hostname, self.url.port, timeout=30)

    def send(self, message: Rendered) -> None:
        body = {"id": message.message_id, "to": message.address, "text": message.text}
        if self.channel == Channel.PUSH:
            body.update(title=message.title, data=message.data)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.headers.get("Message-ID", str(message.message_id)),
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        path = self.url.path or "/"
        if self.url.query:
            path += f"?{self.url.query}"
        try:
            self.connection.request("POST", path, json.dumps(body).encode(), headers)
            response = self.connection.getresponse()
            answer = response.read()
        except (OSError, HTTPException) as exc:
            self.connection.close()  # the next message reconnects
            raise TemporaryError(f"Gateway unreachable: {exc}", maybe_accepted=True) from exc
        status = response.status
        if 200 <= status < 300:
            return
        detail = answer.decode(errors="replace")[:300]
        if status in (408, 429) or status >= 500:
            raise TemporaryError(f"Gateway answered {status}: {detail}")
        try:
            bounced = json.loads(answer).get("bounce") is True
        except (ValueError, AttributeError):
            bounced = False
        raise PermanentError(f"Gateway answered {status}: {detail}",
                             bounce=bounced or status in (404, 410))  # fmt: skip

    def close(self) -> None:
        self.connection.close()


def provider_for(channel: str) -> Provider:
    if channel == Channel.EMAIL:
        return EmailProvider()
    path = settings.DELIVERY_PROVIDERS.get(channel)
    if not path:
        raise LookupError(f"No provider for the {channel} channel.")
    return import_string(path)(channel)


def check_providers(**kwargs: Any) -> list[Any]:
    """System check: every channel's provider can be built from the settings (a wrong dotted
    path or a gateway without its URL is reported at start, not at the first send)."""
    from django.core import checks

    problems = []
    for channel in settings.DELIVERY_PROVIDERS:
        try:
            provider = provider_for(channel)
        except (ImportError, LookupError, TypeError) as exc:
            problems.append(
                checks.Error(
                    f"The {channel} provider cannot be used: {exc}",
                    hint=f"Check DELIVERY_{channel.upper()}_PROVIDER and its settings.",
                    id="campaigns.E001",
                )
            )
            continue
        if isinstance(provider, HttpProvider) and provider.token and provider.url.scheme != "https":
            problems.append(
                checks.Warning(
                    f"The {channel} gateway's token travels over plain HTTP.",
                    hint=f"Use an https:// URL in DELIVERY_{channel.upper()}_URL.",
                    id="campaigns.W001",
                )
            )
    return problems
