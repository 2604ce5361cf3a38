"""Dashboard sections of the packages and approvals apps."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import timezone

from approvals.services import pending_for
from packages.choices import ACTIVE_ORDER_STATES, OrderState
from packages.models import Order, Package
from portal.dashboard import DashboardItem, DashboardSection, register
from portal.models import Entity


@register(10)
def approvals_waiting(user: Any) -> DashboardSection | None:
    pending = list(pending_for(user)[:10])
    if not pending and not user.has_perm("approvals.decide_approvalrequest"):
        return None
    return DashboardSection(
        key="approvals",
        title="Approvals waiting for you",
        empty_text="Nothing waits for your decision.",
        items=[
            DashboardItem(
                title=request.title,
                url=reverse("approvals:request_detail", args=[request.pk]),
                detail=f"decide by {timezone.localtime(request.deadline):%Y-%m-%d %H:%M}",
                late=request.is_overdue,
            )
            for request in pending
        ],
    )


@register(20)
def packages_to_order(user: Any) -> DashboardSection | None:
    if not user.has_perm("packages.add_order"):
        return None
    now = timezone.now()
    entities = Entity.objects.visible_to(user).filter(kind="local")
    ordered = Order.objects.filter(entity__in=entities, state__in=ACTIVE_ORDER_STATES)
    packages = (
        Package.objects.open_now(now)
        .filter(audience__in=entities, registration_deadline__gte=now)
        .exclude(pk__in=ordered.values("package_id"))
        .distinct()
        .order_by("registration_deadline")[:10]
    )
    return DashboardSection(
        key="to-order",
        title="Packages to order",
        empty_text="No package waits for an order from you.",
        items=[
            DashboardItem(
                title=package.label,
                url=reverse("packages:package_detail", args=[package.pk]),
                detail=f"order by {timezone.localtime(package.registration_deadline):%Y-%m-%d}",
                late=package.personalisation_late(now),
            )
            for package in packages
        ],
    )


@register(30)
def my_open_orders(user: Any) -> DashboardSection | None:
    if not user.has_perm("packages.add_order"):
        return None
    orders = (
        Order.objects.visible_to(user)
        .filter(state__in=[OrderState.DRAFT, OrderState.SUBMITTED, OrderState.REJECTED])
        .select_related("package", "entity")
        .order_by("-updated_at")[:10]
    )
    return DashboardSection(
        key="orders",
        title="Your orders in progress",
        empty_text="No draft, submitted or rejected order.",
        items=[
            DashboardItem(
                title=f"{order.package.label} — {order.entity.name}",
                url=reverse("packages:order_detail", args=[order.pk]),
                detail=order.get_state_display(),
            )
            for order in orders
        ],
    )
