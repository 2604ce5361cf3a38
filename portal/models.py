"""Entities, operator memberships, the audit log and the notifications outbox."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q, Value
from django.db.models.functions import Concat, Substr
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from portal.choices import (
    CENTRAL_ROLES,
    LOCAL_ROLES,
    EntityKind,
    ExportFormat,
    ExportState,
    NotificationStatus,
    Role,
)
from portal.outbox import OutboxQuerySet, outbox_model
from portal.roles import ENTITY_ACCESS_PERM


def is_central_user(user: Any) -> bool:
    """Superusers and members of the central entity see everything, entity-less rows too."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_portal_is_central", None)
    if cached is None:
        cached = user.memberships.filter(entity__kind=EntityKind.CENTRAL).exists()
        user._portal_is_central = cached
    return cached


class EntityOwnedQuerySet(models.QuerySet):
    """Rows owned by an entity (through ``entity_path``): central users see all of them,
    others those of the entities they may see."""

    entity_path = "entity"

    def visible_to(self, user: Any) -> models.QuerySet:
        if is_central_user(user):
            return self.all()
        return self.filter(**{f"{self.entity_path}__in": Entity.objects.visible_ids(user)})


class EntityQuerySet(models.QuerySet["Entity"]):
    def visible_to(self, user: Any) -> EntityQuerySet:
        """Entities the user may see: those its entity groups hold the access right on."""
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self.all()
        from guardian.shortcuts import get_objects_for_user

        return get_objects_for_user(user, ENTITY_ACCESS_PERM, klass=self, accept_global_perms=False)

    def visible_ids(self, user: Any) -> list[int]:
        """The ids of the entities the user may see, as values for ``entity__in`` filters.

        Values, not the rights subquery: the planner then sees which entities a list is limited
        to and walks their rows through the entity index, instead of scanning a whole name or
        date index and testing each row against the subquery (a store's audience search went
        from 1.8 s to milliseconds at 1M contacts). A user sees at most a few hundred entities.
        """
        return list(self.visible_to(user).values_list("pk", flat=True))

    def local(self) -> EntityQuerySet:
        return self.filter(kind=EntityKind.LOCAL)

    def active(self) -> EntityQuerySet:
        return self.filter(active=True)


def sender_domain_verified(address: str) -> bool:
    """Whether an email address (or "Name <address>") is at a verified sender domain."""
    from email.utils import parseaddr

    domain = parseaddr(address)[1].rpartition("@")[2].lower()
    return bool(domain) and domain in settings.DELIVERY_SENDER_DOMAINS


def unverified_sender_message(address: str) -> str:
    return (
        f"“{address}” is not at a verified sender domain; use an address at "
        f"{', '.join(settings.DELIVERY_SENDER_DOMAINS)} (DELIVERY_SENDER_DOMAINS)."
    )


entity_code_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    "Use letters, digits, '-' and '_' only, starting with a letter or digit.",
)


class Entity(models.Model):
    """A node of the organisation: the central entity, a region, or a local entity (a store,
    branch, dealer). Object rights are granted to the entity's own group."""

    code = models.CharField(max_length=40, unique=True, validators=[entity_code_validator])
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=EntityKind.choices, default=EntityKind.LOCAL)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    contact_email = models.EmailField(blank=True)
    # Sender identity: messages sent on its behalf come from it (see campaigns.engagement).
    sender_name = models.CharField(
        max_length=100, blank=True, help_text="Shown as the sender, e.g. “Lyon store”."
    )
    sender_address = models.EmailField(
        blank=True, help_text="At a verified sender domain (DELIVERY_SENDER_DOMAINS)."
    )
    reply_to = models.EmailField(
        blank=True, help_text="Where replies go (empty: the contact email)."
    )
    postal_address = models.TextField(
        blank=True, help_text="Printed in the footer of its marketing emails (CAN-SPAM)."
    )
    active = models.BooleanField(default=True)
    path = models.CharField(max_length=1000, editable=False, db_index=True)
    group = models.OneToOneField(
        Group,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.PROTECT,
        related_name="entity",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EntityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "entities"
        ordering = ["path"]
        permissions = [("access_entity", "May act for the entity and see its objects")]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(kind=EntityKind.CENTRAL),
                name="portal_entity_single_central",
            ),
            models.CheckConstraint(
                condition=Q(kind=EntityKind.CENTRAL, parent__isnull=True)
                | (~Q(kind=EntityKind.CENTRAL) & Q(parent__isnull=False)),
                name="portal_entity_central_is_root",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def depth(self) -> int:
        return self.path.count("/") - 1

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        if self.pk:
            old_code = Entity.objects.filter(pk=self.pk).values_list("code", flat=True).first()
            if old_code and old_code != self.code:
                errors["code"] = "The code of an existing entity cannot change."
        if self.kind == EntityKind.CENTRAL:
            if self.parent_id:
                errors["parent"] = "The central entity is the root: it has no parent."
            elif Entity.objects.filter(kind=EntityKind.CENTRAL).exclude(pk=self.pk).exists():
                errors["kind"] = "There is already a central entity."
        elif self.parent_id is None:
            errors["parent"] = "Regions and local entities need a parent."
        else:
            parent = self.parent
            if parent.kind == EntityKind.LOCAL:
                errors["parent"] = "A local entity cannot have children."
            elif self.pk and (parent.pk == self.pk or parent.path.startswith(self.path)):
                errors["parent"] = "An entity cannot be placed under itself or its descendants."
            elif self.kind == EntityKind.LOCAL and self.pk and self.children.exists():
                errors["kind"] = "An entity with children cannot be local."
        if self.sender_address and not sender_domain_verified(self.sender_address):
            errors["sender_address"] = unverified_sender_message(self.sender_address)
        if errors:
            raise ValidationError(errors)

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Keep the materialised path of the entity and its subtree in step with the tree."""
        old_path = (
            Entity.objects.filter(pk=self.pk).values_list("path", flat=True).first()
            if self.pk
            else None
        )
        self.path = self.compute_path()
        self._tree_changed = old_path != self.path
        with transaction.atomic():
            super().save(*args, **kwargs)
            if old_path and old_path != self.path:
                Entity.objects.filter(path__startswith=old_path).exclude(pk=self.pk).update(
                    path=Concat(Value(self.path), Substr("path", len(old_path) + 1))
                )

    def compute_path(self) -> str:
        prefix = self.parent.path if self.parent_id else "/"
        return f"{prefix}{self.code}/"

    def ancestors(self) -> EntityQuerySet:
        """This entity and every entity above it."""
        codes = [code for code in self.path.split("/") if code]
        return Entity.objects.filter(code__in=codes)

    def descendants(self, *, include_self: bool = True) -> EntityQuerySet:
        queryset = Entity.objects.filter(path__startswith=self.path)
        return queryset if include_self else queryset.exclude(pk=self.pk)


class MembershipQuerySet(models.QuerySet["Membership"]):
    def central(self) -> MembershipQuerySet:
        return self.filter(role__in=CENTRAL_ROLES)


class Membership(models.Model):
    """An operator's role in an entity."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "entity", "role"], name="portal_membership_unique_role"
            )
        ]
        indexes = [models.Index(fields=["entity", "role"])]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} of {self.entity.code}"

    def clean(self) -> None:
        super().clean()
        if not self.entity_id:
            return
        if self.role in CENTRAL_ROLES and self.entity.kind != EntityKind.CENTRAL:
            raise ValidationError({"role": "Central roles belong to the central entity only."})
        if self.role in LOCAL_ROLES and self.entity.kind == EntityKind.CENTRAL:
            raise ValidationError(
                {"role": "Local roles belong to a region or a local entity, not to the centre."}
            )


class AuditLogQuerySet(models.QuerySet["AuditLog"]):
    def for_object(self, obj: models.Model) -> AuditLogQuerySet:
        content_type = ContentType.objects.get_for_model(obj, for_concrete_model=False)
        return self.filter(content_type=content_type, object_id=str(obj.pk))

    def visible_to(self, user: Any) -> AuditLogQuerySet:
        if is_central_user(user):
            return self.all()
        return self.filter(entity__in=Entity.objects.visible_ids(user))


class AuditLog(models.Model):
    """An append-only journal entry: who did what to which object, from which state to which."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_repr = models.CharField(max_length=150, blank=True)
    entity = models.ForeignKey(
        Entity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32, blank=True)
    comment = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    subject = GenericForeignKey("content_type", "object_id")

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        default_permissions = ("view",)
        indexes = [models.Index(fields=["content_type", "object_id", "created_at"])]

    def __str__(self) -> str:
        arrow = f" {self.from_state} → {self.to_state}" if self.to_state else ""
        return f"{self.object_repr}: {self.action}{arrow}"

    @property
    def actor_display(self) -> str:
        return self.actor_repr or "system"

    @property
    def action_display(self) -> str:
        """The transition's name as words: ``start_preparation`` → "start preparation"."""
        return self.action.replace("_", " ")

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ValidationError("Audit log entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValidationError("Audit log entries cannot be deleted.")


class NotificationQuerySet(OutboxQuerySet):
    def visible_to(self, user: Any) -> NotificationQuerySet:
        if is_central_user(user):
            return self.all()
        return self.filter(entity__in=Entity.objects.visible_ids(user))


NotificationOutbox = outbox_model(
    name="NotificationOutbox",
    statuses=NotificationStatus,
    done=NotificationStatus.SENT,
    done_transition="mark_sent",
    done_at="sent_at",
    resend_permission="portal.resend_notification",
)


class Notification(NotificationOutbox):
    """An email to an operator or approver, written in the transaction that caused it and
    sent afterwards by a Celery task (the outbox: ``portal/outbox.py``).

    A secret that grants access (a reset or approval link) is never stored: the text holds a
    placeholder and ``secret_refs`` says how the sending task derives it (``portal.bearer``).
    """

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    recipient_email = models.EmailField()
    entity = models.ForeignKey(
        Entity, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    subject = models.CharField(max_length=255)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    secret_refs = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="How the sending task derives the secrets the text holds placeholders for.",
    )
    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.CharField(max_length=64, blank=True)
    related_object = GenericForeignKey("content_type", "object_id")
    kind = models.CharField(max_length=64, blank=True, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("resend_notification", "May resend a failed notification")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["content_type", "object_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {self.recipient_email}"

    @property
    def owning_entity(self) -> Entity | None:
        return self.entity


class ExportJobQuerySet(models.QuerySet["ExportJob"]):
    def visible_to(self, user: Any) -> ExportJobQuerySet:
        """An export holds what its owner was allowed to read: only its owner (and superusers,
        who may read everything anyway) sees it or downloads its file."""
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self.all()
        return self.filter(owner=user)


def export_upload_to(job: ExportJob, filename: str) -> str:
    return f"exports/{job.owner_id}/{filename}"


class ExportJob(FSMModelMixin, models.Model):
    """A CSV/XLSX export of a list (contacts, orders …) written by a worker into private
    storage, row chunk by row chunk, then downloaded by its owner until it expires."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="export_jobs"
    )
    kind = models.CharField(max_length=32, help_text="What is exported (portal.exports registry).")
    file_format = models.CharField(
        max_length=8, choices=ExportFormat.choices, default=ExportFormat.CSV
    )
    columns = models.JSONField(
        default=list, blank=True, help_text="The columns chosen, in order; empty: every column."
    )
    filters = models.JSONField(
        default=dict,
        blank=True,
        help_text="The filters the rows were chosen with (validated when the job was made).",
    )
    state = FSMField(
        max_length=16, choices=ExportState.choices, default=ExportState.QUEUED, protected=True
    )
    total_rows = models.PositiveIntegerField(default=0)
    done_rows = models.PositiveIntegerField(default=0)
    file = models.FileField(upload_to=export_upload_to, blank=True, max_length=255)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = ExportJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["state", "expires_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(done_rows__lte=models.F("total_rows")),
                name="export_progress_bounded",
            ),
            models.CheckConstraint(
                condition=Q(file_format__in=ExportFormat.values), name="export_format_known"
            ),
        ]

    def __str__(self) -> str:
        return f"Export #{self.pk} ({self.kind}, {self.file_format.upper()})"

    @property
    def owning_entity(self) -> Entity | None:
        return None  # owned by a user, not an entity: only the owner sees it

    @property
    def progress(self) -> int:
        if self.state == ExportState.DONE:
            return 100
        return int(100 * self.done_rows / self.total_rows) if self.total_rows else 0

    @property
    def filename(self) -> str:
        return f"{self.kind}-{self.pk}.{self.file_format}"

    @transition(field=state, source=ExportState.QUEUED, target=ExportState.RUNNING)
    def start(self, *, total_rows: int) -> None:
        """A worker took the job and counted its rows."""
        self.total_rows = total_rows
        self.done_rows = 0
        self.started_at = timezone.now()

    @transition(field=state, source=ExportState.RUNNING, target=ExportState.RUNNING)
    def restart(self, *, total_rows: int) -> None:
        """The task was delivered again after its worker stopped: written again from the start."""
        self.total_rows = total_rows
        self.done_rows = 0
        self.started_at = timezone.now()

    @transition(field=state, source=ExportState.RUNNING, target=ExportState.DONE)
    def finish(self, *, rows: int, expires_at: Any) -> None:
        self.total_rows = max(self.total_rows, rows)
        self.done_rows = rows
        self.finished_at = timezone.now()
        self.expires_at = expires_at

    @transition(
        field=state, source=[ExportState.QUEUED, ExportState.RUNNING], target=ExportState.FAILED
    )
    def fail(self, *, message: str) -> None:
        self.message = message
        self.finished_at = timezone.now()

    @transition(field=state, source=ExportState.DONE, target=ExportState.EXPIRED)
    def expire(self) -> None:
        """The file was deleted after its retention; the row stays as the history."""
        self.message = "The file was deleted after its retention period; export again."
