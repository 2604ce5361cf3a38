"""Portal services: audited transitions, entity rights, memberships and the notifications outbox.

Every function here is one unit of work; views, admin actions, tasks and commands call them and
never re-implement their rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMultiAlternatives
from django.db import models, transaction
from django.db.models import Q
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils import timezone
from django_fsm import can_proceed, has_transition_perm
from guardian.models import GroupObjectPermission

from portal import bearer, outbox
from portal.choices import CENTRAL_ROLES, EntityKind, NotificationStatus
from portal.exceptions import DomainError
from portal.models import AuditLog, Entity, Membership, Notification
from portal.roles import (
    ENTITY_ACCESS_PERM,
    ENTITY_GROUP_PREFIX,
    ROLE_GROUP_PREFIX,
    ROLE_PERMISSIONS,
    role_group_name,
)

logger = logging.getLogger(__name__)
User = get_user_model()


# --------------------------------------------------------------------------------------------
# Audit log and transitions
# --------------------------------------------------------------------------------------------


def owning_entity(obj: models.Model) -> Entity | None:
    """The entity an object belongs to, used to scope who may read its audit entries."""
    if isinstance(obj, Entity):
        return obj
    entity = getattr(obj, "owning_entity", None)
    return entity if isinstance(entity, Entity) else None


def record_audit(
    *,
    obj: models.Model,
    action: str,
    actor: Any = None,
    from_state: str = "",
    to_state: str = "",
    comment: str = "",
    extra: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Append an audit entry for ``obj`` in the caller's transaction."""
    actor = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLog.objects.create(
        actor=actor,
        actor_repr=actor.get_username() if actor else "",
        entity=owning_entity(obj),
        content_type=ContentType.objects.get_for_model(obj, for_concrete_model=False),
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        action=action,
        from_state=from_state or "",
        to_state=to_state or "",
        comment=comment,
        extra=dict(extra or {}),
    )


def _state_label(field: Any, value: str) -> str:
    return str(dict(field.flatchoices).get(value, value))


def transition(
    *,
    obj: models.Model,
    name: str,
    actor: Any = None,
    comment: str = "",
    extra: Mapping[str, Any] | None = None,
    check_permission: bool = True,
    **kwargs: Any,
) -> AuditLog:
    """Run the django-fsm transition ``name`` on ``obj``, save it and audit it.

    The caller owns the transaction (and the row lock). A transition that is not allowed from
    the current state raises ``DomainError``; one the actor may not perform raises
    ``PermissionDenied``. ``actor=None`` means the system (a task or a deadline).
    """
    method = getattr(obj, name, None)
    meta = getattr(method, "_django_fsm", None)
    if meta is None:
        raise ValueError(f"{name!r} is not a transition of {type(obj).__name__}.")
    field = meta.field if not isinstance(meta.field, str) else obj._meta.get_field(meta.field)
    source = field.get_state(obj)
    spec = meta.get_transition(source)
    label = (spec.custom.get("label") if spec else None) or name.replace("_", " ")
    noun = obj._meta.verbose_name
    if not can_proceed(method):
        state = _state_label(field, source)
        raise DomainError(f"Cannot {label.lower()} {noun} “{obj}” while it is {state.lower()}.")
    if actor is not None and check_permission and not has_transition_perm(method, actor):
        raise PermissionDenied(f"You may not {label.lower()} this {noun}.")
    method(**kwargs)
    obj.save()
    return record_audit(
        obj=obj,
        action=name,
        actor=actor,
        from_state=source,
        to_state=field.get_state(obj),
        comment=comment,
        extra=extra,
    )


# --------------------------------------------------------------------------------------------
# Entities, memberships and rights
# --------------------------------------------------------------------------------------------


def sync_role_groups() -> None:
    """Create one group per role holding that role's model permissions (idempotent)."""
    for role, perm_names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role_group_name(role))
        lookups = Q(pk__in=[])
        for perm_name in perm_names:
            app_label, codename = perm_name.split(".", 1)
            lookups |= Q(content_type__app_label=app_label, codename=codename)
        group.permissions.set(Permission.objects.filter(lookups))


def ensure_entity_group(entity: Entity) -> Group:
    """Give the entity its own group, the holder of its object rights."""
    if entity.group_id:
        return entity.group
    group, _ = Group.objects.get_or_create(name=f"{ENTITY_GROUP_PREFIX}{entity.code}")
    Entity.objects.filter(pk=entity.pk).update(group=group)
    entity.group = group
    return group


def _access_permission() -> Permission:
    app_label, codename = ENTITY_ACCESS_PERM.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def sync_entity_rights(entity: Entity) -> None:
    """Grant access on each entity of the subtree to its own group and its ancestors' groups.

    An operator of a region therefore sees the region's local entities; central operators see
    every entity. Rights of groups no longer above a moved entity are removed.
    """
    permission = _access_permission()
    content_type = ContentType.objects.get_for_model(Entity)
    for node in entity.descendants():
        expected = set(node.ancestors().exclude(group=None).values_list("group_id", flat=True))
        granted = GroupObjectPermission.objects.filter(
            permission=permission, content_type=content_type, object_pk=str(node.pk)
        )
        current = set(granted.values_list("group_id", flat=True))
        granted.filter(group_id__in=current - expected).delete()
        GroupObjectPermission.objects.bulk_create(
            [
                GroupObjectPermission(
                    group_id=group_id,
                    permission=permission,
                    content_type=content_type,
                    object_pk=str(node.pk),
                )
                for group_id in expected - current
            ]
        )


@transaction.atomic
def save_entity(
    *,
    code: str,
    name: str,
    kind: str = EntityKind.LOCAL,
    parent: Entity | None = None,
    contact_email: str = "",
    active: bool = True,
    sender_name: str | None = None,
    sender_address: str | None = None,
    reply_to: str | None = None,
    postal_address: str | None = None,
) -> Entity:
    """Create or update an entity by code (validated; rights follow through signals). The
    sender identity fields left at None keep their value."""
    entity = Entity.objects.filter(code=code).first() or Entity(code=code)
    entity.name = name
    entity.kind = kind
    entity.parent = parent
    entity.contact_email = contact_email
    entity.active = active
    identity = {"sender_name": sender_name, "sender_address": sender_address,
                "reply_to": reply_to, "postal_address": postal_address}  # fmt: skip
    for field, value in identity.items():
        if value is not None:
            setattr(entity, field, value)
    entity.full_clean()
    entity.save()
    return entity


def sync_user_access(user: Any) -> None:
    """Put the user in exactly the entity and role groups its memberships call for."""
    memberships = list(Membership.objects.filter(user=user).select_related("entity"))
    wanted = {ensure_entity_group(m.entity).pk for m in memberships}
    for role in {m.role for m in memberships}:
        wanted.add(Group.objects.get_or_create(name=role_group_name(role))[0].pk)
    managed = user.groups.filter(
        Q(name__startswith=ENTITY_GROUP_PREFIX) | Q(name__startswith=ROLE_GROUP_PREFIX)
    )
    current = set(managed.values_list("pk", flat=True))
    user.groups.remove(*(current - wanted))
    user.groups.add(*(wanted - current))
    if any(m.role in CENTRAL_ROLES for m in memberships) and not user.is_staff:
        # The Django admin is the central team's workspace.
        User.objects.filter(pk=user.pk).update(is_staff=True)
        user.is_staff = True


@transaction.atomic
def add_membership(*, user: Any, entity: Entity, role: str, actor: Any = None) -> Membership:
    """Give ``user`` a role in ``entity`` (idempotent), audited."""
    existing = Membership.objects.filter(user=user, entity=entity, role=role).first()
    if existing:
        return existing
    membership = Membership(user=user, entity=entity, role=role)
    membership.full_clean()
    membership.save()
    record_audit(
        obj=entity,
        action="add_membership",
        actor=actor,
        comment=f"{user.get_username()} became {membership.get_role_display()}",
    )
    return membership


def check_may_act_for(*, actor: Any, entity: Entity, perm: str) -> None:
    """The actor holds ``perm`` and may act for ``entity`` (an entity they belong to or
    that is below one they belong to)."""
    if not actor.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")
    if not Entity.objects.visible_to(actor).filter(pk=entity.pk).exists():
        raise PermissionDenied("You may not act for this entity.")


def users_with_role(*, entity: Entity, roles: Iterable[str]) -> models.QuerySet:
    """Active users holding one of ``roles`` in ``entity``."""
    return User.objects.filter(
        is_active=True, memberships__entity=entity, memberships__role__in=list(roles)
    ).distinct()


def absolute_url(path: str) -> str:
    """A portal path as a full URL for emails (``SITE_URL`` + path)."""
    return f"{settings.SITE_URL}{path}"


def central_entity() -> Entity:
    entity = Entity.objects.filter(kind=EntityKind.CENTRAL).first()
    if entity is None:
        raise DomainError("No central entity exists yet; create it first.")
    return entity


# --------------------------------------------------------------------------------------------
# Notifications outbox
# --------------------------------------------------------------------------------------------


def _render_optional(template_name: str, context: Mapping[str, Any]) -> str:
    try:
        return render_to_string(template_name, dict(context))
    except TemplateDoesNotExist:
        return ""


def enqueue_notifications(notification_ids: Iterable[int]) -> None:
    """Hand notifications to the broker. A broker outage loses nothing: the rows stay pending
    and the periodic sweep enqueues them again."""
    from portal.tasks import send_notification

    outbox.enqueue_each(send_notification.delay, notification_ids, "notification")


def notify(
    *,
    recipients: Iterable[Any],
    template: str,
    context: Mapping[str, Any] | None = None,
    related: models.Model | None = None,
    entity: Entity | None = None,
    sealed: bearer.Sealed | None = None,
) -> list[Notification]:
    """Write one outbox row per distinct recipient (users or email addresses) in the current
    transaction and enqueue the sends after it commits.

    Templates: ``emails/<template>.subject.txt``, ``emails/<template>.txt`` and optionally
    ``emails/<template>.html``. A secret that grants access goes in the context as its
    ``sealed`` placeholder, never as itself: the sending task derives it (``portal.bearer``).
    """
    base_context = {
        "site_url": settings.SITE_URL,
        "site_name": settings.SITE_NAME,
        "related": related,
        **(context or {}),
    }
    content_type = (
        ContentType.objects.get_for_model(related, for_concrete_model=False) if related else None
    )
    rows: list[Notification] = []
    seen: set[str] = set()
    for recipient in recipients:
        user = recipient if isinstance(recipient, User) else None
        email = (user.email if user else str(recipient)).strip()
        if not email or email.lower() in seen or (user and not user.is_active):
            continue
        seen.add(email.lower())
        ctx = {**base_context, "recipient": user, "recipient_email": email}
        subject = " ".join(render_to_string(f"emails/{template}.subject.txt", ctx).split())
        rows.append(
            Notification(
                recipient=user,
                recipient_email=email,
                entity=entity or (owning_entity(related) if related else None),
                subject=subject[:255],
                body_text=render_to_string(f"emails/{template}.txt", ctx),
                body_html=_render_optional(f"emails/{template}.html", ctx),
                secret_refs=sealed.as_json() if sealed else {},
                content_type=content_type,
                object_id=str(related.pk) if related else "",
                kind=template,
            )
        )
    created = Notification.objects.bulk_create(rows)
    ids = [row.pk for row in created]
    if ids:
        transaction.on_commit(partial(enqueue_notifications, ids))
    return created


def queue_email(
    *,
    to: str,
    subject: str,
    body_text: str,
    body_html: str = "",
    recipient: Any = None,
    kind: str = "",
    sealed: bearer.Sealed | None = None,
) -> Notification:
    """Put an already rendered email in the outbox (e.g. a password reset), its secrets
    rendered as the ``sealed`` placeholders."""
    notification = Notification.objects.create(
        recipient=recipient,
        recipient_email=to,
        subject=" ".join(subject.split())[:255],
        body_text=body_text,
        body_html=body_html,
        secret_refs=sealed.as_json() if sealed else {},
        kind=kind,
    )
    transaction.on_commit(partial(enqueue_notifications, [notification.pk]))
    return notification


def password_reset_secret(*, notification: Notification, user: int) -> str:
    """The reset token of the account a reset email was written for, minted at send time.

    Refused when the account can no longer reset its password by this address (deactivated,
    password login disabled, address changed since the request).
    """
    from django.contrib.auth.tokens import default_token_generator

    account = User.objects.filter(pk=user).first()
    address = getattr(account, User.get_email_field_name(), "") if account else ""
    if (
        account is None
        or not account.is_active
        or not account.has_usable_password()
        or notification.recipient_id != account.pk
        or (address or "").strip().lower() != notification.recipient_email.strip().lower()
    ):
        raise bearer.SecretUnavailable(
            "the account no longer matches this password-reset email; ask for a new one."
        )
    return default_token_generator.make_token(account)


DeliveryOutcome = outbox.Outcome


def _send_email(notification: Notification) -> None:
    """Hand the email to the transport, its secrets derived now (they exist only in it)."""
    subject, body_text, body_html = bearer.reveal(notification)
    message = EmailMultiAlternatives(
        subject=subject,
        body=body_text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.recipient_email],
        headers={"X-Portal-Notification": str(notification.pk)},
    )
    if body_html:
        message.attach_alternative(body_html, "text/html")
    message.send(fail_silently=False)


class NotificationSender(outbox.Sender):
    """The notifications outbox: an attempt is one email. Any transport error is retried;
    a row whose secret can no longer be derived (``bearer.SecretUnavailable``) fails at once."""

    model = Notification
    done_transition = "mark_sent"
    done_outcome = "sent"
    resend_comment = "Resent from the admin"

    def max_attempts(self) -> int:
        return settings.NOTIFICATION_MAX_ATTEMPTS

    def retry_base_seconds(self) -> int:
        return settings.NOTIFICATION_RETRY_BASE_SECONDS

    def stuck_after(self) -> timedelta:
        return settings.NOTIFICATION_STUCK_AFTER

    def attempt(self, row: Notification) -> outbox.Attempt:
        try:
            _send_email(row)  # network: never inside a transaction
        except bearer.SecretUnavailable as exc:
            return outbox.Attempt(error=f"Not sent: {exc}"[:2000], final=True)
        except Exception as exc:  # any transport error is recorded on the row and retried
            return outbox.Attempt(error=f"{type(exc).__name__}: {exc}"[:2000])
        return outbox.Attempt()

    def enqueue(self, ids: Iterable[int]) -> None:
        enqueue_notifications(ids)


NOTIFICATIONS = NotificationSender()


def deliver_notification(*, notification_id: int) -> DeliveryOutcome:
    """Send one pending notification; safe to call twice (the second call is a no-op). The
    outbox loop (``portal/outbox.py``): claimed in a short transaction, sent outside any,
    recorded in another; retried with exponential backoff until
    ``NOTIFICATION_MAX_ATTEMPTS``, then failed."""
    return NOTIFICATIONS.deliver(notification_id)


def resend_notification(*, notification: Notification, actor: Any) -> Notification:
    """Put a failed notification back in the queue (a central user's decision)."""
    return NOTIFICATIONS.resend(notification, actor=actor)


def resend_stuck_notifications(*, batch_size: int = 500) -> dict[str, int]:
    """Release sends abandoned by a dead worker and enqueue pending rows that are overdue."""
    return NOTIFICATIONS.sweep(batch_size=batch_size)


def purge_old_notifications(*, older_than_days: int = 180) -> int:
    """Delete sent notifications past their retention (their audit entries stay)."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = Notification.objects.filter(
        status=NotificationStatus.SENT, sent_at__lt=cutoff
    ).delete()
    return deleted
