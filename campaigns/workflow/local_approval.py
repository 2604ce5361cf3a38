"""Collaborative by target approval: each local entity reviews its share of a workflow's
population (one approval request per entity), removes contacts with a reason and approves,
or lets the deadline apply the activity's default. A report variant tells each entity what
was sent to its contacts.

The lists are work tables; removals are rows naming (list, contact); the activity's output
is one INSERT … SELECT of the approved lists without their removed contacts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import CharField, Exists, OuterRef, QuerySet, Subquery
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.choices import DecisionChannel, RequestState
from approvals.models import ApprovalRequest
from campaigns.models import (
    ActivityExecution,
    Delivery,
    LocalApproval,
    LocalApprovalMode,
    MessageStatus,
    TargetRemoval,
)
from campaigns.targeting.worktables import per_entity, work_table
from campaigns.workflow.activities import Context, Distribution, output_table
from portal import services as portal_services
from portal.choices import Role
from portal.exceptions import DomainError
from portal.models import Entity

REVIEW = "review"
REVIEWERS = (Role.LOCAL_OPERATOR, Role.LOCAL_APPROVER)
MAX_REMOVALS = 1000


class NotInList(LookupError):
    """Contacts named in a removal are not in the entity's list (the view answers 404)."""


# --------------------------------------------------------------------------------------------
# The activity
# --------------------------------------------------------------------------------------------


def open_lists(ctx: Context, now: datetime) -> datetime | None:
    """Share the input among entities and open one approval request per entity with rows;
    returns the deadline the activity sleeps until (None when no entity has a list)."""
    settings = ctx.activity.settings
    report = Distribution.distribute(ctx, REVIEW)
    shares = report.kept_by_entity()
    if not shares:
        return None
    deadline = now + timedelta(hours=settings.get("deadline_hours", 72))
    entities = Entity.objects.in_bulk(list(shares))
    requester = ctx.execution.run.started_by
    for entity_id, rows in sorted(shares.items()):
        approval = LocalApproval.objects.create(
            execution=ctx.execution, entity=entities[entity_id], rows=rows, deadline=deadline
        )
        portal_services.record_audit(
            obj=approval, action="open", actor=requester, extra={"rows": rows}
        )
        approvals.request_approval(
            obj=approval,
            requester=requester,
            deadline=deadline,
            auto_approve_on_expiry=settings.get("on_deadline", "send_all") == "send_all",
        )
    return deadline


def close_lists(ctx: Context) -> int:
    """Settle the lists still pending (the deadline's default) and write the approved lists,
    without their removed contacts, as the output."""
    lists = LocalApproval.objects.filter(execution=ctx.execution, mode=LocalApprovalMode.APPROVE)
    for request in _requests(lists).filter(state=RequestState.PENDING):
        approvals.apply_deadline(request_id=request.pk)
    approved = set(
        _requests(lists).filter(state=RequestState.APPROVED).values_list("object_id", flat=True)
    )
    entities = [item.entity_id for item in lists if str(item.pk) in approved]
    removed = TargetRemoval.objects.filter(
        approval__execution=ctx.execution,
        approval__entity=OuterRef("entity_id"),
        contact=OuterRef("contact_id"),
    )
    rows = (
        work_table(ctx.run_key, ctx.table(REVIEW))
        .filter(entity_id__in=entities)
        .exclude(Exists(removed))
    )
    return ctx.write("out", rows)


def send_reports(ctx: Context) -> int:
    """Report mode: each entity with rows is told how many messages each delivery of the
    run sent to its contacts, with a link to its list."""
    counts = per_entity(ctx.inputs[0].filter(entity__isnull=False))
    deliveries = []
    for delivery in Delivery.objects.filter(run_id=ctx.execution.run_id).order_by("id"):
        sent = per_entity(delivery.messages.filter(status=MessageStatus.SENT))
        deliveries.append((delivery, sent))
    entities = Entity.objects.in_bulk(list(counts))
    for entity_id, rows in sorted(counts.items()):
        entity = entities[entity_id]
        approval = LocalApproval.objects.create(
            execution=ctx.execution, entity=entity, rows=rows, mode=LocalApprovalMode.REPORT
        )
        portal_services.notify(
            recipients=portal_services.users_with_role(entity=entity, roles=REVIEWERS),
            template="local_report",
            context={
                "campaign": ctx.activity.campaign,
                "entity": entity,
                "rows": rows,
                "deliveries": [
                    (delivery.label, delivery.get_channel_display(), sent.get(entity_id, 0))
                    for delivery, sent in deliveries
                ],
                "list_url": portal_services.absolute_url(review_url(approval)),
            },
            related=approval,
            entity=entity,
        )
    return len(counts)


# --------------------------------------------------------------------------------------------
# Reviewing a list
# --------------------------------------------------------------------------------------------


def review_url(approval: LocalApproval) -> str:
    return reverse("campaigns:local_approval", args=[approval.pk])


def _requests(lists: Iterable[LocalApproval] | QuerySet) -> QuerySet:
    ids = [str(item.pk) for item in lists]
    return ApprovalRequest.objects.filter(
        content_type=ContentType.objects.get_for_model(LocalApproval), object_id__in=ids
    )


def decision_state() -> Subquery:
    """Annotation: the state of a list's approval request (one subquery, no N+1)."""
    return Subquery(
        ApprovalRequest.objects.filter(
            content_type=ContentType.objects.get_for_model(LocalApproval),
            object_id=Cast(OuterRef("pk"), CharField()),
        )
        .order_by("-created_at")
        .values("state")[:1]
    )


def request_of(approval: LocalApproval) -> ApprovalRequest | None:
    return _requests([approval]).order_by("-created_at").first()


def list_rows(approval: LocalApproval) -> QuerySet:
    """The entity's list, one row per (contact, record), with its removal if any."""
    removal = TargetRemoval.objects.filter(approval=approval, contact=OuterRef("contact_id"))
    return (
        work_table(
            approval.execution.run.run_key,
            output_table(approval.execution.activity, REVIEW)
            if approval.mode == LocalApprovalMode.APPROVE
            else _report_source(approval),
        )
        .filter(entity=approval.entity)
        .select_related("contact")
        .annotate(removal_reason=Subquery(removal.values("reason")[:1]))
    )


def _report_source(approval: LocalApproval) -> str:
    """A report's list is the activity's input (what reached it)."""
    incoming = approval.execution.activity.incoming.select_related("source").first()
    return output_table(incoming.source, incoming.label) if incoming else ""


def may_review(approval: LocalApproval, user: Any) -> bool:
    """Who may change a list: the approvers of its pending request."""
    request = request_of(approval)
    return (
        request is not None
        and request.state == RequestState.PENDING
        and approvals.may_decide(request, user)
    )


def _locked_pending(approval: LocalApproval, actor: Any) -> ApprovalRequest:
    request = request_of(approval)
    if request is None:
        raise DomainError("This list has no approval request.")
    request = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if request.state != RequestState.PENDING:
        raise approvals.AlreadyDecided(request)
    if not approvals.may_decide(request, actor):
        raise PermissionDenied("You are not a reviewer of this list.")
    return request


def _in_list(approval: LocalApproval, contact_ids: list[int]) -> list[int]:
    if not contact_ids:
        raise DomainError("Choose the contacts first.")
    if len(contact_ids) > MAX_REMOVALS:
        raise DomainError(f"Choose at most {MAX_REMOVALS} contacts at a time.")
    found = set(
        list_rows(approval).filter(contact_id__in=contact_ids).values_list("contact_id", flat=True)
    )
    if found != set(contact_ids):
        raise NotInList("Some of these contacts are not in this list.")
    return sorted(found)


def remove_contacts(
    *, approval: LocalApproval, contact_ids: list[int], reason: str, actor: Any
) -> int:
    """Take contacts out of the entity's list, with a reason (kept, shown, audited)."""
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Say why these contacts are removed.")
    if len(reason) > 255:
        raise DomainError("The reason is too long (255 characters at most).")
    with transaction.atomic():
        _locked_pending(approval, actor)
        ids = _in_list(approval, contact_ids)
        already = set(approval.removals.values_list("contact_id", flat=True))
        new = [pk for pk in ids if pk not in already]
        TargetRemoval.objects.bulk_create(
            [
                TargetRemoval(approval=approval, contact_id=pk, reason=reason, removed_by=actor)
                for pk in new
            ]
        )
        portal_services.record_audit(
            obj=approval,
            action="remove_contacts",
            actor=actor,
            comment=reason,
            extra={"contacts": new},
        )
    return len(new)


def restore_contacts(*, approval: LocalApproval, contact_ids: list[int], actor: Any) -> int:
    """Put removed contacts back into the list."""
    with transaction.atomic():
        _locked_pending(approval, actor)
        ids = _in_list(approval, contact_ids)
        restored, _ = approval.removals.filter(contact_id__in=ids).delete()
        portal_services.record_audit(
            obj=approval, action="restore_contacts", actor=actor, extra={"contacts": ids}
        )
    return restored


def decide(*, approval: LocalApproval, actor: Any, approve: bool, comment: str = "") -> None:
    """Approve the list as it stands (or reject it: nothing is sent to this entity)."""
    request = request_of(approval)
    if request is None:
        raise DomainError("This list has no approval request.")
    approvals.decide(
        request=request, actor=actor, approve=approve, comment=comment, via=DecisionChannel.PORTAL
    )


def settled(approval: LocalApproval) -> None:
    """A list was decided or expired: when every list of the activity is, it continues."""
    lists = LocalApproval.objects.filter(
        execution_id=approval.execution_id, mode=LocalApprovalMode.APPROVE
    )
    if not _requests(lists).filter(state=RequestState.PENDING).exists():
        from campaigns.workflow import engine

        engine.wake(execution_id=approval.execution_id)


def list_outcome(decision: Any) -> tuple[str, str]:
    """What became of a list, from its approval request: the label of each row still in it
    and, once settled, a sentence for the page. A list that was not sent never calls its rows
    "in the list" as if they were about to receive something."""
    state = getattr(decision, "state", RequestState.PENDING)
    if state == RequestState.APPROVED:
        return "approved", "The list was approved: its contacts were kept in the target."
    if state == RequestState.REJECTED:
        return "not sent", "The list was rejected: nothing was sent to these contacts."
    if state == RequestState.EXPIRED:
        return (
            "not sent",
            "Nobody answered by the deadline, and the step sends nothing then: "
            "nothing was sent to these contacts.",
        )
    if state == RequestState.CANCELLED:
        return "not sent", "The review was cancelled: nothing was sent to these contacts."
    return "in the list", ""


def summary(approval: LocalApproval) -> list[tuple[str, str]]:
    execution: ActivityExecution = approval.execution
    default = execution.activity.settings.get("on_deadline", "send_all")
    return [
        ("Campaign", str(execution.run.campaign)),
        ("Step", str(execution.activity)),
        ("Entity", f"{approval.entity.name} ({approval.entity.code})"),
        ("Contacts in the list", str(approval.rows)),
        ("Removed so far", str(approval.removals.count())),
        (
            "If nobody answers by the deadline",
            "the whole list is sent" if default == "send_all" else "nothing is sent",
        ),
        (
            "Deadline",
            timezone.localtime(approval.deadline).strftime("%Y-%m-%d %H:%M")
            if approval.deadline
            else "—",
        ),
    ]


class LocalApprovalHandler:
    """How the approvals app handles a local entity's target list."""

    kind = "target"

    def approver_scope(self, obj: LocalApproval) -> approvals.ApproverScope:
        """The entity's reviewers, as they are when deciding."""
        return approvals.ApproverScope(entity=obj.entity, roles=tuple(REVIEWERS))

    def entity(self, obj: LocalApproval) -> Entity:
        return obj.entity

    def title(self, obj: LocalApproval) -> str:
        return f"Target list of “{obj.execution.run.campaign}” for {obj.entity.name}"

    def summary(self, obj: LocalApproval) -> list[tuple[str, str]]:
        return summary(obj)

    def documents(self, obj: LocalApproval) -> list[tuple[str, str]]:
        return [
            (
                f"Review the list of {obj.rows} contacts (search, remove)",
                portal_services.absolute_url(review_url(obj)),
            )
        ]

    def detail_url(self, obj: LocalApproval) -> str:
        return review_url(obj)

    def on_decided(self, *, obj: LocalApproval, request: Any, approved: bool, actor: Any,
                   comment: str) -> None:  # fmt: skip
        settled(obj)

    def on_expired(self, *, obj: LocalApproval, request: Any) -> None:
        settled(obj)
