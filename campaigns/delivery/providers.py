"""Channel providers behind one small interface: open once per chunk, send one rendered
message, close. Errors say whether a retry may help and whether the address bounced."""

from __future__ import annotations

import contextlib
import json
import random
import re
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy as email_policy
from email.utils import formatdate
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.core.mail.message import (
    RFC5322_EMAIL_LINE_LENGTH_LIMIT,
    forbid_multi_line_headers,
    sanitize_address,
)
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

    def stage(self, message: Rendered) -> Callable[[], None]:
        """Everything that comes before handing ``message`` over and cannot hand it over
        (for SMTP: the envelope, MAIL FROM and RCPT TO; no content is sent): returns the call
        that hands it over. Sending overlaps this with the commit of the message's in-flight
        mark, and calls ``unstage`` instead when the mark fails. By default nothing is
        staged and the returned call sends the message."""
        return lambda: self.send(message)

    def unstage(self) -> None:
        """The staged message will not be handed over (its claim was taken over)."""

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


_FOLD = email_policy.compat32.clone(linesep="\r\n")
_CTE = {True: b"7bit", False: b"8bit"}
_LINES = re.compile(r"\r\n|\r|\n")  # the email generator's line ends


def _header(name: str, value: str) -> bytes:
    """One header line as Django's mail message writes it (same checks, same encoding and
    folding), by a short cut when the value is short plain ASCII."""
    if len(name) + len(value) <= 74 and value.isascii() and value.isprintable():
        return f"{name}: {value}\r\n".encode()
    name, value = forbid_multi_line_headers(name, value, "utf-8")  # BadHeaderError on CR/LF
    return _FOLD.fold_binary(name, value)


def _text_part(content: str) -> tuple[bytes, bytes] | None:
    """A text body's transfer encoding and bytes (CRLF lines), as Django sends it; None when
    Django would quote-print it (a line over the RFC 5322 limit)."""
    lines = _LINES.split(content)
    data = "\r\n".join(lines).encode()
    if len(data) > RFC5322_EMAIL_LINE_LENGTH_LIMIT and any(
        len(line.encode(errors="surrogateescape")) > RFC5322_EMAIL_LINE_LENGTH_LIMIT
        for line in lines
    ):
        return None
    return _CTE[content.isascii()], data


class EmailProvider(Provider):
    """Email through Django's mail backend (SMTP in production): one connection per chunk.

    Over Django's SMTP backend, each message's bytes are written directly (the same headers
    and encodings as Django's ``EmailMultiAlternatives``, see ``build``) and handed to the
    connection's smtplib client in two steps (``stage``: the envelope; then the content),
    so that sending can overlap the envelope with the commit of the in-flight mark. Other
    backends (files, memory, console) get Django's message."""

    channel = Channel.EMAIL
    smtp: smtplib.SMTP | None = None  # Django's SMTP backend's client, once open
    staged: tuple[Rendered, bytes] | None = None  # the message whose envelope is sent

    def open(self) -> None:
        self.connection = get_connection(fail_silently=False)
        self.smtp = None
        self.senders: dict[str, str] = {}
        self.staged = None
        try:
            self.connection.open()
            if (
                isinstance(self.connection, SMTPBackend)
                and self.connection.connection
                and settings.DEFAULT_CHARSET.lower() == "utf-8"
            ):
                self.smtp = self.connection.connection
                self.smtp.ehlo_or_helo_if_needed()
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryError(f"Cannot reach the mail server: {exc}") from exc

    def send(self, message: Rendered) -> None:
        """Hand ``message`` over: the content of the envelope staged for it, or the whole
        message when none was staged."""
        staged, self.staged = self.staged, None
        if staged is None or staged[0] is not message:
            if staged is not None:
                self._rset()
            self.stage(message)
            staged, self.staged = self.staged, None
        if staged is None:
            self._send_with_django(message)
            return
        with self._errors(handed_over=True):
            code, answer = self.smtp.data(staged[1])
            if code != 250:
                self._rset()
                raise smtplib.SMTPDataError(code, answer)

    def stage(self, message: Rendered) -> Callable[[], None]:
        data = self.build(message) if self.smtp is not None else None
        if data is not None:
            sender = self._sender(message.sender or settings.DELIVERY_SENDER)
            recipient = message.address
            if not recipient.isascii() or "\n" in recipient or "\r" in recipient:
                recipient = sanitize_address(recipient, "utf-8")
            smtp = self.smtp
            options = [f"size={len(data)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
            with self._errors(handed_over=False):
                code, answer = smtp.mail(sender, options)
                if code != 250:
                    self._rset()
                    raise smtplib.SMTPSenderRefused(code, answer, sender)
                code, answer = smtp.rcpt(recipient)
                if code not in (250, 251):
                    self._rset()
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, answer)})
            self.staged = (message, data)
        return lambda: self.send(message)

    def unstage(self) -> None:
        if self.staged is not None:
            self.staged = None
            self._rset()

    def _rset(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.smtp.rset()

    def _sender(self, address: str) -> str:
        if address not in self.senders:
            self.senders[address] = sanitize_address(address, "utf-8")
        return self.senders[address]

    def build(self, message: Rendered) -> bytes | None:
        """The message's bytes as Django's ``EmailMultiAlternatives`` writes them (CRLF
        lines), with the Date and (for HTML) the boundary drawn here; None when Django would
        quote-print a body (a line over 998 bytes): then Django builds it."""
        text = _text_part(message.text)
        html = _text_part(message.html) if message.html else None
        if text is None or (message.html and html is None):
            return None
        headers = [
            _header("Subject", message.subject),
            _header("From", message.sender or settings.DELIVERY_SENDER),
            _header("To", message.address),
        ]
        if message.reply_to:
            headers.append(_header("Reply-To", message.reply_to))
        names = {name.lower() for name in message.headers}
        if "message-id" not in names or names & {"from", "to", "cc", "reply-to"}:
            return None  # Django makes a Message-ID up (the portal always sets one)
        if "date" not in names:
            headers.append(_header("Date", _date()))
        headers += [_header(name, value) for name, value in message.headers.items()]
        plain = b'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
        if html is None:
            top = plain + b"Content-Transfer-Encoding: " + text[0] + b"\r\n"
            return top + b"".join(headers) + b"\r\n" + text[1]
        boundary = _boundary(text[1] + html[1])
        top = (b"Content-Type: multipart/alternative;\r\n boundary=\"" + boundary +
               b"\"\r\nMIME-Version: 1.0\r\n")  # fmt: skip
        part = b"--" + boundary + b"\r\n"
        return b"".join([
            top, *headers, b"\r\n", part, plain, b"Content-Transfer-Encoding: ", text[0],
            b"\r\n\r\n", text[1], b"\r\n", part,
            b'Content-Type: text/html; charset="utf-8"\r\nMIME-Version: 1.0\r\n',
            b"Content-Transfer-Encoding: ", html[0], b"\r\n\r\n", html[1], b"\r\n--",
            boundary, b"--\r\n",
        ])  # fmt: skip

    def _send_with_django(self, message: Rendered) -> None:
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
        with self._errors(handed_over=True):
            email.send()

    @contextlib.contextmanager
    def _errors(self, *, handed_over: bool):
        """smtplib's errors as the portal's: a 4xx answer is temporary, a 5xx permanent
        (a bounce for a bad mailbox); a lost connection is temporary, and the message may
        have been accepted only when its content had been sent."""
        try:
            yield
        except BadHeaderError as exc:
            raise PermanentError(str(exc)) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise _smtp_error(code, text) from exc
        except smtplib.SMTPResponseException as exc:
            raise _smtp_error(exc.smtp_code, exc.smtp_error) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TemporaryError(f"Connection lost: {exc}", maybe_accepted=handed_over) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            self.connection.close()


_dates: list = [0, ""]


def _date() -> str:
    """The Date header, formatted once per second."""
    now = int(time.time())
    if _dates[0] != now:
        _dates[:] = [now, formatdate(now, localtime=settings.EMAIL_USE_LOCALTIME)]
    return _dates[1]


def _boundary(content: bytes) -> bytes:
    """A MIME boundary like the email package's, absent from the content."""
    while True:
        boundary = b"===============%019d==" % random.randrange(10**19)
        if boundary not in content:
            return boundary


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
