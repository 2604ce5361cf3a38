"""Open and click tracking: signed redirect URLs for the links of a delivery's HTML template,
an open pixel, machine flagging, and a buffer that writes the events in bulk.

Links. When sending starts, the delivery freezes the list of links its HTML template holds
(``links_of``: literal ``href="http(s)://…"`` values; a link built by the template, with
``{{ … }}`` in it, is not tracked). At render, each of those hrefs becomes
``SITE_URL/t/c/<token>``, where the token names the message, its delivery, the link's index in
the frozen list and the send time, signed with HMAC-SHA256 of ``SECRET_KEY`` under this
module's salt. The redirect goes only to the frozen list's link of that index: there is no
URL in the token to tamper with (no open redirect), and a token that is not one we signed
answers 404.

Endpoints. ``/t/c/<token>`` (302 to the link) and ``/t/o/<token>.gif`` (a 1x1 GIF) are
served by ``TrackingMiddleware``, a WSGI layer in front of Django (no session, no
middleware, no template, no query per hit: the frozen link list is cached per process), and
by plain Django views with the same code for the test client and ``runserver``.

Machine flagging. An open or click is a machine's when its user agent is Apple Mail Privacy
Protection's proxy (or it comes from Apple's 17.0.0.0/8 network), a known security scanner
or a script, when it is a HEAD request, or (clicks) when it comes within
ENGAGEMENT_MACHINE_CLICK_SECONDS of the send. Machine events are stored, flagged, and kept
out of the human rates.

Buffer. Events are appended to a per-process buffer and written in bulk (PostgreSQL: one
COPY, then set-based SQL for the events and their summaries; elsewhere bulk inserts) every
ENGAGEMENT_BUFFER_MS by a background thread, and on a clean shutdown (``atexit``;
gunicorn's ``worker_exit`` hook calls ``flush`` too). With the setting at 0 each event is
written at once. A process killed without a clean shutdown loses its last buffer.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection, transaction
from django.dispatch import receiver

from campaigns.models import AgentClass, Delivery, Event, EventKind, Message

logger = logging.getLogger(__name__)

SALT = b"campaigns.engagement.tracking"
PREFIX = "/t/"
CLICK_PATH = "/t/c/"
OPEN_PATH = "/t/o/"
MARK = "\x1e"  # the marker of a tracked link's href in a template, around its index
GIF = base64.b64decode(b"R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL = '<img src="{url}" width="1" height="1" alt="" style="display:block;border:0">'

_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(https?://[^"'\s<>]+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_MARKED = re.compile(MARK + r"(\d+)" + MARK)


# --------------------------------------------------------------------------------------------
# Links of a template
# --------------------------------------------------------------------------------------------


def links_of(source: str) -> list[str]:
    """The literal http(s) links of an HTML template, each once, in order (the list a click
    token's index points into)."""
    found: list[str] = []
    for match in _HREF.finditer(source or ""):
        url = match.group(3)
        if "{" not in url and "}" not in url and url not in found:
            found.append(url)
    return found[:1000]


def mark_links(source: str, links: list[str]) -> str:
    """The template with each tracked href replaced by its marker (filled per message)."""
    index = {url: n for n, url in enumerate(links)}

    def replace(match: re.Match[str]) -> str:
        n = index.get(match.group(3))
        if n is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{MARK}{n}{MARK}{match.group(2)}"

    return _HREF.sub(replace, source)


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    return hashlib.sha256(SALT + b"|" + secret.encode()).digest()


class Hot:
    """The settings the hot path reads, read once per process (and again after a settings
    change: tests), and the signing key derived once: a hit reads no Django setting."""

    def __init__(self) -> None:
        self.key = _key(settings.SECRET_KEY)
        self.store_ip = bool(settings.ENGAGEMENT_STORE_IP)
        self.trust_forwarded = bool(settings.ENGAGEMENT_TRUST_X_FORWARDED_FOR)
        self.click_seconds = settings.ENGAGEMENT_MACHINE_CLICK_SECONDS
        self.buffer_ms = settings.ENGAGEMENT_BUFFER_MS
        self.buffer_max = max(1, settings.ENGAGEMENT_BUFFER_MAX)


_HOT: Hot | None = None


def hot() -> Hot:
    global _HOT
    if _HOT is None:
        _HOT = Hot()
    return _HOT


@receiver(setting_changed)
def _settings_changed(**kwargs: Any) -> None:
    global _HOT
    _HOT = None


def _sig(payload: str) -> str:
    """HMAC-SHA256 of the payload under the derived key (one C call), 12 bytes in hex."""
    return hmac.digest(hot().key, payload.encode(), "sha256")[:12].hex()


def signing_time() -> int:
    """The send time a message's tracking tokens carry (whole seconds)."""
    return int(time.time())


def click_token(message_id: int, delivery_id: int, link: int, sent: int) -> str:
    payload = f"{message_id}-{delivery_id}-{sent}-{link}"
    return f"{payload}-{_sig('c' + payload)}"


def open_token(message_id: int, delivery_id: int, sent: int) -> str:
    payload = f"{message_id}-{delivery_id}-{sent}"
    return f"{payload}-{_sig('o' + payload)}"


_CLICK_TOKEN = re.compile(r"((\d{1,19})-(\d{1,19})-(\d{1,12})-(\d{1,4}))-([0-9a-f]{24})", re.ASCII)
_OPEN_TOKEN = re.compile(r"((\d{1,19})-(\d{1,19})-(\d{1,12}))-([0-9a-f]{24})", re.ASCII)


def read(kind: str, token: str) -> tuple[int, int, int, int | None] | None:
    """(message id, delivery id, send time, link index) of a token we signed, else None."""
    match = (_CLICK_TOKEN if kind == "c" else _OPEN_TOKEN).fullmatch(token)
    if match is None:
        return None
    groups = match.groups()
    if not hmac.compare_digest(groups[-1], _sig(kind + groups[0])):
        return None
    link = int(groups[4]) if kind == "c" else None
    return int(groups[1]), int(groups[2]), int(groups[3]), link


class Tracker:
    """A delivery's tracking at render (one per renderer): its frozen links and switches."""

    def __init__(self, delivery: Any, *, live: bool) -> None:
        from campaigns.engagement.compliance import is_marketing

        # Marketing emails only: transactional messages (an order confirmation) go untracked.
        email_html = (delivery.channel == "email" and bool(delivery.html_body)
                      and is_marketing(delivery))  # fmt: skip
        self.delivery_id = delivery.pk
        self.links = list(delivery.tracked_links or []) if live and delivery.track_clicks else []
        self.opens = live and email_html and delivery.track_opens
        self.links = self.links if email_html else []
        base = settings.SITE_URL
        self.click_base = base + CLICK_PATH
        self.open_base = base + OPEN_PATH

    def source(self, html: str) -> str:
        return mark_links(html, self.links) if self.links else html

    def finish(self, html: str, message_id: int) -> str:
        """A rendered HTML part with its links and pixel for ``message_id``."""
        if not message_id or not (self.links or self.opens):
            return html
        sent = signing_time()
        if self.links:
            delivery_id = self.delivery_id

            def url(match: re.Match[str]) -> str:
                link = int(match.group(1))
                if link >= len(self.links):
                    return ""
                return self.click_base + click_token(message_id, delivery_id, link, sent)

            html = _MARKED.sub(url, html)
        if self.opens:
            pixel = PIXEL.format(
                url=f"{self.open_base}{open_token(message_id, self.delivery_id, sent)}.gif"
            )
            ends = list(_BODY_END.finditer(html))
            at = ends[-1].start() if ends else len(html)
            html = html[:at] + pixel + html[at:]
        return html


# --------------------------------------------------------------------------------------------
# Machine flagging
# --------------------------------------------------------------------------------------------

SCANNERS = re.compile(
    r"barracuda|proofpoint|mimecast|urldefense|safelinks|symantec|messagelabs|trend ?micro|"
    r"forcepoint|zscaler|ironport|cisco|fireeye|sophos|fortinet|fortiguard|mailscanner|"
    r"spamassassin|avast|kaspersky|bitdefender|checkpoint|paloalto|libraesva|hornetsecurity|"
    r"vade|cloudmark|bingpreview|microsoft office existence discovery|ms-office.*discovery",
    re.IGNORECASE,
)
BOTS = re.compile(
    r"bot\b|bot/|spider|crawl|slurp|python-|python/|curl/|wget/|go-http-client|java/|okhttp|"
    r"libwww|httpclient|headlesschrome|phantomjs|scrapy|node-fetch|axios/|aiohttp|"
    r"facebookexternalhit|preview",
    re.IGNORECASE,
)
IMAGE_PROXIES = re.compile(r"googleimageproxy|ggpht\.com|yahoomailproxy|outlook-ios-proxy",
                           re.IGNORECASE)  # fmt: skip
MAIL_CLIENTS = re.compile(r"thunderbird|outlook|ms-office|microsoft office|airmail|mailspring",
                          re.IGNORECASE)  # fmt: skip
MOBILE = re.compile(r"mobile|android|iphone|ipad|ipod", re.IGNORECASE)
# Apple Mail Privacy Protection fetches every image of a message as it arrives, from Apple's
# network, with a bare "Mozilla/5.0" user agent.
APPLE_MPP_AGENTS = frozenset({"mozilla/5.0", "mozilla/5.0 (macintosh; intel mac os x 10_15_7)"})
MACHINE_AGENTS = frozenset({AgentClass.APPLE_PROXY, AgentClass.SCANNER, AgentClass.BOT})


@lru_cache(maxsize=4096)
def agent_class(user_agent: str) -> AgentClass:
    """The class of a user agent string."""
    ua = (user_agent or "").strip()
    if not ua:
        return AgentClass.BOT  # real mail clients and browsers always send one
    if ua.lower() in APPLE_MPP_AGENTS:
        return AgentClass.APPLE_PROXY
    if SCANNERS.search(ua):
        return AgentClass.SCANNER
    if IMAGE_PROXIES.search(ua):
        return AgentClass.IMAGE_PROXY  # Gmail/Yahoo fetch when the reader opens: human
    if BOTS.search(ua):
        return AgentClass.BOT
    if MAIL_CLIENTS.search(ua):
        return AgentClass.MAIL_CLIENT
    if MOBILE.search(ua):
        return AgentClass.MOBILE
    if ua.startswith("Mozilla/"):
        return AgentClass.BROWSER
    return AgentClass.UNKNOWN


def is_apple_network(ip: str) -> bool:
    return ip.startswith("17.") and ip.count(".") == 3


def classify(*, kind: EventKind, method: str, user_agent: str, ip: str, sent: int,
             now: float) -> tuple[AgentClass, bool]:  # fmt: skip
    """(agent class, machine) of a hit."""
    agent, machine = _agent(user_agent)
    if agent in _APPLE_MAYBE and is_apple_network(ip):
        agent, machine = AgentClass.APPLE_PROXY.value, True
    machine = machine or method == "HEAD"
    if kind == EventKind.CLICK and now - sent <= hot().click_seconds:
        machine = True
    return AgentClass(agent), machine


_APPLE_MAYBE = frozenset({AgentClass.UNKNOWN.value, AgentClass.BROWSER.value})


@lru_cache(maxsize=4096)
def _agent(user_agent: str) -> tuple[int, bool]:
    """(agent class as stored, machine) of a user agent string: the regular expressions
    run once per distinct agent per process."""
    agent = agent_class(user_agent)
    return agent.value, agent in MACHINE_AGENTS


# --------------------------------------------------------------------------------------------
# The buffer
# --------------------------------------------------------------------------------------------


# A buffered hit: (message id, delivery id, kind, link, at, agent class, machine, ip). Plain
# tuples: building a model instance per hit would cost more than the rest of the hit. ``at``
# is a POSIX time (float) in the buffer, a datetime once written.
Hit = tuple[int, int, int, "int | None", "float | datetime", int, bool, "str | None"]


class Buffer:
    """Events waiting to be written, per process. ``add`` is a list append under a lock; a
    daemon thread flushes every ENGAGEMENT_BUFFER_MS, or as soon as ENGAGEMENT_BUFFER_MAX
    events wait; ``flush`` also runs at exit (``atexit``, and gunicorn's ``worker_exit``,
    ``worker_int`` and ``worker_abort`` hooks). One flush writes at a time: a flush at exit
    waits for the thread's flush under way, so none is cut off. A flush that fails keeps its
    events for the next one (up to ``limit``; beyond, the oldest are dropped and logged).
    What a process killed without a clean exit (SIGKILL, OOM) loses is what waited: at most
    ENGAGEMENT_BUFFER_MS of hits, and never more than ENGAGEMENT_BUFFER_MAX plus the hits
    answered during the flush under way."""

    limit = 500_000

    def __init__(self) -> None:
        # Re-entrant: a signal handler (gunicorn's worker_int) may flush on the thread it
        # interrupted while that thread held one.
        self.lock = threading.RLock()  # the list
        self.writing = threading.RLock()  # one flush at a time
        self.wake = threading.Event()
        self.hits: list[Hit] = []
        self.thread: threading.Thread | None = None

    def add(self, hit: Hit) -> None:
        settings_now = hot()
        if settings_now.buffer_ms <= 0:
            self.write([hit])
            return
        with self.lock:
            self.hits.append(hit)
            waiting = len(self.hits)
        if self.thread is None:
            self.start(settings_now.buffer_ms)
        if waiting >= settings_now.buffer_max:
            self.wake.set()

    def start(self, interval: int) -> None:
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(
                target=self.run, args=(interval / 1000,), name="engagement-buffer", daemon=True
            )
            self.thread.start()

    def forked(self) -> None:
        """In a forked child (a gunicorn worker of a preloaded app): no thread, fresh locks,
        and none of the parent's hits (the parent writes those)."""
        self.lock, self.writing = threading.RLock(), threading.RLock()
        self.wake = threading.Event()
        self.hits, self.thread = [], None

    def run(self, seconds: float) -> None:
        while True:
            self.wake.wait(seconds)
            self.wake.clear()
            try:
                self.flush()
            except Exception:  # keep the thread alive; the events stay in the buffer
                logger.exception("Engagement events: a flush failed; retrying")
                connection.close()  # the next flush opens a fresh connection

    def flush(self) -> int:
        with self.writing:
            with self.lock:
                hits, self.hits = self.hits, []
            if not hits:
                return 0
            try:
                return self.write(hits)
            except Exception:
                with self.lock:
                    kept = (hits + self.hits)[-self.limit :]
                    if len(kept) < len(hits) + len(self.hits):
                        logger.error("Engagement events: buffer full, %d events dropped",
                                     len(hits) + len(self.hits) - len(kept))  # fmt: skip
                    self.hits = kept
                raise

    @staticmethod
    def write(hits: list[Hit]) -> int:
        """Insert the hits as events, each with its message's entity (else its contact's),
        and add them to the summaries, in one transaction; hits of messages that no longer
        exist are dropped. PostgreSQL: one COPY into a temporary table, then set-based SQL
        (no per-row Python beyond the COPY)."""
        hits = [
            hit if isinstance(hit[4], datetime)
            else (*hit[:4], datetime.fromtimestamp(hit[4], UTC), *hit[5:])
            for hit in hits
        ]  # fmt: skip
        if connection.vendor == "postgresql":
            return write_postgresql(hits)
        from campaigns.engagement.events import record_many

        ids = sorted({hit[0] for hit in hits})
        entity: dict[int, int | None] = {}
        for start in range(0, len(ids), 1000):
            entity.update(
                Message.objects.filter(pk__in=ids[start : start + 1000])
                .order_by()
                .values_list("pk", "entity_id")
            )
        orphans = [pk for pk, owner in entity.items() if owner is None]
        if orphans:  # a message without an entity: its contact's
            entity.update(
                Message.objects.filter(pk__in=orphans).values_list("pk", "contact__entity_id")
            )
        return record_many(
            Event(message_id=m, delivery_id=d, entity_id=entity[m], kind=kind, at=at, link=link,
                  agent=agent, machine=machine, ip=ip)
            for m, d, kind, link, at, agent, machine, ip in hits
            if m in entity
        )  # fmt: skip


HITS = ("message_id", "delivery_id", "kind", "link", "at", "agent", "machine", "ip")
# The Seen bits of an event row (``events.seen_bits``, in SQL).
SEEN_SQL = (
    "CASE h.kind WHEN 1 THEN 1 WHEN 4 THEN 2 WHEN 5 THEN 4 WHEN 7 THEN 32 WHEN 6 THEN 64 "
    "WHEN 2 THEN (CASE WHEN h.machine THEN 128 ELSE 8 END) "
    "WHEN 3 THEN (CASE WHEN h.machine THEN 256 ELSE 24 END) ELSE 0 END"
)


def write_postgresql(hits: list[Hit]) -> int:
    from psycopg import sql

    from campaigns.models import Contact, EngagementHour, MessageEngagement

    names = {
        "event": sql.Identifier(Event._meta.db_table),
        "message": sql.Identifier(Message._meta.db_table),
        "contact": sql.Identifier(Contact._meta.db_table),
        "summary": sql.Identifier(MessageEngagement._meta.db_table),
        "hour": sql.Identifier(EngagementHour._meta.db_table),
    }
    statements = [
        "INSERT INTO {event} (message_id, delivery_id, entity_id, kind, at, link, agent, "
        "machine, ip, detail, ref) SELECT h.message_id, h.delivery_id, "
        "COALESCE(m.entity_id, c.entity_id), h.kind, h.at, h.link, h.agent, h.machine, h.ip, "
        "'', '' FROM engagement_hits h JOIN {message} m ON m.id = h.message_id "
        "LEFT JOIN {contact} c ON c.id = m.contact_id AND m.entity_id IS NULL",
        "INSERT INTO {summary} (message_id, delivery_id, entity_id, seen) "
        "SELECT h.message_id, MAX(h.delivery_id), MAX(COALESCE(m.entity_id, c.entity_id)), "
        f"BIT_OR({SEEN_SQL}) FROM engagement_hits h JOIN {{message}} m ON m.id = h.message_id "
        "LEFT JOIN {contact} c ON c.id = m.contact_id AND m.entity_id IS NULL "
        "GROUP BY h.message_id "
        "ON CONFLICT (message_id) DO UPDATE SET seen = {summary}.seen | EXCLUDED.seen",
        "INSERT INTO {hour} (delivery_id, entity_id, hour, kind, machine, events) "
        "SELECT h.delivery_id, COALESCE(m.entity_id, c.entity_id, 0), "
        "date_trunc('hour', h.at), h.kind, h.machine, COUNT(*) "
        "FROM engagement_hits h JOIN {message} m ON m.id = h.message_id "
        "LEFT JOIN {contact} c ON c.id = m.contact_id AND m.entity_id IS NULL "
        "WHERE h.kind IN (2, 3) GROUP BY 1, 2, 3, 4, 5 "
        "ON CONFLICT (delivery_id, hour, entity_id, kind, machine) "
        "DO UPDATE SET events = {hour}.events + EXCLUDED.events",
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS engagement_hits (message_id bigint, "
            "delivery_id bigint, kind smallint, link smallint, at timestamptz, agent smallint, "
            "machine boolean, ip inet) ON COMMIT DELETE ROWS"
        )
        cursor.execute("DELETE FROM engagement_hits")  # inside an outer transaction too
        copy_sql = sql.SQL("COPY engagement_hits ({}) FROM STDIN").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in HITS)
        )
        with cursor.copy(copy_sql) as copy:
            for hit in hits:
                copy.write_row(hit)
        cursor.execute(sql.SQL(statements[0]).format(**names))
        written = cursor.rowcount
        for statement in statements[1:]:
            cursor.execute(sql.SQL(statement).format(**names))
    return written


BUFFER = Buffer()
atexit.register(lambda: BUFFER.flush())
os.register_at_fork(after_in_child=lambda: BUFFER.forked())


def flush() -> int:
    """Write the buffered events now (gunicorn's ``worker_exit``; tests)."""
    return BUFFER.flush()


# --------------------------------------------------------------------------------------------
# A hit
# --------------------------------------------------------------------------------------------

_LINKS: dict[int, list[str]] = {}


def links_for(delivery_id: int) -> list[str]:
    """A delivery's frozen links, cached per process (they never change once sending
    started)."""
    links = _LINKS.get(delivery_id)
    if links is None:
        row = Delivery.objects.filter(pk=delivery_id).values_list("tracked_links", flat=True)
        links = list(row.first() or [])
        if len(_LINKS) > 5000:
            _LINKS.clear()
        _LINKS[delivery_id] = links
    return links


_OPEN_KIND, _CLICK_KIND = EventKind.OPEN.value, EventKind.CLICK.value
_APPLE = AgentClass.APPLE_PROXY.value


def hit(kind: str, token: str, *, method: str, user_agent: str, ip: str) -> str | None:
    """Record an open (``kind`` "o") or a click ("c") of a token; returns the link to redirect
    to (a click), "" (an open), or None: not a token we signed (404)."""
    if kind == "o":
        if not token.endswith(".gif"):
            return None
        token = token[:-4]
    found = read(kind, token)
    if found is None:
        return None
    message_id, delivery_id, sent, link = found
    target = ""
    now = time.time()
    settings_now = hot()
    agent, machine = _agent(user_agent)
    if agent in _APPLE_MAYBE and ip.startswith("17.") and is_apple_network(ip):
        agent, machine = _APPLE, True
    if method == "HEAD":
        machine = True
    if kind == "c":
        links = _LINKS.get(delivery_id) or links_for(delivery_id)
        if link is None or link >= len(links):
            return None
        target = links[link]
        if now - sent <= settings_now.click_seconds:
            machine = True
    BUFFER.add(
        (message_id, delivery_id, _CLICK_KIND if kind == "c" else _OPEN_KIND, link, now, agent,
         machine, (ip or None) if settings_now.store_ip else None)
    )  # fmt: skip
    return target


def client_ip(environ: dict[str, Any]) -> str:
    """The client's address: the first of X-Forwarded-For when the portal runs behind a
    proxy (ENGAGEMENT_TRUST_X_FORWARDED_FOR), else REMOTE_ADDR."""
    if hot().trust_forwarded:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return environ.get("REMOTE_ADDR", "")


NOT_FOUND = b"Not found"
NO_STORE = ("Cache-Control", "no-store, private, max-age=0")
# The answers' status lines and headers, built once.
NOT_FOUND_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(NOT_FOUND)))]
PIXEL_HEADERS = [("Content-Type", "image/gif"), NO_STORE, ("Content-Length", str(len(GIF)))]
REDIRECT_HEADERS = [NO_STORE, ("Referrer-Policy", "no-referrer"), ("Content-Length", "0")]
PIXEL_BODY, EMPTY_BODY, NOT_FOUND_BODY = (GIF,), (b"",), (NOT_FOUND,)


class TrackingMiddleware:
    """WSGI layer in front of Django answering ``/t/c/…`` and ``/t/o/…`` itself: a token
    checked by one HMAC call, the agent classified from a per-process cache, the hit
    appended to the buffer, an answer whose headers and body are built once."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        kind = path[3:4]
        target = None
        if path[4:5] == "/" and kind in ("c", "o") and method in ("GET", "HEAD"):
            target = hit(kind, path[5:].rstrip("/"), method=method,
                         user_agent=environ.get("HTTP_USER_AGENT", ""),
                         ip=client_ip(environ))  # fmt: skip
        if target is None:
            start_response("404 Not Found", list(NOT_FOUND_HEADERS))
            return NOT_FOUND_BODY
        if kind == "c":
            start_response("302 Found", [("Location", target), *REDIRECT_HEADERS])
            return EMPTY_BODY
        start_response("200 OK", list(PIXEL_HEADERS))
        return PIXEL_BODY if method == "GET" else EMPTY_BODY
