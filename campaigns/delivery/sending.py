"""Sending: a prepared delivery is approved (when required), then sent in chunks by Celery
workers. Each chunk task claims its messages with one conditional UPDATE (pending, or
claimed by a worker that died longer ago than the lease), sends them over one provider
connection, and records the messages' outcomes in the statements that put the next ones in
flight, a window at a time (see "The in-flight protocol" below). A task delivered twice, or
re-run after its worker was killed, finds the sent messages sent and claims only the others.
A message a dead worker had in flight is in doubt: re-sent automatically only through a
provider that deduplicates, otherwise counted and re-sent only by a deliberate action. So a
message is never sent twice by the portal's own retries, and never left behind.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import groupby
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.base import File
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, F, Max, Min, Q
from django.utils import timezone
from django_fsm import can_proceed
from jinja2 import TemplateError
from jinja2.sandbox import SecurityError

from api import webhooks
from api.choices import WebhookEvent
from approvals import services as approvals
from campaigns.choices import CampaignKind, Channel
from campaigns.delivery import rendering, typology
from campaigns.delivery.providers import PermanentError, Rendered, TemporaryError, provider_for
from campaigns.engagement import bounces
from campaigns.engagement import sent as sent_blocks
from campaigns.engagement.compliance import Compliance
from campaigns.engagement.tracking import Tracker, links_of
from campaigns.models import (
    UNSENT,
    ActivityExecution,
    Booking,
    Delivery,
    DeliveryState,
    ExecutionState,
    Message,
    MessageStatus,
    Proof,
    WorkflowRunState,
)
from campaigns.targeting.registry import BOOKING_FIELDS, CONTACT_FIELDS
from campaigns.targeting.worktables import id_ranges
from portal import services as portal_services
from portal import spreadsheets
from portal.choices import Role
from portal.confirm import Confirmation
from portal.exceptions import DomainError
from portal.web import counted

logger = logging.getLogger(__name__)
FINISHED = (DeliveryState.SENT, DeliveryState.CANCELLED, DeliveryState.FAILED)


def check_may_send(delivery: Delivery, actor: Any) -> None:
    """Central marketers for any delivery; a local operator for its own campaigns only."""
    if actor is not None:
        portal_services.check_may_act_for(
            actor=actor, entity=delivery.campaign.entity, perm="campaigns.change_campaign"
        )


# --------------------------------------------------------------------------------------------
# Life cycle
# --------------------------------------------------------------------------------------------


def confirm(*, delivery: Delivery, actor: Any, reason: str = "") -> Delivery:
    """Send a prepared delivery: ask for approval first when it requires one; otherwise it
    becomes ready and the chunks are enqueued when the transaction commits. ``reason`` (the
    sender's confirmation) is the audit entry's comment."""
    check_may_send(delivery, actor)
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if delivery.state != DeliveryState.PREPARED:
            raise DomainError(
                f"Only a prepared delivery can be sent; this one is "
                f"{delivery.get_state_display().lower()}."
            )
        if cancelled_with_its_run(delivery, actor):
            return delivery
        if delivery.requires_approval:
            portal_services.transition(
                obj=delivery, name="ask_approval", actor=actor, check_permission=False,
                comment=reason,
            )  # fmt: skip
            approvals.request_approval(
                obj=delivery, requester=actor, deadline=timezone.now() + timedelta(days=3)
            )
            return delivery
        return _start(delivery, actor, reason)


def cancelled_with_its_run(delivery: Delivery, actor: Any) -> bool:
    """A workflow's delivery whose run was stopped or failed before it could start sending
    (while it was prepared, approved or scheduled) is cancelled instead: nothing is sent."""
    run = delivery.run if delivery.run_id else None
    if run is None or run.state not in (WorkflowRunState.STOPPED, WorkflowRunState.FAILED):
        return False
    portal_services.transition(
        obj=delivery, name="cancel", actor=actor, check_permission=False,
        comment=f"The workflow run is {run.get_state_display().lower()}: nothing is sent.",
    )  # fmt: skip
    _cancel_pending(delivery)
    return True


def _cancel_pending(delivery: Delivery) -> None:
    """A cancelled delivery's messages are counted as cancelled, not as waiting."""
    delivery.messages.filter(status=MessageStatus.PENDING).update(status=MessageStatus.CANCELLED)


def _start(delivery: Delivery, actor: Any, reason: str = "") -> Delivery:
    """Ready; sending starts now, or at its scheduled moment (beat starts it then)."""
    portal_services.transition(
        obj=delivery, name="make_ready", actor=actor, check_permission=False, comment=reason
    )
    if delivery.scheduled_at and delivery.scheduled_at > timezone.now():
        return delivery
    begin_sending(delivery, actor=actor)
    transaction.on_commit(partial(enqueue_chunks, delivery.pk))
    return delivery


def begin_sending(delivery: Delivery, *, actor: Any = None) -> None:
    """Every path to sending comes here: the typology's pressure and capacity rules run
    again first, counting what was sent since the preparation (one start at a time: see
    ``reapply_at_send``; its lock is held until the caller's transaction commits the state
    change), the HTML part's links are frozen for click tokens, then the delivery is sending.
    The caller owns the transaction; a transition that is not allowed raises, as before."""
    with transaction.atomic():
        if can_proceed(delivery.start_sending):  # else the transition below refuses it
            typology.reapply_at_send(delivery)
            delivery.tracked_links = (
                links_of(delivery.html_body) if delivery.channel == Channel.EMAIL else []
            )
        portal_services.transition(
            obj=delivery, name="start_sending", actor=actor, check_permission=False
        )


def start_scheduled(*, now: datetime | None = None) -> int:
    """Beat: ready deliveries whose scheduled moment has come start sending."""
    now = now or timezone.now()
    started = 0
    due = Delivery.objects.filter(state=DeliveryState.READY, scheduled_at__lte=now)
    for delivery_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
            if delivery.state != DeliveryState.READY or cancelled_with_its_run(delivery, None):
                continue
            begin_sending(delivery)
            transaction.on_commit(partial(enqueue_chunks, delivery.pk))
            started += 1
    return started


def approval_decided(*, delivery: Delivery, approved: bool, actor: Any, comment: str) -> None:
    """The approvals app's decision: approved deliveries start sending; rejected ones are
    cancelled (and a workflow waiting for them goes on)."""
    delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
    if delivery.state != DeliveryState.AWAITING_APPROVAL:
        return
    if approved:
        if not cancelled_with_its_run(delivery, actor):
            _start(delivery, actor)
    else:
        portal_services.transition(
            obj=delivery, name="cancel", actor=actor, comment=comment, check_permission=False
        )
        _cancel_pending(delivery)
        wake_workflow(delivery)


def cancel(*, delivery: Delivery, actor: Any, reason: str = "") -> Delivery:
    check_may_send(delivery, actor)
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        portal_services.transition(obj=delivery, name="cancel", actor=actor, comment=reason)
        _cancel_pending(delivery)
        approvals.cancel_requests_for(obj=delivery, actor=actor, reason=reason or "Cancelled.")
        wake_workflow(delivery)
    return delivery


def sent_message(delivery: Delivery) -> str:
    """What pressing "Send" did, read from the delivery afterwards (admin and portal)."""
    delivery = Delivery.objects.get(pk=delivery.pk)
    by_status = dict(delivery.messages.order_by().values_list("status").annotate(n=Count("id")))
    waiting = by_status.get(MessageStatus.PENDING, 0)
    if delivery.state == DeliveryState.AWAITING_APPROVAL:
        from approvals.models import ApprovalRequest

        request = ApprovalRequest.objects.for_object(delivery).pending().first()
        approvers = request.approvers.count() if request else 0
        return (
            f"Approval asked from {counted(approvers, 'approver')}; "
            f"{counted(waiting, 'message')} will be sent once approved."
        )
    if delivery.state == DeliveryState.READY and delivery.scheduled_at:
        return (
            f"Ready; {counted(waiting, 'message')} will be sent from "
            f"{timezone.localtime(delivery.scheduled_at):%Y-%m-%d %H:%M}."
        )
    if delivery.state == DeliveryState.CANCELLED:
        return "Cancelled, not sent: its workflow run was stopped."
    sent = by_status.get(MessageStatus.SENT, 0)
    if delivery.state == DeliveryState.SENT:
        failed = by_status.get(MessageStatus.FAILED, 0)
        return f"Sent; {counted(sent, 'message')} sent, {failed} failed."
    return f"Sending started; {counted(waiting + sent, 'message')} to send."


def cancelled_message(delivery: Delivery) -> str:
    """What "Cancel the delivery" did: how many messages will not go out."""
    count = delivery.messages.filter(status=MessageStatus.CANCELLED).count()
    return f"Cancelled; {counted(count, 'message')} will not be sent."


def send_confirmation(delivery: Delivery) -> Confirmation:
    """The confirmation page of "Send now" (admin and portal)."""
    waiting = delivery.messages.filter(status=MessageStatus.PENDING).count()
    if delivery.requires_approval:
        return Confirmation(
            title=f"Ask for approval to send “{delivery.label}”?",
            button="Ask for approval",
            consequences=[
                f"The approvers are emailed; once approved, {counted(waiting, 'message')} "
                "go out without another confirmation."
            ],
            reason_help="Kept in the history; the approvers see it there.",
            danger=False,
        )
    when = (
        f"from {timezone.localtime(delivery.scheduled_at):%Y-%m-%d %H:%M}"
        if delivery.scheduled_at and delivery.scheduled_at > timezone.now()
        else "now"
    )
    return Confirmation(
        title=f"Send “{delivery.label}” {when}?",
        button="Send",
        consequences=[
            f"{counted(waiting, 'message')} by {delivery.get_channel_display().lower()} "
            f"go out {when}.",
            "A message that has gone out cannot be called back.",
        ],
    )


def cancel_confirmation(delivery: Delivery) -> Confirmation:
    """The confirmation page of "Cancel the delivery" (admin and portal)."""
    waiting = delivery.messages.filter(status=MessageStatus.PENDING).count()
    consequences = [f"{counted(waiting, 'message')} not yet sent will not be sent."]
    if delivery.run_id:
        consequences.append("Its workflow goes on without it.")
    consequences.append("This cannot be undone.")
    return Confirmation(
        title=f"Cancel the delivery “{delivery.label}”?",
        button="Cancel the delivery",
        consequences=consequences,
    )


def enqueue_chunks(delivery_id: int) -> int:
    """One task per chunk of pending messages (by id ranges), or the direct-mail export."""
    from campaigns.tasks import export_direct_mail

    delivery = Delivery.objects.get(pk=delivery_id)
    if delivery.channel == Channel.DIRECT_MAIL:
        export_direct_mail.delay(delivery_id)
        return 1
    pending = Message.objects.filter(delivery_id=delivery_id, status=MessageStatus.PENDING)
    chunks = id_ranges(pending, settings.DELIVERY_CHUNK_SIZE)
    for first, last, _rows in chunks:
        enqueue_range(delivery_id, first, last, triggered=delivery.triggered)
    if not chunks:
        finish_if_done(delivery_id)
    return len(chunks)


def enqueue_range(delivery_id: int, first: int, last: int, *, triggered: bool) -> None:
    """A task for these messages: a triggered message's on the ``priority`` queue (never
    behind a batch send, also when recovered or sent again), a batch's on the batch queue."""
    from campaigns.tasks import send_chunk, send_triggered

    if triggered:
        send_triggered.apply_async((delivery_id, first), {"last_id": last})
    else:
        send_chunk.delay(delivery_id, first, last)


def finish_if_done(delivery_id: int) -> bool:
    """The delivery is sent once no message is pending or being sent (in-doubt messages
    count as done: their fate is unknown, and they are shown as such). The hidden delivery
    of a triggered message never finishes: it takes new messages as long as it lives. A first
    look without a lock: while messages are still busy (every chunk but the last one), nothing
    is locked or committed; the check is repeated under the lock."""
    if Delivery.objects.filter(pk=delivery_id, triggered=True).exists():
        return False  # (checked before taking the row lock every trigger's send would wait on)
    unsent = Message.objects.filter(delivery_id=delivery_id, status__in=UNSENT)
    if unsent.exists():
        return False
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.state != DeliveryState.SENDING:
            return delivery.state == DeliveryState.SENT
        busy = delivery.messages.filter(status__in=UNSENT).exists()
        if busy:
            return False
        portal_services.transition(obj=delivery, name="finish", at=timezone.now())
        webhooks.emit(WebhookEvent.DELIVERY_SENT, obj=delivery, once=f"delivery-{delivery.pk}")
        wake_workflow(delivery)
    sent_blocks.refresh(delivery_id)  # once: whatever chunk ended without counting
    return True


def wake_workflow(delivery: Delivery) -> None:
    if delivery.run_id and delivery.activity_id:
        from campaigns.workflow import engine

        execution = ActivityExecution.objects.filter(
            run_id=delivery.run_id, activity_id=delivery.activity_id, state=ExecutionState.WAITING
        ).first()
        if execution:
            engine.wake(execution_id=execution.pk)


# --------------------------------------------------------------------------------------------
# Rendering a chunk
# --------------------------------------------------------------------------------------------

CONTACT_PATHS = {key: spec.path for key, spec in CONTACT_FIELDS.items() if "." not in key}
RECORD_PATHS = {key: spec.path for key, spec in BOOKING_FIELDS.items() if "." not in key}


ENTITY_KEYS = rendering.ENTITY_KEYS  # with the sender identity and postal address
SEPARATOR = "\x1e"  # between the parts of the one template a message is rendered with


def contact_keys_used(source: str) -> list[str]:
    """The contact fields a template reads (``contact.x`` / ``contact["x"]``); every field
    when it uses ``contact`` in any other way."""
    from jinja2 import nodes

    tree = rendering.TEXT.parse(source)
    used: set[str] = set()
    lookups = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == "contact":
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if key not in CONTACT_PATHS:
                return list(CONTACT_PATHS)
            used.add(key)
            lookups += 1
    names = sum(1 for n in tree.find_all(nodes.Name) if n.name == "contact")
    return list(CONTACT_PATHS) if names > lookups else sorted(used)


class Renderer:
    """Compiles a delivery's templates once and renders each recipient of a chunk.

    Recipients are read as plain rows (no model instances), and each message is one render
    of a single template holding the parts its channel sends (``rendering.CHANNEL_FIELDS``:
    an email's subject, text and HTML with autoescape; an SMS's text; a push's title and
    text), under one render budget. A field the channel does not use (a push title left on
    an email) is never rendered: it was not validated for this channel either. A direct-mail
    proof shows the recipient's row of the export file."""

    def __init__(self, delivery: Delivery, *, live: bool = True) -> None:
        self.delivery = delivery
        fields = rendering.CHANNEL_FIELDS.get(delivery.channel, {})
        self.fields = list(fields)
        # Links, headers, footer and sender identity (``live``: real links, not samples).
        self.compliance = Compliance(delivery, live=live)
        self.sources = self.compliance.with_footers(
            {name: getattr(delivery, name) or "" for name in self.fields}
        )
        # Open pixel and click redirects (live email sends only: proofs keep plain links).
        self.tracker = Tracker(delivery, live=live)
        if "html_body" in self.sources:
            self.sources["html_body"] = self.tracker.source(self.sources["html_body"])
        parts = [
            "{% autoescape true %}" + source + "{% endautoescape %}" if fields[name] else source
            for name, source in self.sources.items()
        ]
        source = SEPARATOR.join(parts)
        self.template = rendering.TEXT.from_string(source)
        self.columns: list[str] = []
        if delivery.channel == Channel.DIRECT_MAIL:
            self.columns = [c for c in (delivery.columns or ["first_name", "last_name"])
                            if c in CONTACT_PATHS]  # fmt: skip
            self.contact_keys = sorted(set(self.columns))
        else:
            self.contact_keys = contact_keys_used(source)
        self.entities: dict[int, dict[str, Any]] = {}
        self.has_html = bool(self.sources.get("html_body"))
        # An optional personalisation field left empty renders empty.
        self.perso = rendering.Data(delivery.campaign.personalisation_values or {})
        self.campaign = {"name": delivery.campaign.name}
        self.domain = urlsplit(settings.SITE_URL).hostname or "localhost"
        self.records: dict[int, dict[str, Any]] = {}
        self.push_data = dict(delivery.push_data or {}) if delivery.channel == Channel.PUSH else {}

    def rows(self, messages: Any) -> list[dict[str, Any]]:
        """The recipients of a queryset of messages: only the contact fields the templates
        read, their entities and the records they are about (one query each per chunk)."""
        keys = self.contact_keys
        fields = ["id", "address", "secondary_id", "data", "entity_id", "contact__entity_id",
                  *[f"contact__{CONTACT_PATHS[key]}" for key in keys]]  # fmt: skip
        rows = list(messages.values_list(*fields))
        if self.delivery.triggered:  # an empty field (or no contact at all) renders empty
            rows = [(*row[:6], *("" if v is None else v for v in row[6:])) for row in rows]
        self.load_entities({row[4] or row[5] for row in rows})
        recipients = [
            {"id": row[0], "address": row[1], "secondary_id": row[2], "data": row[3],
             "entity": self.entities[row[4] or row[5]],
             "contact": dict(zip(keys, row[6:], strict=True))}
            for row in rows
        ]  # fmt: skip
        self.load_records(recipients)
        return recipients

    def load_entities(self, ids: set[int]) -> None:
        from portal.models import Entity

        missing = ids - self.entities.keys()
        found = {row["pk"]: row for row in
                 Entity.objects.filter(pk__in=missing).values("pk", *ENTITY_KEYS)}  # fmt: skip
        for pk in missing:
            values = found.get(pk, {})
            self.entities[pk] = {key: values.get(key, "") for key in ENTITY_KEYS}

    def recipient_of(self, message: Message) -> dict[str, Any]:
        """One message instance (saved or not) as a recipient row."""
        contact = message.contact
        entity = message.entity or contact.entity
        recipient = {
            "id": message.pk or 0, "address": message.address,
            "secondary_id": message.secondary_id, "data": message.data,
            "contact": {key: getattr(contact, path) for key, path in CONTACT_PATHS.items()},
            "entity": {key: getattr(entity, key) for key in ENTITY_KEYS},
        }  # fmt: skip
        self.load_records([recipient])
        return recipient

    def load_records(self, recipients: list[dict[str, Any]]) -> None:
        # (a triggered message's negative secondary id only tells its rows apart)
        ids = [r["secondary_id"] for r in recipients if r["secondary_id"] > 0]
        if ids:
            rows = Booking.objects.filter(pk__in=ids).values("pk", *RECORD_PATHS.values())
            self.records.update(
                {row["pk"]: {key: row[path] for key, path in RECORD_PATHS.items()} for row in rows}
            )

    def render(self, recipient: dict[str, Any], *, address: str | None = None) -> Rendered:
        token = self.compliance.token(recipient["id"])
        context = {
            "contact": recipient["contact"],
            "entity": recipient["entity"],
            "perso": self.perso,
            "data": rendering.Data(recipient["data"] or {}),
            "campaign": self.campaign,
            **self.compliance.context(token, recipient["entity"]),
        }
        if self.delivery.triggered:  # a triggered message's data is its payload
            context["payload"] = context["data"]
        elif recipient["secondary_id"]:
            context["record"] = self.records.get(recipient["secondary_id"], {})
        with rendering.budget():  # one budget for the message, even rendered part by part
            parts = self.template.render(context).split(SEPARATOR) if self.fields else []
            if len(parts) != len(self.fields):  # the separator came from the data
                parts = [
                    rendering.render(self.sources[name], html=html, context=context)
                    for name, html in rendering.CHANNEL_FIELDS[self.delivery.channel].items()
                ]
        out = dict(zip(self.fields, parts, strict=True))
        self.compliance.finish(out, token, recipient["entity"])
        if out.get("html_body"):
            out["html_body"] = self.tracker.finish(out["html_body"], recipient["id"])
        if self.columns:  # a direct-mail proof: the row the printer gets
            out["subject"] = self.delivery.label
            out["text_body"] = "\n".join(
                f"{column}: {recipient['contact'].get(column, '')}" for column in self.columns
            )
        names = ("subject", "text_body", "html_body", "push_title")
        subject, text, html, title = (out.get(name, "") for name in names)
        delivery = self.delivery
        sender, reply_to, _postal = self.compliance.identity(recipient["entity"])
        return Rendered(
            message_id=recipient["id"],
            address=address or recipient["address"],
            subject=subject.strip(),
            text=text,
            html=html if self.has_html else "",
            title=title,
            data=self.push_data,
            sender=sender,
            reply_to=reply_to,
            headers={
                "Message-ID": f"<d{delivery.pk}.m{recipient['id']}@{self.domain}>",
                "X-Portal-Delivery": str(delivery.pk),
                **self.compliance.headers(token),
            },
        )


RENDER_ERRORS = (TemplateError, SecurityError, OverflowError, KeyError, TypeError, ValueError)


# --------------------------------------------------------------------------------------------
# The chunk task
# --------------------------------------------------------------------------------------------
#
# The in-flight protocol. A chunk task claims its messages (status "sending", a claim token).
# Before a message is handed to the provider it is durably "in flight": the statement that
# records the outcomes of the messages handed over since the previous mark (sent or failed)
# also puts the next window of messages in flight (DELIVERY_IN_FLIGHT_WINDOW; with a window
# of 1, message N's mark puts N+1 in flight), so the protocol costs no commit of its own, and
# one commit serves a window. Every mark names the claim token and says how many rows it
# expects: a worker whose claim was taken over (it updated fewer rows) stops at that mark,
# having handed over only messages it had durably in flight. Each mark also refreshes the
# claim's heartbeat (``claimed_at`` of the rows in flight); a claim whose newest heartbeat is
# older than the lease belongs to a dead (or stuck) worker and may be taken over: its claimed
# messages go to the new owner, and its messages in flight are "in doubt" (the provider may
# have accepted them). In-doubt messages are never sent again automatically, except through a
# provider that deduplicates (``Provider.idempotent``); a central user may send them again
# deliberately.


class Interrupted(Exception):
    """The database went away in the middle of a chunk: the task retries, resuming its own
    claim at once (``resume``: its token and the messages the provider accepted meanwhile)."""

    def __init__(self, resume: dict[str, Any]) -> None:
        super().__init__("The database connection was lost while sending a chunk.")
        self.resume = resume


DATABASE_ERRORS = (OperationalError, InterfaceError)


@dataclass
class Claim:
    token: uuid.UUID | None = None
    busy_until: datetime | None = None  # a live claim of another worker holds part of the range


def claim(
    delivery_id: int, first_id: int, last_id: int, *, idempotent: bool = False,
    resume: uuid.UUID | None = None,
) -> Claim:  # fmt: skip
    """Claim the chunk's sendable messages: pending ones, and those of a claim whose heartbeat
    stopped longer ago than the lease (or of ``resume``, this task's own earlier claim). The
    dead claim's message in flight becomes in doubt (or is claimed again when the provider
    deduplicates). Conditional UPDATEs in one transaction: two workers never claim one row."""
    token = uuid.uuid4()
    now = timezone.now()
    lease = timedelta(seconds=settings.DELIVERY_CLAIM_LEASE_SECONDS)
    rows = Message.objects.filter(delivery_id=delivery_id, id__gte=first_id, id__lte=last_id)
    with transaction.atomic():
        beats = dict(
            rows.filter(status__in=[MessageStatus.SENDING, MessageStatus.IN_FLIGHT])
            .order_by()
            .values_list("claim")
            .annotate(beat=Max("claimed_at"))
        )
        dead = [c for c, beat in beats.items() if c == resume or beat is None or beat < now - lease]
        live = [beat for c, beat in beats.items() if c not in dead]
        if dead:
            _take_over(rows.filter(claim__in=dead), idempotent=idempotent)
        claimed = rows.filter(
            Q(status=MessageStatus.PENDING) | Q(status=MessageStatus.SENDING, claim__in=dead)
        ).update(status=MessageStatus.SENDING, claim=token, claimed_at=now, next_attempt_at=None)
        if claimed:
            Delivery.objects.filter(pk=delivery_id).update(progress_at=now)
    return Claim(token if claimed else None, max(live) + lease if live else None)


def _take_over(dead: Any, *, idempotent: bool) -> int:
    """A dead claim's message in flight: in doubt, or pending again through a provider that
    deduplicates. Returns how many became in doubt."""
    in_flight = dead.filter(status=MessageStatus.IN_FLIGHT)
    if idempotent:
        in_flight.update(status=MessageStatus.SENDING)
        return 0
    return in_flight.update(
        status=MessageStatus.IN_DOUBT,
        error="In doubt: its worker stopped while handing it to the provider.",
    )


_handed = itertools.count(1)  # messages handed over by this process (fault points count them)


def _fault(point: str) -> None:
    """Tests only: with DELIVERY_TEST_FAULT=<point>:<n>, the worker process kills itself
    (SIGKILL: nothing runs after it) at that point of the n-th message it hands over."""
    if point == settings.DELIVERY_TEST_FAULT:
        os.kill(os.getpid(), signal.SIGKILL)


class Throttle:
    """At most ``rate`` messages per second in this worker (0: no limit)."""

    def __init__(self, rate: int) -> None:
        self.interval = 1 / rate if rate else 0
        self.next = time.monotonic()

    def wait(self) -> None:
        if self.interval:
            now = time.monotonic()
            if now < self.next:
                time.sleep(self.next - now)
            self.next = max(now, self.next) + self.interval


class Marks:
    """The marks of one claim, by id and claim token, each committed at once.

    ``mark(done, following)`` records the outcomes of the messages handed over since the
    previous mark (``done``: id, outcome, error) and puts the ``following`` ones in flight,
    in one transaction (usually one statement). It returns False when the claim was taken
    over (fewer rows updated than named). A window of messages is put in flight by one
    commit (``DELIVERY_IN_FLIGHT_WINDOW``), so the commit's cost is shared by the window.

    Each mark refreshes the claim's heartbeat (``claimed_at`` of the rows it touches); the
    delivery's ``progress_at`` is refreshed every few seconds, not per mark. Table and
    column names come from the model's metadata, values are parameters."""

    def __init__(self, token: uuid.UUID, delivery_id: int) -> None:
        meta = Message._meta
        quote = connection.ops.quote_name
        names = ("id", "status", "sent_at", "error", "claim", "claimed_at", "attempts")
        self.c = c = {name: quote(meta.get_field(name).column) for name in names}
        self.table = quote(meta.db_table)
        self.held = f"'{MessageStatus.IN_FLIGHT.value}', '{MessageStatus.IN_DOUBT.value}'"
        self.failed_sql = (
            f"UPDATE {self.table} SET {c['status']} = '{MessageStatus.FAILED.value}', "
            f"{c['error']} = %s, {c['attempts']} = {c['attempts']} + 1, {c['claimed_at']} = %s "
            f"WHERE {c['id']} = %s AND {c['claim']} = %s AND {c['status']} IN ({self.held})"
        )
        # The claim's heartbeat is its newest claimed_at among the rows in flight or waiting:
        # a mark that puts no new row in flight refreshes the ones still in flight.
        self.beat_sql = (
            f"UPDATE {self.table} SET {c['claimed_at']} = %s WHERE {c['claim']} = %s "
            f"AND {c['status']} = '{MessageStatus.IN_FLIGHT.value}'"
        )
        self.moment = meta.get_field("sent_at")
        self.token = meta.get_field("claim").get_db_prep_value(token, connection)
        self.delivery_id = delivery_id
        self.every = max(1.0, settings.DELIVERY_CLAIM_LEASE_SECONDS / 6)
        self.touched = time.time()  # the lease's clock (wall time), not a monotonic one
        self.faults: set[str] = set()  # tests only: die in the middle of this mark
        self.helper: ThreadPoolExecutor | None = None  # see mark

    def _now(self) -> Any:
        return self.moment.get_db_prep_value(timezone.now(), connection)

    def statements(self, done: list[tuple[int, str, Any]], following: list[int],
                   beat: bool = False) -> tuple[list[tuple[str, list[Any]]], int]:  # fmt: skip
        """The mark's statements and the number of rows the counted ones must update: one
        UPDATE for the sent messages and the ones put in flight, one per failed message
        (rare); then, with ``beat`` when none is put in flight, the heartbeat of those still
        in flight (not counted: its row count is not the caller's)."""
        c, now = self.c, self._now()
        sent = [message_id for message_id, outcome, _error in done
                if outcome == MessageStatus.SENT]  # fmt: skip
        statements: list[tuple[str, list[Any]]] = []
        if sent or following:
            ids = ", ".join(["%s"] * len(sent))
            is_sent = f"{c['id']} IN ({ids})" if sent else "FALSE"
            if following:
                next_ids = ", ".join(["%s"] * len(following))
                status = (f"CASE WHEN {is_sent} THEN '{MessageStatus.SENT.value}' "
                          f"ELSE '{MessageStatus.IN_FLIGHT.value}' END")  # fmt: skip
                moment = f"CASE WHEN {is_sent} THEN %s ELSE {c['sent_at']} END"
                error = f"CASE WHEN {is_sent} THEN '' ELSE {c['error']} END"
                where = (f"(({is_sent} AND {c['status']} IN ({self.held})) OR "
                         f"({c['id']} IN ({next_ids}) AND "
                         f"{c['status']} = '{MessageStatus.SENDING.value}'))")  # fmt: skip
                params = [*sent, *sent, now, *sent, now, self.token, *sent, *following]
            else:
                status, moment, error = f"'{MessageStatus.SENT.value}'", "%s", "''"
                where = f"{is_sent} AND {c['status']} IN ({self.held})"
                params = [now, now, self.token, *sent]
            sql = (
                f"UPDATE {self.table} SET {c['status']} = {status}, {c['sent_at']} = {moment}, "
                f"{c['error']} = {error}, {c['claimed_at']} = %s "
                f"WHERE {c['claim']} = %s AND {where}"
            )
            statements.append((sql, params))
        for message_id, outcome, error in done:
            if outcome != MessageStatus.SENT:
                statements.append((self.failed_sql, [str(error)[:500], now, message_id,
                                                     self.token]))  # fmt: skip
        if beat and not following:
            statements.append((self.beat_sql, [now, self.token]))
        return statements, len(done) + len(following)

    def mark(self, done: list[tuple[int, str, Any]], following: list[int] = (),
             beat: bool = False) -> Callable[[], bool]:  # fmt: skip
        """The mark, started now and awaited by the returned call (True: every row was
        updated). On PostgreSQL it runs (and commits) on this process's connection from the
        chunk's helper thread while this thread prepares the next message, which it hands
        over only once the call said True. (This thread does not use the connection
        meanwhile.)"""
        statements, expected = self.statements(list(done), list(following), beat)
        dying = settings.DELIVERY_TEST_FAULT in self.faults if self.faults else False
        self.faults = set()
        if self.helper is None or dying:
            updated = self._run(statements, dying)
            self._heartbeat()
            return lambda: updated == expected
        future = self.helper.submit(self._execute, connection.connection, statements)

        def wait() -> bool:
            with connection.wrap_database_errors:  # psycopg's errors as Django's
                updated = future.result()
            if connection.queries_logged:  # Django's query log (debug, tests) sees them too
                for sql, params in statements:
                    connection.queries_log.append({"sql": sql % tuple(params), "time": "0.000"})
            self._heartbeat()
            return updated == expected

        return wait

    def _run(self, statements: list[tuple[str, list[Any]]], dying: bool = False) -> int:
        updated = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)
                updated += cursor.rowcount if sql is not self.beat_sql else 0
            if dying:
                _fault(settings.DELIVERY_TEST_FAULT)  # before the commit
        return updated

    def _execute(self, raw: Any, statements: list[tuple[str, list[Any]]]) -> int:
        updated = 0
        with raw.cursor() as cursor:
            if len(statements) == 1:  # autocommit: one statement, one commit
                cursor.execute(*statements[0])
                return cursor.rowcount
            with raw.transaction():
                for sql, params in statements:
                    cursor.execute(sql, params)
                    updated += cursor.rowcount if sql is not self.beat_sql else 0
        return updated

    def _heartbeat(self) -> None:
        if time.time() - self.touched > self.every:
            self.touched = time.time()
            Delivery.objects.filter(pk=self.delivery_id).update(progress_at=timezone.now())

    def __enter__(self) -> Marks:
        if connection.vendor == "postgresql":
            connection.ensure_connection()
            self.helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="marks")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.helper is not None:
            self.helper.shutdown(wait=True)
            self.helper = None


# Triggered messages come one per task: their delivery's compiled renderer is kept per worker
# process while the delivery's content (every field but its progress stamp) is unchanged, and
# for a minute at most (the entities it read are read again after that).
_TRIGGER_RENDERERS: dict[int, tuple[float, tuple, Renderer]] = {}
_VOLATILE = {"progress_at", "targeted", "exclusions", "sent_at", "state", "error"}


def _renderer_for(delivery: Delivery) -> Renderer:
    if not delivery.triggered:
        return Renderer(delivery)
    fields = delivery._meta.concrete_fields
    version = (
        *((f.attname, repr(getattr(delivery, f.attname))) for f in fields
          if f.attname not in _VOLATILE),
        delivery.campaign.entity_id,
    )  # fmt: skip
    cached = _TRIGGER_RENDERERS.get(delivery.pk)
    now = time.monotonic()
    if cached is not None and cached[1] == version and cached[0] > now:
        renderer = cached[2]
        renderer.delivery = delivery
        return renderer
    renderer = Renderer(delivery)
    if len(_TRIGGER_RENDERERS) > 100:
        _TRIGGER_RENDERERS.clear()
    _TRIGGER_RENDERERS[delivery.pk] = (now + 60, version, renderer)
    return renderer


def send_chunk(
    delivery_id: int, first_id: int, last_id: int, *, resume: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Send one chunk; returns counts and, after a temporary error (or while another live
    worker holds part of the range), when to try again. A database error raises
    ``Interrupted`` once messages are claimed, so that the retry resumes this claim."""
    result: dict[str, Any] = {"sent": 0, "failed": 0, "in_doubt": 0, "retry_in": None}
    delivery = Delivery.objects.select_related("campaign__entity", "typology").get(pk=delivery_id)
    if delivery.state != DeliveryState.SENDING:
        return result
    provider = provider_for(delivery.channel)  # a configuration error claims nothing
    try:
        renderer = _renderer_for(delivery)
    except RENDER_ERRORS as exc:  # the template itself: no message can be sent, no retry
        fail_delivery(delivery_id, f"The content cannot be rendered: {exc}")
        return result
    token = _resume(resume)
    got = claim(delivery_id, first_id, last_id, idempotent=provider.idempotent, resume=token)
    if got.busy_until is not None:  # a redelivered task: take over when that lease ends
        result["retry_in"] = max(1, int((got.busy_until - timezone.now()).total_seconds()) + 1)
    if got.token is None:
        if token is not None and not delivery.triggered:  # a resumed claim's marks
            sent_blocks.refresh(delivery_id, first_id, last_id)
        finish_if_done(delivery_id)
        return result
    progress: dict[str, list] = {"done": [], "unhanded": []}
    try:
        _send_claimed(delivery, provider, renderer, got.token, result, progress)
        if not delivery.triggered:  # the chunk's sent count per entity, for the reports
            sent_blocks.refresh(delivery_id, first_id, last_id)
        finish_if_done(delivery_id)
    except DATABASE_ERRORS as exc:
        done = progress["done"]
        raise Interrupted({
            "token": str(got.token),
            "accepted": [pk for pk, outcome, _error in done if outcome == MessageStatus.SENT],
            "failed": [[pk, str(error)] for pk, outcome, error in done
                       if outcome != MessageStatus.SENT],
            "unhanded": list(progress["unhanded"]),
        }) from exc  # fmt: skip
    return result


def _resume(resume: dict[str, Any] | None) -> uuid.UUID | None:
    """After a database outage: the messages the provider accepted are marked sent and those
    it refused failed (they stayed in flight); those put in flight but never handed over
    (this process knows it) are claimed again, not in doubt; and the claim is this task's to
    take again at once."""
    if not resume:
        return None
    token = uuid.UUID(resume["token"])
    held = Message.objects.filter(
        claim=token, status__in=[MessageStatus.IN_FLIGHT, MessageStatus.IN_DOUBT]
    )
    with transaction.atomic():
        if resume.get("accepted"):
            held.filter(pk__in=resume["accepted"]).update(
                status=MessageStatus.SENT, sent_at=timezone.now(), error=""
            )
        for pk, error in resume.get("failed", []):
            held.filter(pk=pk).update(
                status=MessageStatus.FAILED, error=error[:500], attempts=F("attempts") + 1
            )
        if resume.get("unhanded"):
            held.filter(pk__in=resume["unhanded"]).update(status=MessageStatus.SENDING)
    return token


def _send_claimed(delivery: Delivery, provider: Any, renderer: Renderer, token: uuid.UUID,
                  result: dict[str, Any], progress: dict[str, list]) -> None:  # fmt: skip
    """Send the claimed messages in order, a window of them in flight ahead of the sender.

    A message is durably in flight before it is handed over: marks put the messages in
    flight a window at a time (``DELIVERY_IN_FLIGHT_WINDOW``), and the same statement
    records the outcomes of the messages handed over since the previous mark. On PostgreSQL
    a mark commits from a helper thread while this thread goes on sending the messages
    already in flight, and is awaited only before a message it puts in flight is handed
    over: the commit's wait is hidden, and a worker killed mid-send leaves at most about two
    windows of messages in doubt (``_Pipeline``). A mark is also asked for once the
    heartbeat is due (a slow provider keeps its claim), and with a rate limit the window is
    one message, put in flight after the pause. Staging a message
    (``Provider.stage``: for SMTP its envelope; nothing the server could deliver) may come
    before its mark's commit; handing it over never does, nor when the claim was taken over.
    ``progress`` says, after a database error, which messages were handed over with which
    outcome (``done``) and which in flight never were (``unhanded``)."""
    mine = Message.objects.filter(
        claim=token, status__in=[MessageStatus.SENDING, MessageStatus.IN_FLIGHT]
    )
    messages = renderer.rows(mine.order_by("id"))
    throttle = Throttle(settings.DELIVERY_RATE_LIMITS.get(delivery.channel, 0))
    window = 1 if throttle.interval else max(1, settings.DELIVERY_IN_FLIGHT_WINDOW)
    faults = settings.DELIVERY_TEST_FAULT
    try:
        provider.open()
    except TemporaryError as exc:
        result["retry_in"] = _release(mine, str(exc))
        return
    done: list[tuple[int, str, Any]] = progress["done"]  # handed over, not yet recorded
    unhanded: list[int] = progress["unhanded"]  # in flight, not handed over yet
    try:
        with Marks(token, delivery.pk) as marks:
            pipeline = _Pipeline(marks, messages, window, done, unhanded)
            throttle.wait()
            for index, message in enumerate(messages):
                if not pipeline.ask_if_due(index):
                    return  # the claim was taken over: the new owner sends the rest
                staged = _stage(provider, renderer, message)  # (touches no database)
                if index >= pipeline.reserved and not pipeline.settle(index):
                    provider.unstage()
                    return  # the claim was taken over: the new owner sends the rest
                if faults:
                    handed = next(_handed)
                    _fault(f"before_send:{handed}")
                    marks.faults.add(f"during_mark:{handed}")
                if unhanded and unhanded[0] == message["id"]:
                    del unhanded[0]
                outcome, error, bounce = _hand_over(staged)
                if faults:
                    _fault(f"after_accept:{handed}")
                if (bounce or outcome is None) and not pipeline.settle():
                    return  # (this thread uses the connection below)
                if bounce:
                    _quarantine(delivery.channel, message["address"], error)
                if outcome is None:  # a temporary error: this one and the rest go back
                    if not pipeline.record():  # the ones handed over before it
                        return
                    if error.maybe_accepted and not provider.idempotent:
                        mine.filter(pk=message["id"], status=MessageStatus.IN_FLIGHT).update(
                            status=MessageStatus.IN_DOUBT, error=f"In doubt: {error}"[:500]
                        )
                        result["in_doubt"] += 1
                    result["retry_in"] = _release(mine, str(error))
                    return
                done.append((message["id"], outcome, error))
                result["sent" if outcome == MessageStatus.SENT else "failed"] += 1
                if throttle.interval and index + 1 < len(messages):
                    # Rate-limited: the next one is put in flight after the pause, not before
                    # it (a worker dying during the pause leaves nothing in doubt).
                    if not pipeline.record():
                        return
                    throttle.wait()
            pipeline.record()
    finally:
        provider.close()


class _Pipeline:
    """The marks of ``_send_claimed``: ``messages[:reserved]`` are in flight (or recorded).
    At most one mark is under way (``asked``); the next is asked for as soon as the previous
    one committed, while at most a window is left ahead, and extends ``reserved`` by a
    window. So the rows in flight are at most about two windows: those handed over since
    the last recorded mark, and those ahead.

    The window starts small and doubles, up to ``DELIVERY_IN_FLIGHT_WINDOW``, each time the
    sender had to wait for a mark: as large as the database's commit time needs, and no
    larger (a slow commit, on a loaded server, needs more messages to hide behind)."""

    FIRST_WINDOW = 8
    WAITED = 0.001  # seconds

    def __init__(self, marks: Marks, messages: list[dict[str, Any]], window: int,
                 done: list, unhanded: list[int]) -> None:  # fmt: skip
        self.marks, self.messages, self.limit = marks, messages, window
        self.window = min(window, self.FIRST_WINDOW)
        self.done, self.unhanded = done, unhanded
        self.reserved = 0
        self.asked: tuple[Callable[[], bool], int, int, int] | None = None

    def ask_if_due(self, index: int) -> bool:
        """Ask for the next mark when a window or less is left ahead, or when the heartbeat
        is due (then the mark under way, older than that, is awaited first). False: the
        claim was taken over."""
        due = self.done and time.time() - self.marks.touched > self.marks.every
        if self.asked is not None:
            if not due:
                return True
            if not self.settle():
                return False
        ahead = self.reserved - index
        more = self.reserved < len(self.messages) and ahead <= self.window
        if more or due:
            end = min(len(self.messages), max(self.reserved, index) + self.window)
            following = [m["id"] for m in self.messages[self.reserved : end]]
            self.unhanded.extend(following)
            recording = list(self.done)
            mark = self.marks.mark(recording, following, beat=True)  # messages remain ahead
            self.asked = (mark, end, len(recording), index)
        return True

    def settle(self, index: int | None = None) -> bool:
        """Await the mark under way (False: the claim was taken over). Before message
        ``index``: when the mark was asked for earlier and is still not committed, the
        commit is slower than sending a window, and the window grows."""
        if self.asked is None:
            return True
        recorded, end, count, asked_at = self.asked
        self.asked = None
        started = time.monotonic()
        if not recorded():
            return False
        if index is not None and index > asked_at and time.monotonic() - started > self.WAITED:
            self.window = min(self.limit, self.window * 2)
        self.reserved = end
        del self.done[:count]
        return True

    def record(self) -> bool:
        """Record every outcome not recorded yet, now (False: the claim was taken over)."""
        if not self.settle():
            return False
        if self.done:
            if not self.marks.mark(self.done)():
                return False
            self.done.clear()
        return True


@dataclass
class Staged:
    """A message ready to hand over (``hand_over``), or what prevented it: a render or
    permanent error (``outcome`` failed), or a temporary error (``outcome`` None)."""

    hand_over: Callable[[], None] | None = None
    outcome: str | None = None
    error: Any = ""
    bounce: bool = False


def _stage(provider: Any, renderer: Renderer, message: dict[str, Any]) -> Staged:
    """Render one message and stage it with the provider. Touches no database: it runs while
    the helper thread uses the connection."""
    try:
        rendered = renderer.render(message)
    except RENDER_ERRORS as exc:
        return Staged(outcome=MessageStatus.FAILED, error=f"Cannot render: {exc}")
    try:
        return Staged(hand_over=provider.stage(rendered))
    except TemporaryError as exc:
        return Staged(error=exc)
    except PermanentError as exc:
        return Staged(outcome=MessageStatus.FAILED, error=str(exc), bounce=exc.bounce)


def _hand_over(staged: Staged) -> tuple[str | None, Any, bool]:
    """Hand one message (in flight) to the provider: (outcome, error text, bounce), or
    (None, the temporary error, False). Touches no database."""
    bounce = staged.bounce
    outcome, error = staged.outcome, staged.error
    if staged.hand_over is not None:
        try:
            staged.hand_over()
            outcome, error = MessageStatus.SENT, ""
        except TemporaryError as exc:
            outcome, error = None, exc
        except PermanentError as exc:
            outcome, error, bounce = MessageStatus.FAILED, str(exc), exc.bounce
    return outcome, error, bounce


def _release(claimed: Any, error: str) -> int | None:
    """A temporary error: the unsent messages go back to pending (one attempt more), not to be
    tried again before their retry time, or fail once they reached the maximum; returns the
    seconds to wait before retrying."""
    limit = settings.DELIVERY_MAX_ATTEMPTS
    claimed.filter(attempts__gte=limit - 1).update(
        status=MessageStatus.FAILED,
        error=f"Gave up after {limit} attempts: {error}"[:500],
        attempts=F("attempts") + 1,
    )
    attempts = claimed.aggregate(n=Max("attempts"))["n"]
    if attempts is None:
        return None
    delay = settings.DELIVERY_RETRY_BASE_SECONDS * 2**attempts
    now = timezone.now()
    claimed.update(
        status=MessageStatus.PENDING, claim=None, error=error[:500], attempts=F("attempts") + 1,
        next_attempt_at=now + timedelta(seconds=delay),
    )  # fmt: skip
    Delivery.objects.filter(messages__in=claimed.values("pk")[:1]).update(progress_at=now)
    return delay


def _quarantine(channel: str, address: str, reason: str) -> None:
    """A bounce at send time: the same quarantine as a provider's or a DSN's report."""
    bounces.quarantine(channel=channel, address=address, reason=reason)


def fail_delivery(delivery_id: int, error: str) -> None:
    """The delivery cannot be sent at all (its content does not render): it fails with the
    error on its page, and its unsent messages fail with it; nothing is retried."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.state != DeliveryState.SENDING:
            return
        portal_services.transition(obj=delivery, name="fail", error=error)
        delivery.messages.filter(status=MessageStatus.PENDING).update(
            status=MessageStatus.FAILED, error=f"Not sent: {error}"[:500]
        )
        wake_workflow(delivery)


# --------------------------------------------------------------------------------------------
# Recovery (beat, on its own queue) and in-doubt messages
# --------------------------------------------------------------------------------------------


def recover_stalled(*, now: datetime | None = None) -> int:
    """Beat: nothing is left behind by a dead worker or a lost task.

    - A claim whose heartbeat stopped longer ago than the lease is taken over here: its
      message in flight becomes in doubt (or pending, through a provider that deduplicates),
      its other messages pending, and a task is enqueued for them at once.
    - A sending delivery with no sign of life for a lease whose pending messages are due
      (never tried, or their retry time passed) gets tasks for them again, when no chunk
      task waits in the queue (one might be theirs), and in any case once it has shown no
      progress for DELIVERY_STALL_ALERT_SECONDS.
    - A sending delivery with nothing left to send is finished.

    Returns the number of chunk tasks enqueued."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.DELIVERY_CLAIM_LEASE_SECONDS)
    sending = Message.objects.filter(delivery__state=DeliveryState.SENDING)
    dead = (
        sending.filter(status__in=[MessageStatus.SENDING, MessageStatus.IN_FLIGHT])
        .order_by()
        .values("delivery_id", "delivery__channel", "delivery__triggered", "claim")
        .annotate(beat=Max("claimed_at"), first=Min("id"), last=Max("id"))
        .filter(beat__lt=now - lease)
    )
    count = 0
    for row in dead:
        with transaction.atomic():
            mine = Message.objects.filter(delivery_id=row["delivery_id"], claim=row["claim"])
            _take_over(mine, idempotent=_idempotent(row["delivery__channel"]))
            released = mine.filter(status=MessageStatus.SENDING).update(
                status=MessageStatus.PENDING, claim=None
            )
            Delivery.objects.filter(pk=row["delivery_id"]).update(progress_at=now)
        if released:  # enqueued once the takeover is committed
            enqueue_range(
                row["delivery_id"], row["first"], row["last"],
                triggered=row["delivery__triggered"],
            )  # fmt: skip
            count += 1
        else:
            finish_if_done(row["delivery_id"])
    quiet = Delivery.objects.filter(state=DeliveryState.SENDING, progress_at__lt=now - lease)
    stalled = now - timedelta(seconds=settings.DELIVERY_STALL_ALERT_SECONDS)
    queue_empty: dict[bool, bool] = {}
    for delivery_id, progress_at, triggered in quiet.values_list("pk", "progress_at", "triggered"):
        due = Message.objects.filter(delivery_id=delivery_id, status=MessageStatus.PENDING).filter(
            Q(next_attempt_at=None)
            | Q(next_attempt_at__lte=now - timedelta(seconds=settings.DELIVERY_RECOVERY_SECONDS))
        )
        if not due.exists():
            finish_if_done(delivery_id)
            continue
        if progress_at >= stalled:
            if triggered not in queue_empty:
                queue_empty[triggered] = (
                    _send_queue_is_empty("priority") if triggered else _send_queue_is_empty()
                )
            if not queue_empty[triggered]:
                continue
        Delivery.objects.filter(pk=delivery_id).update(progress_at=now)
        for first, last, _rows in id_ranges(due, settings.DELIVERY_CHUNK_SIZE):
            enqueue_range(delivery_id, first, last, triggered=triggered)
            count += 1
    return count


def _idempotent(channel: str) -> bool:
    try:
        return provider_for(channel).idempotent
    except (ImportError, LookupError, TypeError):
        return False


def _send_queue_is_empty(queue: str = "") -> bool:
    """No task waits in ``queue`` (default: the one batch chunk tasks go to; the broker says
    so; when it cannot tell, recovery assumes none waits)."""
    from amqp.exceptions import ChannelError

    from portal.celery import app

    if app.conf.task_always_eager:  # tasks run at once: none ever waits in a queue
        return True
    try:
        with app.connection_for_write() as conn:
            declared = conn.default_channel.queue_declare(
                queue=queue or settings.CELERY_TASK_DEFAULT_QUEUE, passive=True
            )
            return not declared.message_count
    except ChannelError as exc:  # Redis: an empty queue does not exist (404)
        if str(getattr(exc, "reply_code", "")) == "404":
            return True
        logger.warning("Cannot read the send queue's length", exc_info=True)
        return True
    except Exception:
        logger.warning("Cannot read the send queue's length", exc_info=True)
        return True


def stalled_since(delivery: Delivery, *, now: datetime | None = None) -> datetime | None:
    """When a sending delivery last showed progress, if that is longer ago than
    DELIVERY_STALL_ALERT_SECONDS (else None)."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.DELIVERY_STALL_ALERT_SECONDS)
    if delivery.triggered:  # sending as long as it lives; quiet while no trigger comes
        return None
    if (
        delivery.state == DeliveryState.SENDING
        and delivery.progress_at
        and (delivery.progress_at < limit)
    ):
        return delivery.progress_at
    return None


def resend_in_doubt(*, delivery: Delivery, actor: Any) -> int:
    """A central user's deliberate choice: the delivery's in-doubt messages (the provider may
    have accepted them before their worker stopped) are sent again. Some recipients may get
    the message twice; the audit entry records who decided it and how many."""
    from portal.models import is_central_user

    check_may_send(delivery, actor)
    if not is_central_user(actor):
        raise PermissionDenied("Only the central team may send in-doubt messages again.")
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if delivery.state not in (DeliveryState.SENDING, DeliveryState.SENT):
            raise DomainError("Only a delivery that is sending or sent has in-doubt messages.")
        count = delivery.messages.filter(status=MessageStatus.IN_DOUBT).update(
            status=MessageStatus.PENDING, claim=None, next_attempt_at=None, error=""
        )
        if not count:
            raise DomainError("This delivery has no message in doubt.")
        comment = f"{count} in-doubt message(s) sent again by a deliberate decision."
        if delivery.state == DeliveryState.SENT:
            portal_services.transition(
                obj=delivery, name="resend_in_doubt", actor=actor, check_permission=False,
                comment=comment, extra={"in_doubt": count},
            )  # fmt: skip
        else:
            portal_services.record_audit(
                obj=delivery, action="resend_in_doubt", actor=actor, comment=comment,
                extra={"in_doubt": count},
            )  # fmt: skip
        transaction.on_commit(partial(enqueue_chunks, delivery.pk))
    return count


# --------------------------------------------------------------------------------------------
# Direct mail and proofs
# --------------------------------------------------------------------------------------------


def export_direct_mail(delivery_id: int) -> str:
    """Direct mail: one file (CSV or XLSX) with the chosen columns for every pending
    recipient, attached to the delivery; the recipients count as sent."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.state != DeliveryState.SENDING:
            return delivery.export_file.name if delivery.export_file else ""
        pending = delivery.messages.filter(status=MessageStatus.PENDING)
        columns = [c for c in (delivery.columns or ["first_name", "last_name"])
                   if c in CONTACT_PATHS]  # fmt: skip
        rows = pending.order_by("id").values_list(
            "id", *[f"contact__{CONTACT_PATHS[c]}" for c in columns]
        )
        header = ["message", *columns]
        name = f"direct-mail-{delivery.pk}.{delivery.export_format or 'csv'}"
        # Written to a temporary file as the rows come, then copied to storage: never whole
        # in memory, whatever the number of recipients.
        with tempfile.TemporaryFile() as handle:
            if delivery.export_format == "xlsx":
                spreadsheets.write_xlsx(
                    handle, header, rows.iterator(chunk_size=5000), title="Direct mail"
                )
            else:
                spreadsheets.write_csv(handle, header, rows.iterator(chunk_size=5000))
            handle.seek(0)
            delivery.export_file.save(name, File(handle, name=name), save=False)
        delivery.save(update_fields=["export_file"])
        pending.update(status=MessageStatus.SENT, sent_at=timezone.now())
        portal_services.transition(obj=delivery, name="finish", at=timezone.now())
        webhooks.emit(WebhookEvent.DELIVERY_SENT, obj=delivery, once=f"delivery-{delivery.pk}")
        wake_workflow(delivery)
    sent_blocks.refresh(delivery_id)
    return delivery.export_file.name


PROOF_SAMPLE_MAX = 20


def request_proofs(
    *, delivery: Delivery, addresses: list[str], actor: Any, contact_ids: list[int] | None = None,
    sample: int = 1,
) -> list[Proof]:  # fmt: skip
    """Proofs: the message as chosen recipients (or the first ones) would get it, sent to
    test addresses, marked as proofs; the real recipients get nothing.

    Proofs carry real contacts' data, so they go only to allowed test addresses
    (``proof_address_problems``), at most ``DELIVERY_PROOF_MAX_ADDRESSES`` per request and
    ``DELIVERY_PROOFS_PER_DAY`` proofs per requesting user over 24 hours."""
    check_may_send(delivery, actor)
    addresses = list(dict.fromkeys(a.strip() for a in addresses if a.strip()))
    if not addresses:
        raise DomainError("Give at least one test address.")
    if len(addresses) > settings.DELIVERY_PROOF_MAX_ADDRESSES:
        raise DomainError(
            f"Give at most {settings.DELIVERY_PROOF_MAX_ADDRESSES} test addresses at a time "
            f"({len(addresses)} given)."
        )
    problems = proof_address_problems(delivery, addresses)
    if problems:
        raise DomainError(problems[0], problems=problems)
    recipients = delivery.messages.exclude(status=MessageStatus.EXCLUDED).order_by("id")
    if contact_ids:
        recipients = recipients.filter(contact_id__in=contact_ids)
    limit = PROOF_SAMPLE_MAX if contact_ids else max(1, min(sample, PROOF_SAMPLE_MAX))
    chosen = list(recipients[:limit])
    if not chosen:
        raise DomainError("The delivery has no recipient to build a proof from; prepare it.")
    with transaction.atomic():
        _check_proof_quota(actor, wanted=len(chosen) * len(addresses))
        proofs = Proof.objects.bulk_create(
            [
                Proof(delivery=delivery, contact_id=m.contact_id, secondary_id=m.secondary_id,
                      address=address, requested_by=actor)
                for m in chosen for address in addresses
            ]
        )  # fmt: skip
        portal_services.record_audit(
            obj=delivery, action="proof", actor=actor, extra={"to": addresses, "count": len(proofs)}
        )
        from campaigns.tasks import send_proofs

        ids = [proof.pk for proof in proofs]
        transaction.on_commit(partial(send_proofs.delay, ids))
    return proofs


def proof_address_problems(delivery: Delivery, addresses: list[str]) -> list[str]:
    """Why each refused address may not receive proofs. Allowed: the portal users' own email
    addresses, addresses at ``DELIVERY_PROOF_DOMAINS`` and the exact
    ``DELIVERY_PROOF_ADDRESSES`` (for SMS and push, only the latter)."""
    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    listed = {address.lower() for address in settings.DELIVERY_PROOF_ADDRESSES}
    by_email = delivery.channel in (Channel.EMAIL, Channel.DIRECT_MAIL)
    own = Q()
    for address in addresses:
        own |= Q(email__iexact=address)
    users = {
        email.lower()
        for email in get_user_model()
        .objects.filter(own, is_active=True)
        .values_list("email", flat=True)
    }
    problems = []
    for address in addresses:
        lowered = address.lower()
        if lowered in listed:
            continue
        if not by_email:
            problems.append(
                f"“{address}” is not a test address (the administrator lists them in "
                "DELIVERY_PROOF_ADDRESSES)."
            )
            continue
        try:
            validate_email(address)
        except ValidationError:
            problems.append(f"“{address}” is not a valid email address.")
            continue
        domain = lowered.rpartition("@")[2]
        if lowered not in users and domain not in settings.DELIVERY_PROOF_DOMAINS:
            problems.append(
                f"“{address}” may not receive proofs: use a portal user's own address"
                + (
                    f" or an address at {', '.join(settings.DELIVERY_PROOF_DOMAINS)}."
                    if settings.DELIVERY_PROOF_DOMAINS
                    else "."
                )
            )
    return problems


def _check_proof_quota(actor: Any, *, wanted: int) -> None:
    """At most ``DELIVERY_PROOFS_PER_DAY`` proofs per requesting user over 24 hours. The
    user's row is locked while counting so that concurrent requests cannot both pass."""
    if actor is None or not getattr(actor, "pk", None):
        return
    from django.contrib.auth import get_user_model

    get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
    since = timezone.now() - timedelta(days=1)
    used = Proof.objects.filter(requested_by=actor, created_at__gte=since).count()
    allowed = settings.DELIVERY_PROOFS_PER_DAY
    if used + wanted > allowed:
        raise DomainError(
            f"At most {allowed} proofs per day: you have requested {used} in the last 24 hours "
            f"and this request would send {wanted}. Choose fewer addresses or recipients."
        )


def preview(*, delivery: Delivery, contact: Any) -> Rendered:
    """The message as ``contact`` would get it (its first message of the delivery, or one
    built for it when the delivery is not prepared or does not target it)."""
    message = (
        delivery.messages.filter(contact=contact)
        .select_related("contact__entity", "entity")
        .order_by("id")
        .first()
    )
    if message is None:
        message = Message(
            delivery=delivery,
            contact=contact,
            entity=contact.entity,
            channel=delivery.channel,
            address=contact.email,
        )
    renderer = Renderer(delivery, live=False)
    return renderer.render(renderer.recipient_of(message))


def send_proofs(proof_ids: list[int]) -> int:
    """Send the proofs not sent yet (idempotent), subject marked [Proof]: one renderer, one
    provider connection and one read of the sampled messages per delivery."""
    proofs = list(
        Proof.objects.filter(pk__in=proof_ids, sent_at=None)
        .select_related("delivery__campaign")
        .order_by("delivery_id", "id")
    )
    sent = 0
    for _delivery_id, group in groupby(proofs, key=lambda proof: proof.delivery_id):
        group = list(group)
        delivery = group[0].delivery
        renderer = Renderer(delivery, live=False)
        channel = Channel.EMAIL if delivery.channel == Channel.DIRECT_MAIL else delivery.channel
        provider = provider_for(channel)
        try:
            provider.open()
        except TemporaryError as exc:
            Proof.objects.filter(pk__in=[p.pk for p in group]).update(error=str(exc)[:500])
            continue
        messages = {
            (message.contact_id, message.secondary_id): message
            for message in delivery.messages.filter(
                contact_id__in={proof.contact_id for proof in group}
            ).select_related("contact__entity", "entity")
        }
        try:
            for proof in group:
                message = messages[proof.contact_id, proof.secondary_id]
                sent += _send_proof(proof, message, renderer, provider)
        finally:
            provider.close()
    return sent


def _send_proof(proof: Proof, message: Message, renderer: Renderer, provider: Any) -> int:
    try:
        rendered = renderer.render(renderer.recipient_of(message), address=proof.address)
        rendered.subject = f"[Proof] {rendered.subject}"
        rendered.headers = {"X-Portal-Proof": str(proof.pk)}
        provider.send(rendered)
    except (*RENDER_ERRORS, TemporaryError, PermanentError) as exc:
        Proof.objects.filter(pk=proof.pk).update(error=str(exc)[:500])
        return 0
    Proof.objects.filter(pk=proof.pk).update(sent_at=timezone.now(), error="")
    return 1


class DeliveryApprovalHandler:
    """How the approvals app handles a delivery waiting for approval before its send."""

    kind = "delivery"

    def approver_scope(self, obj: Delivery) -> approvals.ApproverScope:
        """Who decides, as they are when deciding: a child campaign's deliveries go to its
        local entity's approvers (the parent asked for approval, the entity runs the child);
        every other delivery to the central approvers."""
        if obj.campaign.kind == CampaignKind.CHILD:
            return approvals.ApproverScope(entity=obj.campaign.entity, roles=(Role.LOCAL_APPROVER,))
        return approvals.ApproverScope(
            entity=portal_services.central_entity(), roles=(Role.CENTRAL_APPROVER,)
        )

    def entity(self, obj: Delivery) -> Any:
        return obj.campaign.entity

    def title(self, obj: Delivery) -> str:
        return f"Delivery “{obj}” of {obj.campaign}"

    def summary(self, obj: Delivery) -> list[tuple[str, str]]:
        sendable = obj.messages.filter(status=MessageStatus.PENDING).count()
        return [
            ("Campaign", str(obj.campaign)),
            ("Channel", obj.get_channel_display()),
            ("Subject", obj.subject or "—"),
            ("Recipients", str(sendable)),
            ("Excluded", ", ".join(f"{k}: {v}" for k, v in obj.exclusions.items()) or "—"),
        ]

    def documents(self, obj: Delivery) -> list[tuple[str, str]]:
        return [("See the delivery", portal_services.absolute_url(self.detail_url(obj)))]

    def detail_url(self, obj: Delivery) -> str:
        from django.urls import reverse

        return reverse("campaigns:delivery", args=[obj.pk])

    def on_decided(self, *, obj: Delivery, request: Any, approved: bool, actor: Any,
                   comment: str) -> None:  # fmt: skip
        approval_decided(delivery=obj, approved=approved, actor=actor, comment=comment)

    def on_expired(self, *, obj: Delivery, request: Any) -> None:
        approval_decided(delivery=obj, approved=False, actor=None, comment="No decision in time.")
