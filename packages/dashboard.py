"""Dashboard sections of the packages and approvals apps."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.services import pending_for
from packages.choices import ACTIVE_ORDER_STATES, OrderState, PackageState
from packages.models import Order, Package
from portal.dashboard import DashboardItem, DashboardSection, register
from portal.models import Entity, is_central_user


def _request_item(request: Any, due_word: str) -> DashboardItem:
    """An approval request as a dashboard line: title, link, deadline, overdue badge."""
    return DashboardItem(
        title=request.title,
        url=reverse("approvals:request_detail", args=[request.pk]),
        detail=f"{due_word} {timezone.localtime(request.deadline):%Y-%m-%d %H:%M}",
        late=request.is_overdue,
        late_text="decision overdue",
    )


@register(10)
def approvals_waiting(user: Any) -> DashboardSection | None:
    pending = list(pending_for(user)[:10])
    if not pending and not user.has_perm("approvals.decide_approvalrequest"):
        return None
    return DashboardSection(
        key="approvals",
        title="Approvals waiting for you",
        empty_text="Nothing waits for your decision.",
        items=[_request_item(request, "decide by") for request in pending],
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
                late_text=_personalisation_late_text(package),
            )
            for package in packages
        ],
    )


def _personalisation_late_text(package: Package) -> str:
    deadline = package.personalisation_deadline
    if deadline is None:
        return ""
    return f"personalisation late since {timezone.localtime(deadline):%Y-%m-%d}"


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


def _is_marketer(user: Any) -> bool:
    return is_central_user(user) and user.has_perm("packages.add_package")


@register(5)
def packages_by_state(user: Any) -> DashboardSection | None:
    """The central marketer's packages, counted by state (one query)."""
    if not _is_marketer(user):
        return None
    counts = dict(
        Package.objects.visible_to(user)
        .values_list("state")
        .annotate(total=Count("id"))
        .values_list("state", "total")
    )
    changelist = reverse("admin:packages_package_changelist")
    return DashboardSection(
        key="packages-by-state",
        title="Packages by state",
        empty_text="No package yet: build one in the central workspace.",
        items=[
            DashboardItem(
                title=f"{label}: {counts[state]}",
                url=f"{changelist}?state__exact={state}",
            )
            for state, label in PackageState.choices
            if counts.get(state)
        ],
    )


@register(12)
def approvals_pending(user: Any) -> DashboardSection | None:
    """Every pending request, for a marketer who does not decide them (the approver sees
    their own in "Approvals waiting for you")."""
    if not _is_marketer(user) or user.has_perm("approvals.decide_approvalrequest"):
        return None
    pending = (
        ApprovalRequest.objects.visible_to(user)
        .pending()
        .select_related("entity")
        .order_by("deadline")[:10]
    )
    return DashboardSection(
        key="pending-approvals",
        title="Pending approvals",
        empty_text="No request waits for a decision.",
        items=[_request_item(request, "due") for request in pending],
    )


@register(40)
def recent_orders(user: Any) -> DashboardSection | None:
    if not _is_marketer(user):
        return None
    orders = (
        Order.objects.visible_to(user)
        .select_related("package", "entity")
        .order_by("-updated_at", "-id")[:10]
    )
    return DashboardSection(
        key="recent-orders",
        title="Recent orders",
        empty_text="No order yet.",
        items=[
            DashboardItem(
                title=f"{order.package.label} — {order.entity.name}",
                url=reverse("admin:packages_order_change", args=[order.pk]),
                detail=order.get_state_display(),
            )
            for order in orders
        ],
    )
