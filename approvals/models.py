"""Approval requests (generic over what is approved), their approvers and email links."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from approvals.choices import DecisionChannel, RequestKind, RequestState
from portal.choices import Role
from portal.models import Entity, is_central_user


class ApprovalRequestQuerySet(models.QuerySet["ApprovalRequest"]):
    def visible_to(self, user: Any) -> ApprovalRequestQuerySet:
        """Requests the user may see: central users all; others those of the entities they
        may see, as the request's entity or as the entity whose roles decide it (rights as
        they are now: being emailed once grants nothing)."""
        if is_central_user(user):
            return self.all()
        if not getattr(user, "is_authenticated", False):
            return self.none()
        visible = Entity.objects.visible_to(user)
        return self.filter(
            Q(entity__in=visible)
            | Q(pk__in=ApproverRight.objects.filter(entity__in=visible).values("request"))
        )

    def decidable_by(self, user: Any) -> ApprovalRequestQuerySet:
        """Requests ``user`` holds the right to decide now: an active user holding, at this
        moment, one of the roles the request's approver rights name. Superusers decide all."""
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self.all()
        rights = ApproverRight.objects.filter(
            request=OuterRef("pk"),
            entity__memberships__user=user,
            entity__memberships__user__is_active=True,
            entity__memberships__role=F("role"),
        )
        return self.filter(Exists(rights))

    def pending(self) -> ApprovalRequestQuerySet:
        return self.filter(state=RequestState.PENDING)

    def for_object(self, obj: models.Model) -> ApprovalRequestQuerySet:
        return self.filter(
            content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
        )


class ApprovalRequest(ConcurrentTransitionMixin, models.Model):
    """A request for a decision on an object (an order, a delivery, a local target list).
    The first decision wins; later ones are refused and shown who decided."""

    kind = models.CharField(max_length=16, choices=RequestKind.choices)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.CharField(max_length=64)
    subject = GenericForeignKey("content_type", "object_id")
    entity = models.ForeignKey(
        Entity,
        on_delete=models.PROTECT,
        related_name="approval_requests",
        help_text="The entity the approved object belongs to.",
    )
    title = models.CharField(max_length=255)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approvers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        related_name="approval_requests",
        blank=True,
        verbose_name="emailed approvers",
        help_text="Who was emailed a personal link. The right to decide comes from the "
        "approver rights, resolved from current roles at decision time.",
    )
    deadline = models.DateTimeField()
    reminder_interval_hours = models.PositiveIntegerField(default=24)
    last_reminder_at = models.DateTimeField(null=True, blank=True)
    reminders_sent = models.PositiveIntegerField(default=0)
    auto_approve_on_expiry = models.BooleanField(default=False)
    state = FSMField(
        max_length=16, choices=RequestState.choices, default=RequestState.PENDING, protected=True
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    decided_via = models.CharField(max_length=16, choices=DecisionChannel.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_approvalrequest", "May decide approval requests")]
        indexes = [
            models.Index(fields=["state", "deadline"]),
            models.Index(fields=["content_type", "object_id"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(state="pending"),
                name="approvals_one_pending_request_per_object",
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def owning_entity(self) -> Entity:
        return self.entity

    @property
    def is_overdue(self) -> bool:
        return self.state == RequestState.PENDING and self.deadline < timezone.now()

    def _decide(self, by: Any, note: str, via: str) -> None:
        self.decided_by = by if getattr(by, "is_authenticated", False) else None
        self.decided_at = timezone.now()
        self.decision_comment = note
        self.decided_via = via

    @transition(field=state, source=RequestState.PENDING, target=RequestState.APPROVED)
    def approve(self, *, by: Any, note: str = "", via: str = DecisionChannel.PORTAL) -> None:
        self._decide(by, note, via)

    @transition(field=state, source=RequestState.PENDING, target=RequestState.REJECTED)
    def reject(self, *, by: Any, note: str, via: str = DecisionChannel.PORTAL) -> None:
        self._decide(by, note, via)

    @transition(field=state, source=RequestState.PENDING, target=RequestState.EXPIRED)
    def expire(self) -> None:
        self._decide(None, "No decision before the deadline.", DecisionChannel.SYSTEM)

    @transition(field=state, source=RequestState.PENDING, target=RequestState.CANCELLED)
    def cancel(self, *, reason: str = "") -> None:
        self.decision_comment = reason


class ApproverRight(models.Model):
    """Who may decide a request: the active holders of ``role`` in ``entity`` at the moment
    they decide (and so who sees it in their inbox). Memberships removed or added after the
    request opened take effect at once."""

    request = models.ForeignKey(
        ApprovalRequest, on_delete=models.CASCADE, related_name="approver_rights"
    )
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=32, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["request", "entity", "role"], name="approvals_one_right_per_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} of {self.entity.code}"


class ApprovalLink(models.Model):
    """One approver's emailed link to one request: signed, expiring and single-use."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="links")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    nonce = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver"], name="approvals_one_link_per_approver"
            )
        ]

    def __str__(self) -> str:
        return f"Link for {self.approver} on {self.request}"
