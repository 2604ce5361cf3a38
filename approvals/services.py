"""Approval services: open requests, decide (first decision wins), signed email links,
reminders and expiry. What a decision does to the approved object is the object's app's
business, through a registered handler."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone

from approvals.choices import DecisionChannel, RequestState
from approvals.models import ApprovalLink, ApprovalRequest, ApproverRight
from portal import bearer
from portal import services as portal_services
from portal.exceptions import DomainError
from portal.models import Entity, Notification

logger = logging.getLogger(__name__)
User = get_user_model()
LINK_SALT = "approvals.link.v1"


@dataclass(frozen=True)
class ApproverScope:
    """Who decides an object: the active holders of one of ``roles`` in ``entity``, resolved
    when they decide or open their inbox, not when the request was opened."""

    entity: Entity
    roles: tuple[str, ...]


class ApprovalHandler(Protocol):
    """What the approvals app needs to know about one kind of approved object."""

    kind: str

    def approver_scope(self, obj: Any) -> ApproverScope: ...
    def entity(self, obj: Any) -> Entity: ...
    def title(self, obj: Any) -> str: ...
    def summary(self, obj: Any) -> list[tuple[str, str]]: ...
    def documents(self, obj: Any) -> list[tuple[str, str]]: ...
    def detail_url(self, obj: Any) -> str: ...
    def on_decided(
        self, *, obj: Any, request: ApprovalRequest, approved: bool, actor: Any, comment: str
    ) -> None: ...
    def on_expired(self, *, obj: Any, request: ApprovalRequest) -> None: ...


_handlers: dict[str, ApprovalHandler] = {}


def register_handler(model: type[models.Model], handler: ApprovalHandler) -> None:
    _handlers[model._meta.label_lower] = handler


def handler_for(obj: models.Model) -> ApprovalHandler:
    try:
        return _handlers[obj._meta.label_lower]
    except KeyError:
        raise LookupError(f"No approval handler for {obj._meta.label}.") from None


class AlreadyDecided(DomainError):
    """A decision arrived after another one; says who decided and when."""

    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        if request.state in (RequestState.APPROVED, RequestState.REJECTED):
            decider = request.decided_by
            who = (decider.get_full_name() or decider.get_username()) if decider else "the system"
            when = timezone.localtime(request.decided_at).strftime("%Y-%m-%d %H:%M")
            message = f"This request was already {request.state} by {who} on {when}."
        else:
            state = request.get_state_display().lower()
            message = f"This request is {state}: it can no longer be decided."
        super().__init__(message)


class NotAnApprover(PermissionDenied):
    """The actor does not hold the right to decide the request (now)."""


NO_RIGHT = (
    "This link was sent to an approver who no longer holds the right to decide this request "
    "(their role or membership was removed, or their account deactivated). Nothing was decided."
)


class InvalidLink(DomainError):
    """An approval link that cannot be used: tampered with, expired or already used."""

    def __init__(self, message: str, *, reason: str, link: ApprovalLink | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.link = link


# --------------------------------------------------------------------------------------------
# Links
# --------------------------------------------------------------------------------------------


def link_token(link: ApprovalLink) -> str:
    """The signed token of a link. It is a bearer secret: it goes only into the email sent to
    the link's approver (``approval_link_secret``), never into the outbox or a page."""
    return signing.dumps({"l": link.pk, "n": str(link.nonce)}, salt=LINK_SALT, compress=True)


def link_url(token: str) -> str:
    return f"{settings.SITE_URL}{reverse('approvals:link', args=[token])}"


def approval_link_secret(*, notification: Notification, link: int) -> str:
    """The token of ``link``, derived when its email is sent (``portal.bearer`` kind
    ``approval_link``). Refused when the link is gone, belongs to someone else than the
    email's recipient, or its approver no longer holds the right to decide."""
    found = ApprovalLink.objects.select_related("request", "approver").filter(pk=link).first()
    if found is None:
        raise bearer.SecretUnavailable("the approval link no longer exists.")
    approver = found.approver
    if (
        notification.recipient_id != approver.pk
        or approver.email.strip().lower() != notification.recipient_email.strip().lower()
    ):
        raise bearer.SecretUnavailable("the approval link belongs to another address.")
    if not may_decide(found.request, approver):
        raise bearer.SecretUnavailable(
            f"{approver.get_username()} no longer holds the right to decide this request."
        )
    return link_token(found)


def resolve_link(token: str) -> ApprovalLink:
    """The link a token stands for; raises ``InvalidLink`` saying why it cannot be used."""
    max_age = timedelta(days=settings.APPROVAL_LINK_MAX_AGE_DAYS)
    try:
        payload = signing.loads(token, salt=LINK_SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise InvalidLink("This approval link has expired.", reason="expired") from None
    except signing.BadSignature:
        raise InvalidLink(
            "This approval link is not valid: it may have been altered or cut.", reason="tampered"
        ) from None
    link = (
        ApprovalLink.objects.select_related("request", "approver")
        .filter(pk=payload.get("l"), nonce=payload.get("n"))
        .first()
    )
    if link is None:
        raise InvalidLink("This approval link is not valid.", reason="unknown")
    if link.used_at is not None:
        raise InvalidLink(
            "This approval link was already used on "
            f"{timezone.localtime(link.used_at):%Y-%m-%d %H:%M}.",
            reason="used",
            link=link,
        )
    if link.expires_at < timezone.now() and link.request.state == RequestState.PENDING:
        raise InvalidLink("This approval link has expired.", reason="expired", link=link)
    if not may_decide(link.request, link.approver):
        raise InvalidLink(NO_RIGHT, reason="no_right", link=link)
    return link


def record_refused_link(*, link: ApprovalLink | None, reason: str, method: str) -> None:
    """Journal a refused use of a link (on its request when we know it)."""
    if link is None:
        logger.warning("Refused approval link (%s, %s)", reason, method)
        return
    portal_services.record_audit(
        obj=link.request,
        action="link_refused",
        actor=link.approver,
        comment=f"Link refused ({reason}) on {method}.",
        extra={"reason": reason, "method": method},
    )


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def _notify_approver(request: ApprovalRequest, link: ApprovalLink, *, reminder: bool) -> None:
    """Email the link's approver; the outbox row holds a placeholder, not the link's token."""
    handler = handler_for(request.subject)
    sealed = bearer.Sealed(token=bearer.Secret("approval_link", {"link": link.pk}))
    portal_services.notify(
        recipients=[link.approver],
        template="approval_reminder" if reminder else "approval_request",
        sealed=sealed,
        context={
            "request": request,
            "link_url": link_url(sealed["token"]),
            "rows": handler.summary(request.subject),
            "documents": handler.documents(request.subject),
            "deadline": timezone.localtime(request.deadline).strftime("%Y-%m-%d %H:%M"),
        },
        related=request,
        entity=request.entity,
    )


def request_approval(
    *,
    obj: models.Model,
    requester: Any,
    deadline: Any,
    auto_approve_on_expiry: bool = False,
    reminder_interval_hours: int | None = None,
    notify: bool = True,
) -> ApprovalRequest:
    """Open a pending request on ``obj`` and email each approver a personal link.

    Call inside the transaction that makes the object await a decision.
    """
    handler = handler_for(obj)
    existing = ApprovalRequest.objects.for_object(obj).pending().first()
    if existing:
        return existing
    scope = handler.approver_scope(obj)
    request = ApprovalRequest.objects.create(
        kind=handler.kind,
        content_type=ContentType.objects.get_for_model(obj),
        object_id=str(obj.pk),
        entity=handler.entity(obj),
        title=handler.title(obj)[:255],
        requester=requester if getattr(requester, "is_authenticated", False) else None,
        deadline=deadline,
        auto_approve_on_expiry=auto_approve_on_expiry,
        reminder_interval_hours=reminder_interval_hours or settings.APPROVAL_REMINDER_HOURS,
    )
    ApproverRight.objects.bulk_create(
        ApproverRight(request=request, entity=scope.entity, role=role) for role in scope.roles
    )
    approvers = list(current_approvers(request))
    request.approvers.set(approvers)  # who is emailed now; rights stay with the roles
    portal_services.record_audit(
        obj=request,
        action="request",
        actor=requester,
        to_state=RequestState.PENDING,
        extra={"approvers": [user.get_username() for user in approvers]},
    )
    for approver in approvers:
        link = ApprovalLink.objects.create(
            request=request, approver=approver, expires_at=request.deadline
        )
        if notify:
            _notify_approver(request, link, reminder=False)
    return request


def current_approvers(request: ApprovalRequest) -> models.QuerySet:
    """The active users who hold the right to decide ``request`` now."""
    rights = ApproverRight.objects.filter(
        request=request,
        entity__memberships__user=models.OuterRef("pk"),
        entity__memberships__role=models.F("role"),
    )
    return User.objects.filter(models.Exists(rights), is_active=True).order_by("pk")


def may_decide(request: ApprovalRequest, user: Any) -> bool:
    """Whether ``user`` holds the right to decide ``request`` now: the roles its approver
    rights name, as they are at this moment (a removed approver no longer may, an added one
    may), and superusers. Having been emailed a link grants nothing by itself."""
    return ApprovalRequest.objects.filter(pk=request.pk).decidable_by(user).exists()


def _record_attempt(
    *, request: ApprovalRequest, action: str, actor: Any, approve: bool, via: str, why: str
) -> None:
    """Journal a decision attempt that did not decide (outside the rolled-back work)."""
    portal_services.record_audit(
        obj=request,
        action=action,
        actor=actor,
        comment=why,
        extra={"wanted": "approve" if approve else "reject", "via": via},
    )


def refuse_decision(*, request: ApprovalRequest, actor: Any, approve: bool, via: str) -> None:
    """Journal and refuse a decision by someone who does not hold the right to decide."""
    _record_attempt(
        request=request,
        action="decision_refused",
        actor=actor,
        approve=approve,
        via=via,
        why="Refused: not an approver of this request at the time of the decision.",
    )
    raise NotAnApprover("You are not an approver of this request.")


def record_lost_decision(*, request: ApprovalRequest, actor: Any, approve: bool, via: str) -> None:
    """Journal a decision that came after another one (it changed nothing)."""
    _record_attempt(
        request=request,
        action="decision_lost",
        actor=actor,
        approve=approve,
        via=via,
        why=str(AlreadyDecided(request)),
    )


def decide(
    *,
    request: ApprovalRequest,
    actor: Any,
    approve: bool,
    comment: str = "",
    via: str = DecisionChannel.PORTAL,
    link: ApprovalLink | None = None,
) -> ApprovalRequest:
    """Approve or reject a pending request; the first decision wins.

    The row lock serialises concurrent decisions: the second one finds the request decided
    and gets ``AlreadyDecided`` naming who decided. The actor must hold the right to decide
    at this moment (``NotAnApprover`` otherwise). Both refusals are journalled. A rejection
    needs a comment.
    """
    comment = (comment or "").strip()
    try:
        with transaction.atomic():
            request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
            if request.state != RequestState.PENDING:
                raise AlreadyDecided(request)
            if actor is not None and not may_decide(request, actor):
                raise NotAnApprover("You are not an approver of this request.")
            if not approve and not comment:
                raise DomainError("Say why you reject the request: the comment is sent back.")
            _decision_transition(request, actor, approve, comment, via)
            if link is not None:
                ApprovalLink.objects.filter(pk=link.pk).update(used_at=timezone.now())
            handler_for(request.subject).on_decided(
                obj=request.subject,
                request=request,
                approved=approve,
                actor=actor,
                comment=comment,
            )
    except AlreadyDecided as exc:  # journalled after the rollback, so that the entry stays
        record_lost_decision(request=exc.request, actor=actor, approve=approve, via=via)
        raise
    except NotAnApprover:
        refuse_decision(request=request, actor=actor, approve=approve, via=via)
    return request


def _decision_transition(
    request: ApprovalRequest, actor: Any, approve: bool, comment: str, via: str
) -> None:
    portal_services.transition(
        obj=request,
        name="approve" if approve else "reject",
        actor=actor,
        comment=comment,
        check_permission=False,
        extra={"via": via},
        by=actor,
        note=comment,
        via=via,
    )


def decide_by_link(*, token: str, approve: bool, comment: str = "") -> ApprovalRequest:
    """The decision POSTed from an emailed link: the link stands for its approver."""
    link = resolve_link(token)
    return decide(
        request=link.request,
        actor=link.approver,
        approve=approve,
        comment=comment,
        via=DecisionChannel.EMAIL,
        link=link,
    )


def cancel_requests_for(*, obj: models.Model, actor: Any, reason: str) -> int:
    """Withdraw the pending requests on an object (it was cancelled)."""
    cancelled = 0
    for request in ApprovalRequest.objects.for_object(obj).pending().select_for_update():
        portal_services.transition(
            obj=request,
            name="cancel",
            actor=actor,
            comment=reason,
            check_permission=False,
            reason=reason,
        )
        cancelled += 1
    return cancelled


def send_reminders(*, now: Any = None) -> int:
    """Remind approvers of pending requests, every ``reminder_interval_hours``."""
    now = now or timezone.now()
    sent = 0
    for request_id in (
        ApprovalRequest.objects.pending().filter(deadline__gt=now).values_list("pk", flat=True)
    ):
        with transaction.atomic():
            request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
            last = request.last_reminder_at or request.created_at
            if request.state != RequestState.PENDING or now < last + timedelta(
                hours=request.reminder_interval_hours
            ):
                continue
            for approver in current_approvers(request):  # rights as they are now
                link, _ = ApprovalLink.objects.get_or_create(
                    request=request, approver=approver, defaults={"expires_at": request.deadline}
                )
                if link.used_at is None:
                    _notify_approver(request, link, reminder=True)
                    sent += 1
            request.last_reminder_at = now
            request.reminders_sent += 1
            request.save(update_fields=["last_reminder_at", "reminders_sent"])
            portal_services.record_audit(
                obj=request, action="remind", comment=f"Reminder #{request.reminders_sent}"
            )
    return sent


def expire_overdue(*, now: Any = None) -> dict[str, int]:
    """Apply the configured default to requests past their deadline and tell the requester."""
    now = now or timezone.now()
    counts = {"expired": 0, "approved": 0}
    for request_id in (
        ApprovalRequest.objects.pending().filter(deadline__lt=now).values_list("pk", flat=True)
    ):
        outcome = apply_deadline(request_id=request_id)
        if outcome:
            counts[outcome] += 1
    return counts


def apply_deadline(*, request_id: int) -> str | None:
    """Settle a pending request as its deadline says (approved automatically, or expired);
    returns the outcome, or None when it was already decided."""
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        if request.state != RequestState.PENDING:
            return None
        if request.auto_approve_on_expiry:
            note = "Approved automatically at the deadline."
            portal_services.transition(
                obj=request,
                name="approve",
                comment=note,
                by=None,
                note=note,
                via=DecisionChannel.SYSTEM,
            )
            handler_for(request.subject).on_decided(
                obj=request.subject, request=request, approved=True, actor=None, comment=note
            )
            return "approved"
        portal_services.transition(obj=request, name="expire")
        handler_for(request.subject).on_expired(obj=request.subject, request=request)
        return "expired"


def pending_for(user: Any) -> models.QuerySet:
    """The requests waiting for this user's decision (the approvals inbox), soonest first:
    those the user holds the right to decide now."""
    queryset = ApprovalRequest.objects.pending().decidable_by(user)
    return queryset.select_related("entity", "requester").order_by("deadline")


def fill_missing_approver_rights(requests: Iterable[ApprovalRequest] | None = None) -> int:
    """Give pending requests opened before approver rights existed the rights their
    handler names (run after ``migrate``); returns how many requests were filled."""
    if requests is None:
        requests = ApprovalRequest.objects.pending().filter(approver_rights__isnull=True)
    filled = 0
    for request in requests:
        subject = request.subject
        if subject is None or subject._meta.label_lower not in _handlers:
            logger.warning("Approval request %s has no handler: left to superusers", request.pk)
            continue
        scope = handler_for(subject).approver_scope(subject)
        ApproverRight.objects.bulk_create(
            [ApproverRight(request=request, entity=scope.entity, role=r) for r in scope.roles],
            ignore_conflicts=True,
        )
        filled += 1
    return filled
