"""How the approvals app handles orders."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import timezone

from approvals.services import ApproverScope
from campaigns.personalisation import display_value
from campaigns.targeting import local
from packages import services
from packages.models import Order
from portal.choices import Role
from portal.models import Entity
from portal.services import absolute_url


class OrderApprovalHandler:
    kind = "order"

    def approver_scope(self, obj: Order) -> ApproverScope:
        """The central approvers of the package's entity, as they are when deciding."""
        return ApproverScope(entity=obj.package.owning_entity, roles=(Role.CENTRAL_APPROVER,))

    def entity(self, obj: Order) -> Entity:
        return obj.entity

    def title(self, obj: Order) -> str:
        return f"Order of “{obj.package}” by {obj.entity.name}"

    def summary(self, obj: Order) -> list[tuple[str, str]]:
        rows = [
            ("Package", obj.package.label),
            ("Collaborative type", obj.package.reference_campaign.get_collaborative_type_display()),
            ("Entity", f"{obj.entity.name} ({obj.entity.code})"),
            ("Ordered by", obj.ordered_by.get_full_name() or obj.ordered_by.username)
            if obj.ordered_by
            else ("Ordered by", "—"),
        ]
        if obj.submitted_at:
            rows.append(
                ("Submitted", timezone.localtime(obj.submitted_at).strftime("%Y-%m-%d %H:%M"))
            )
        for definition in obj.package.reference_campaign.personalisation_fields.all():
            rows.append(
                (definition.label, display_value(definition, obj.values.get(definition.name)))
            )
        for label, value in local.value_rows(services.local_parameters(obj.package),
                                             obj.local_values):  # fmt: skip
            rows.append((f"Targeting: {label}", value))
        if obj.comment:
            rows.append(("Comment", obj.comment))
        return rows

    def documents(self, obj: Order) -> list[tuple[str, str]]:
        return [
            (
                document.title,
                absolute_url(reverse("packages:document", args=[obj.package_id, document.pk])),
            )
            for document in obj.package.documents.all()
        ]

    def detail_url(self, obj: Order) -> str:
        return reverse("packages:order_detail", args=[obj.pk])

    def on_decided(self, *, obj: Order, request: Any, approved: bool, actor: Any, comment: str):
        services.apply_order_decision(order=obj, approved=approved, actor=actor, comment=comment)

    def on_expired(self, *, obj: Order, request: Any) -> None:
        services.order_request_expired(order=obj)
