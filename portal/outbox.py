"""The outbox pattern, once, for every outbox of the portal (notifications, webhook deliveries).

A change writes an outbox row in its own transaction; after the commit a Celery task sends
it. The row is the send's state machine and log:

    pending ──start_sending──▶ sending ──<done>──▶ sent / delivered
       ▲                          │
       └──schedule_retry (backoff)┤──mark_failed──▶ failed ──requeue (resend)──▶ pending
       └──release_stuck (its worker died)

``outbox_model`` gives a model its abstract base (the fields, the transitions and the
``due``/``stuck`` queryset); ``Sender`` is the one sending loop: claim rows with
``select_for_update(skip_locked=True)`` in a short transaction, attempt outside any
transaction (network), record the answer in another (done, retry with exponential backoff, or
failed after the last attempt), every transition audited. A model or a sender adds only what
is its own: what an attempt does (email, signed POST) and what it records of the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import models, transaction
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

logger = logging.getLogger(__name__)

PENDING, SENDING, FAILED = "pending", "sending", "failed"
STUCK_MESSAGE = "The worker stopped while sending; sent again."


class OutboxQuerySet(models.QuerySet):
    def due(self, *, now: Any, grace: Any = timedelta(0)) -> OutboxQuerySet:
        """Pending rows whose send was due (``grace`` ago: lost or never enqueued)."""
        return self.filter(status=PENDING, next_attempt_at__lte=now - grace)

    def stuck(self, *, now: Any, after: Any) -> OutboxQuerySet:
        """Rows claimed by a worker that did not finish (it died mid-send)."""
        return self.filter(status=SENDING, updated_at__lte=now - after)


def outbox_model(
    *, name: str, statuses: type[models.TextChoices], done: str, done_transition: str,
    done_at: str, resend_permission: str,
) -> type[models.Model]:  # fmt: skip
    """An abstract base for one outbox model: its status field (``statuses``, with pending,
    sending and failed, plus ``done``), attempts, last error, times, and its transitions.

    Each model gets its own base (django-fsm binds a transition method to one field). The
    success transition is named ``done_transition`` and stamps the model's ``done_at`` field;
    the model keeps what an attempt's answer records in ``record_answer``.
    """

    def start_sending(self: Any) -> None:
        self.attempts += 1

    def finish(self: Any, **answer: Any) -> None:
        setattr(self, done_at, timezone.now())
        self.last_error = ""
        self.record_answer(**answer)

    def schedule_retry(self: Any, *, error: str, delay_seconds: int, **answer: Any) -> None:
        self.last_error = error
        self.record_answer(**answer)
        self.next_attempt_at = timezone.now() + timedelta(seconds=delay_seconds)

    def mark_failed(self: Any, *, error: str, **answer: Any) -> None:
        self.last_error = error
        self.record_answer(**answer)

    def release_stuck(self: Any) -> None:
        self.last_error = STUCK_MESSAGE
        self.next_attempt_at = timezone.now()

    def requeue(self: Any) -> None:
        self.attempts = 0
        self.next_attempt_at = timezone.now()

    def record_answer(self: Any, **answer: Any) -> None:
        """What an attempt answered, kept on the row (nothing by default)."""

    finish.__name__ = finish.__qualname__ = done_transition
    status = FSMField(max_length=16, choices=statuses.choices, default=PENDING, protected=True)
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": "An outbox row: its send's state machine and log (portal/outbox.py).",
        "Meta": type("Meta", (), {"abstract": True}),
        "status": status,
        "attempts": models.PositiveIntegerField(default=0),
        "last_error": models.TextField(blank=True),
        "created_at": models.DateTimeField(default=timezone.now, db_index=True),
        "updated_at": models.DateTimeField(auto_now=True),
        "next_attempt_at": models.DateTimeField(default=timezone.now),
        "record_answer": record_answer,
        "start_sending": transition(field=status, source=PENDING, target=SENDING)(start_sending),
        done_transition: transition(field=status, source=SENDING, target=done)(finish),
        "schedule_retry": transition(field=status, source=SENDING, target=PENDING)(schedule_retry),
        "mark_failed": transition(field=status, source=SENDING, target=FAILED)(mark_failed),
        "release_stuck": transition(field=status, source=SENDING, target=PENDING)(release_stuck),
        "requeue": transition(
            field=status,
            source=FAILED,
            target=PENDING,
            permission=resend_permission,
            custom={"label": "Resend"},
        )(requeue),
    }
    return type(name, (FSMModelMixin, models.Model), namespace)


@dataclass(frozen=True)
class Attempt:
    """What one attempt gave: no error (done), an error to retry, or a ``final`` one (retrying
    would not help); ``answer`` is recorded on the row (``record_answer``)."""

    error: str = ""
    final: bool = False
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    status: str
    retry_in: int | None = None


class Sender:
    """The sending loop of one outbox. A subclass sets the model, its success transition and
    outcome, its settings, ``attempt`` (the network, called outside any transaction) and
    ``enqueue`` (hand row ids to the broker; an outage loses nothing, the sweep comes back)."""

    model: type[models.Model]
    done_transition: str
    done_outcome: str
    related: tuple[str, ...] = ()  # loaded with the claimed rows (never locked with them)
    resend_comment = "Resent"

    def max_attempts(self) -> int:
        raise NotImplementedError

    def retry_base_seconds(self) -> int:
        raise NotImplementedError

    def stuck_after(self) -> timedelta:
        raise NotImplementedError

    def attempt(self, row: Any) -> Attempt:
        raise NotImplementedError

    def enqueue(self, ids: Iterable[int]) -> None:
        raise NotImplementedError

    # The loop --------------------------------------------------------------------------

    def claim(self, queryset: models.QuerySet, limit: int) -> list[Any]:
        """Pending rows of ``queryset`` moved to sending in one short transaction; rows another
        worker holds are skipped, not waited for."""
        from portal.services import transition

        with transaction.atomic():
            rows = list(
                queryset.filter(status=PENDING)
                .select_related(*self.related)
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("next_attempt_at", "pk")[:limit]
            )
            for row in rows:
                transition(obj=row, name="start_sending")
        return rows

    def run(self, queryset: models.QuerySet, *, limit: int) -> list[Outcome]:
        """Claim up to ``limit`` pending rows of ``queryset``, attempt each (outside any
        transaction), record each answer."""
        return [self.record(row.pk, self.attempt(row)) for row in self.claim(queryset, limit)]

    def deliver(self, row_id: int) -> Outcome:
        """Send one pending row; safe to call twice (the second call is a no-op)."""
        outcomes = self.run(self.model.objects.filter(pk=row_id), limit=1)
        return outcomes[0] if outcomes else Outcome("skipped")

    def send_due(self, *, limit: int = 100) -> list[Outcome]:
        """Send the pending rows whose time has come (a worker's batch, without the broker)."""
        return self.run(self.model.objects.due(now=timezone.now()), limit=limit)

    def record(self, row_id: int, attempt: Attempt) -> Outcome:
        """Record an attempt: done; failed when final or out of attempts; else a retry after
        ``retry_base_seconds * 2 ** (attempts - 1)``."""
        from portal.services import transition

        with transaction.atomic():
            row = self.model.objects.select_for_update().get(pk=row_id)
            if not attempt.error:
                transition(obj=row, name=self.done_transition, **attempt.answer)
                return Outcome(self.done_outcome)
            error = attempt.error
            if attempt.final or row.attempts >= self.max_attempts():
                transition(
                    obj=row, name="mark_failed", error=error, extra={"error": error},
                    **attempt.answer,
                )  # fmt: skip
                return Outcome("failed")
            delay = self.retry_base_seconds() * 2 ** (row.attempts - 1)
            transition(
                obj=row, name="schedule_retry", error=error, delay_seconds=delay,
                extra={"error": error, "retry_in": delay}, **attempt.answer,
            )  # fmt: skip
            return Outcome("retry", retry_in=delay)

    # Operators and beat ----------------------------------------------------------------

    def resend(self, row: Any, *, actor: Any) -> Any:
        """Put a failed row back in the queue (an operator's decision, checked and audited)."""
        from portal.services import transition

        with transaction.atomic():
            locked = self.model.objects.select_for_update().get(pk=row.pk)
            transition(obj=locked, name="requeue", actor=actor, comment=self.resend_comment)
            transaction.on_commit(lambda: self.enqueue([locked.pk]))
        return locked

    def sweep(self, *, batch_size: int = 500) -> dict[str, int]:
        """Beat: release sends abandoned by a dead worker and enqueue pending rows overdue by
        a minute (lost by the broker, or never enqueued)."""
        from portal.services import transition

        now = timezone.now()
        released: list[int] = []
        with transaction.atomic():
            stuck = self.model.objects.stuck(now=now, after=self.stuck_after())
            for row in stuck.select_for_update(skip_locked=True)[:batch_size]:
                transition(obj=row, name="release_stuck")
                released.append(row.pk)
        due = list(
            self.model.objects.due(now=now, grace=timedelta(minutes=1))
            .exclude(pk__in=released)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        self.enqueue([*released, *due])
        return {"released": len(released), "enqueued": len(released) + len(due)}


def enqueue_each(task: Callable[[int], Any], ids: Iterable[int], noun: str) -> None:
    """``task.delay(id)`` for each id; a broker outage is logged, the rows stay pending and
    the sweep enqueues them later."""
    for row_id in ids:
        try:
            task(row_id)
        except Exception:  # broker down: the sweep picks the row up later
            logger.exception("Could not enqueue %s %s", noun, row_id)
