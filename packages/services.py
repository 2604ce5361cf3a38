"""Package and order services: publication, ordering, personalisation, cancellation.

Every rule (deadlines, audience membership, required fields, who may act) is checked here, so
the portal, the admin, email links and tasks all get the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from api import webhooks
from api.choices import WebhookEvent
from campaigns.personalisation import (
    change_values,
    clean_values,
    default_values,
    delete_stored,
    store_uploads,
)
from campaigns.workflow.forms import settings_problems
from packages.choices import (
    ACTIVE_ORDER_STATES,
    EDITABLE_ORDER_STATES,
    ApprovalMode,
    ExpiryDefault,
    OrderState,
    PackageState,
)
from packages.models import Order, Package, PackageReminder
from portal import services as portal_services
from portal.choices import LOCAL_ROLES, Role
from portal.exceptions import DomainError
from portal.models import Entity
from portal.services import absolute_url, check_may_act_for

# Errors about local conditions are keyed by this prefix and the parameter's name: the name
# of the order form's field ("local-product").
LOCAL_PREFIX = "local-"
SAMPLE_SIZE = 20


@dataclass
class OrderResult:
    order: Order
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PackageChange:
    """What a package transition did, so that the page that asked can say it."""

    package: Package
    entities_notified: int = 0
    orders_preregistered: int = 0
    orders_cancelled: int = 0


def _fmt(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------


def _locked_package(package: Package) -> Package:
    return (
        Package.objects.select_for_update().select_related("reference_campaign").get(pk=package.pk)
    )


def entity_recipients(entity: Entity) -> list[Any]:
    """Who hears about an entity's packages: its local operators and approvers, else its
    contact address."""
    users = list(portal_services.users_with_role(entity=entity, roles=LOCAL_ROLES))
    if users:
        return users
    return [entity.contact_email] if entity.contact_email else []


def delivery_step_problems(campaign: Any) -> list[str]:
    """The reference campaign's delivery steps pass the delivery form (content, sender,
    typology), as on the canvas: what its children copy and send is valid when published."""
    return [
        f"Delivery step “{activity}”: {problem}"
        for activity in campaign.activities.filter(type="delivery").order_by("key")
        for problem in settings_problems("delivery", activity.settings, campaign=campaign)
    ]


def publish_package(*, package: Package, actor: Any) -> PackageChange:
    """Publish a draft package: refuse with every problem listed, pre-register the audience in
    automatic mode, and notify each audience entity with a link to its order page."""
    with transaction.atomic():
        package = _locked_package(package)
        if package.state != PackageState.DRAFT:
            raise DomainError(
                f"Only draft packages can be published; this one is "
                f"{package.get_state_display().lower()}."
            )
        problems = package.publication_problems() + delivery_step_problems(
            package.reference_campaign
        )
        if problems:
            raise DomainError(
                f"“{package}” cannot be published yet: {' '.join(problems)}", problems=problems
            )
        portal_services.transition(obj=package, name="publish", actor=actor)
        webhooks.emit(WebhookEvent.PACKAGE_PUBLISHED, obj=package)
        audience = list(package.audience.order_by("code"))
        preregistered = notified = 0
        if package.approval_mode == ApprovalMode.AUTOMATIC:
            for entity in audience:
                _preregister(package=package, entity=entity, actor=actor)
                preregistered += 1
        if package.notify_on_publish:
            for entity in audience:
                sent = portal_services.notify(
                    recipients=entity_recipients(entity),
                    template="package_published",
                    context={
                        "package": package,
                        "entity": entity,
                        "package_url": absolute_url(
                            reverse("packages:package_detail", args=[package.pk])
                        ),
                        "deadline": package.registration_deadline,
                        "automatic": package.approval_mode == ApprovalMode.AUTOMATIC,
                    },
                    related=package,
                    entity=entity,
                )
                notified += bool(sent)
    return PackageChange(
        package=package, entities_notified=notified, orders_preregistered=preregistered
    )


def _preregister(*, package: Package, entity: Entity, actor: Any) -> Order:
    order = Order.objects.create(
        package=package,
        entity=entity,
        values=default_values(package.reference_campaign.personalisation_fields.all()),
        state=OrderState.PREREGISTERED,
        ordered_by=None,
    )
    portal_services.record_audit(
        obj=order,
        action="preregister",
        actor=actor,
        to_state=OrderState.PREREGISTERED,
        comment="Pre-registered when the package was published (automatic mode).",
    )
    order_accepted(order=order, actor=actor)
    return order


def close_package(*, package: Package, actor: Any = None, comment: str = "") -> Package:
    with transaction.atomic():
        package = _locked_package(package)
        portal_services.transition(obj=package, name="close", actor=actor, comment=comment)
    return package


def archive_package(*, package: Package, actor: Any) -> Package:
    with transaction.atomic():
        package = _locked_package(package)
        portal_services.transition(obj=package, name="archive", actor=actor)
    return package


def cancel_package(*, package: Package, actor: Any, reason: str = "") -> PackageChange:
    """Withdraw a package: its open orders are cancelled and the entities told, with the
    reason (also the audit entry's comment) and a link to the package."""
    notified = 0
    with transaction.atomic():
        package = _locked_package(package)
        was_published = package.state == PackageState.PUBLISHED
        portal_services.transition(obj=package, name="cancel", actor=actor, comment=reason)
        open_orders = (
            Order.objects.select_for_update()
            .filter(package=package, state__in=ACTIVE_ORDER_STATES)
            .select_related("entity")
        )
        touched: dict[int, Entity] = {}
        cancelled = 0
        for order in open_orders:
            _cancel_order_cascade(order=order, actor=actor)
            touched[order.entity_id] = order.entity
            cancelled += 1
        if was_published:
            package_url = absolute_url(reverse("packages:package_detail", args=[package.pk]))
            for entity in touched.values() or package.audience.all():
                sent = portal_services.notify(
                    recipients=entity_recipients(entity),
                    template="package_cancelled",
                    context={
                        "package": package,
                        "entity": entity,
                        "reason": reason,
                        "package_url": package_url,
                    },
                    related=package,
                    entity=entity,
                )
                notified += bool(sent)
    return PackageChange(package=package, entities_notified=notified, orders_cancelled=cancelled)


def _cancel_order_cascade(*, order: Order, actor: Any) -> None:
    """Cancel an order because its package was cancelled (no deadline, system right)."""
    portal_services.transition(
        obj=order,
        name="cancel",
        actor=actor,
        check_permission=False,
        comment="The package was cancelled.",
    )
    order_cancelled(order=order, actor=actor)


def close_ended_packages(*, now: Any = None) -> int:
    """Close published packages whose visibility has ended (periodic)."""
    now = now or timezone.now()
    closed = 0
    for package_id in Package.objects.filter(
        state=PackageState.PUBLISHED, visible_until__lt=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            package = Package.objects.select_for_update().get(pk=package_id)
            if package.state == PackageState.PUBLISHED:
                portal_services.transition(
                    obj=package, name="close", comment="Visibility ended; closed automatically."
                )
                closed += 1
    return closed


def send_deadline_reminders(*, now: Any = None) -> int:
    """Remind audience entities that have not ordered, ``reminder_days`` before the
    registration deadline; each entity is reminded once per package."""
    now = now or timezone.now()
    reminded = 0
    packages = Package.objects.open_now(now).filter(
        registration_deadline__gt=now, reminder_days__gt=0
    )
    for package in packages:
        if package.registration_deadline - timedelta(days=package.reminder_days) > now:
            continue
        ordered = Order.objects.filter(package=package, state__in=ACTIVE_ORDER_STATES).values(
            "entity_id"
        )
        already = PackageReminder.objects.filter(package=package).values("entity_id")
        for entity in package.audience.exclude(pk__in=ordered).exclude(pk__in=already):
            with transaction.atomic():
                _, created = PackageReminder.objects.get_or_create(package=package, entity=entity)
                if not created:
                    continue
                portal_services.notify(
                    recipients=entity_recipients(entity),
                    template="package_reminder",
                    context={
                        "package": package,
                        "entity": entity,
                        "deadline": _fmt(package.registration_deadline),
                        "package_url": absolute_url(
                            reverse("packages:package_detail", args=[package.pk])
                        ),
                    },
                    related=package,
                    entity=entity,
                )
                reminded += 1
    return reminded


# --------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------


def _check_package_open(package: Package, *, now: Any) -> None:
    if package.state != PackageState.PUBLISHED:
        raise DomainError(
            f"“{package}” is {package.get_state_display().lower()}: orders are not accepted."
        )
    if not package.is_visible_now(now):
        raise DomainError(f"“{package}” is not offered at the moment.")
    if not package.registration_open(now):
        raise DomainError(
            f"The registration deadline of “{package}” passed on "
            f"{_fmt(package.registration_deadline)}: no new order or change is accepted."
        )


def _late_warning(package: Package, now: Any) -> list[str]:
    if package.personalisation_late(now):
        return [
            f"The personalisation deadline passed on {_fmt(package.personalisation_deadline)}: "
            "your change is recorded, but it may come too late to be used."
        ]
    return []


def _clean_for(
    package: Package,
    data: Mapping[str, Any],
    files: Mapping[str, Any] | None,
    existing: Mapping[str, Any] | None,
    *,
    strict: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    definitions = list(package.reference_campaign.personalisation_fields.all())
    return clean_values(definitions, data, files, existing, strict=strict)


def local_parameters(package: Package) -> list[Any]:
    """The conditions of the package's reference campaign the entity completes."""
    from campaigns.targeting import local

    return local.campaign_parameters(package.reference_campaign)


def clean_local_values(
    package: Package, raw: Mapping[str, Any] | None, parameters: list[Any] | None = None
) -> dict[str, Any]:
    """The entity's values for the local conditions, checked against what the centre
    allowed; ``ValidationError`` keyed ``local-<name>``, each message naming the field."""
    from campaigns.targeting import local

    if parameters is None:
        parameters = local_parameters(package)
    try:
        return local.clean_values(parameters, raw or {})
    except ValidationError as exc:
        raise ValidationError(
            {
                (name if name == "__all__" else f"{LOCAL_PREFIX}{name}"): messages
                for name, messages in exc.message_dict.items()
            }
        ) from None


def _clean_both(
    package: Package,
    data: Mapping[str, Any],
    files: Mapping[str, Any] | None,
    local_values: Mapping[str, Any] | None,
    *,
    strict: bool,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Personalisation and local values together, so that one refusal lists every problem."""
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    uploads: dict[str, Any] = {}
    local: dict[str, Any] = {}
    try:
        values, uploads = _clean_for(package, data, files, None, strict=strict)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        local = clean_local_values(package, local_values)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    return values, uploads, local


@dataclass(frozen=True)
class Evaluation:
    """What a campaign would target for one entity with the values it gave."""

    dimension: str
    conditions: Any
    rows: int
    contacts: int
    sample: list[Any]
    values: dict[str, Any]


def evaluate_order(
    *,
    package: Package,
    entity: Entity,
    actor: Any,
    local_values: Mapping[str, Any] | None = None,
    validate: bool = True,
) -> Evaluation:
    """Count, exactly and in the database, the entity's contacts the package's campaign
    would target with these local values, and take a sample of 20. Changes nothing.

    The count is limited to what ``actor`` may see and to ``entity``'s subtree, so an
    operator never counts another entity's contacts. ``ValidationError`` (keyed
    ``local-<name>``) for values outside what the centre allowed; with ``validate=False``
    (the estimate shown before anything is filled in) values are ignored instead.
    """
    from campaigns import targeting
    from campaigns.models import Contact
    from campaigns.targeting import local
    from campaigns.targeting.registry import DIMENSIONS

    check_may_act_for(actor=actor, entity=entity, perm="packages.view_package")
    if not package.audience.filter(pk=entity.pk).exists():
        raise DomainError(f"{entity.name} is not in the audience of “{package}”.")
    campaign = package.reference_campaign
    parameters = local_parameters(package)
    values = clean_local_values(package, local_values, parameters) if validate else {}
    dimension, conditions = local.campaign_target(campaign)
    tree = conditions
    if parameters and values:
        # Parameters exist only on a campaign with a query step, which is then its target.
        tree = local.with_local(conditions, local.condition_for(parameters, values, dimension))
    try:
        queryset = targeting.target_queryset(dimension, tree, user=actor, entity=entity)
        counted = targeting.count_queryset(dimension, queryset)
    except targeting.TargetingError as exc:  # a reference campaign saved before a rule
        raise DomainError(f"The campaign's targeting cannot be evaluated: {exc}") from None
    contact_path = DIMENSIONS[dimension].contact_path
    # A contact target is sampled directly (the planner then filters by entity first); a
    # booking or subscription target through its contacts.
    contacts = (
        queryset
        if contact_path == "pk"
        else Contact.objects.filter(pk__in=queryset.values(contact_path))
    )
    sample = list(
        contacts.select_related("entity").order_by("last_name", "first_name", "pk")[:SAMPLE_SIZE]
    )
    return Evaluation(
        dimension=dimension,
        conditions=tree,
        rows=counted.rows,
        contacts=counted.contacts,
        sample=sample,
        values=values,
    )


def place_order(
    *,
    package: Package,
    entity: Entity,
    actor: Any,
    data: Mapping[str, Any] | None = None,
    files: Mapping[str, Any] | None = None,
    comment: str = "",
    submit: bool = False,
    strict: bool = False,
    local_values: Mapping[str, Any] | None = None,
) -> OrderResult:
    """Order a package for an entity with its personalisation values.

    Raises ``ValidationError`` (per field) for bad values, ``DomainError`` for a refused rule,
    ``PermissionDenied`` when the actor may not act for the entity. Nothing is written unless
    everything is valid.
    """
    now = timezone.now()
    check_may_act_for(actor=actor, entity=entity, perm="packages.add_order")
    values, uploads, local = _clean_both(package, data or {}, files, local_values, strict=strict)
    stored: dict[str, dict] = {}
    try:
        with transaction.atomic():
            package = _locked_package(package)
            _check_package_open(package, now=now)
            if not package.audience.filter(pk=entity.pk).exists():
                raise DomainError(f"{entity.name} is not in the audience of “{package}”.")
            existing = Order.objects.filter(package=package, entity=entity)
            if (
                not package.allow_multiple_orders
                and existing.filter(state__in=ACTIVE_ORDER_STATES).exists()
            ):
                raise DomainError(
                    f"{entity.name} has already ordered “{package}”; change that order instead."
                )
            sequence = 1
            if package.allow_multiple_orders:
                sequence = (existing.aggregate(top=Max("sequence"))["top"] or 0) + 1
            stored = store_uploads(uploads, folder=f"orders/{package.pk}/{entity.code}")
            automatic = package.approval_mode == ApprovalMode.AUTOMATIC
            order = Order.objects.create(
                package=package,
                entity=entity,
                sequence=sequence,
                ordered_by=actor,
                values={**values, **stored},
                local_values=local,
                comment=comment,
                state=OrderState.PREREGISTERED if automatic else OrderState.DRAFT,
                late_personalisation=package.personalisation_late(now),
            )
            portal_services.record_audit(
                obj=order, action="create_order", actor=actor, to_state=order.state, comment=comment
            )
            if automatic:
                order_accepted(order=order, actor=actor)
            elif submit:
                _submit(order=order, actor=actor)
    except IntegrityError:
        delete_stored(stored.values())
        raise DomainError(
            f"{entity.name} has already ordered “{package}”; change that order instead."
        ) from None
    except Exception:
        delete_stored(stored.values())
        raise
    return OrderResult(order, _late_warning(package, now))


def _locked_order(order: Order) -> Order:
    return (
        Order.objects.select_for_update()
        .select_related("package__reference_campaign", "entity")
        .get(pk=order.pk)
    )


def update_order(
    *,
    order: Order,
    actor: Any,
    data: Mapping[str, Any],
    files: Mapping[str, Any] | None = None,
    comment: str | None = None,
    strict: bool = False,
    local_values: Mapping[str, Any] | None = None,
) -> OrderResult:
    """Change an order's personalisation values and, when given, its local conditions'
    values (draft, submitted or pre-registered, until the registration deadline; late
    personalisation only warns)."""
    now = timezone.now()
    check_may_act_for(actor=actor, entity=order.entity, perm="packages.change_order")
    local = None if local_values is None else clean_local_values(order.package, local_values)
    change = None
    try:
        with transaction.atomic():
            order = _locked_order(order)
            package = order.package
            if order.state not in EDITABLE_ORDER_STATES:
                raise DomainError(f"A {order.get_state_display().lower()} order cannot be changed.")
            _check_package_open(package, now=now)
            change = change_values(
                package.reference_campaign.personalisation_fields.all(),
                data,
                files,
                order.values,
                folder=f"orders/{package.pk}/{order.entity.code}",
                strict=strict,
            )
            order.values = change.values
            if local is not None:
                order.local_values = local
            if comment is not None:
                order.comment = comment
            late = package.personalisation_late(now)
            order.late_personalisation = order.late_personalisation or late
            order.save()
            portal_services.record_audit(
                obj=order,
                action="update_order",
                actor=actor,
                comment="Changed after the personalisation deadline." if late else "",
                extra={
                    "changed": change.changed,
                    "late": late,
                    **({"local_values": local} if local is not None else {}),
                },
            )
            transaction.on_commit(partial(delete_stored, change.replaced))
    except Exception:
        if change is not None:
            delete_stored(change.stored.values())
        raise
    return OrderResult(order, _late_warning(package, now))


def _submit(*, order: Order, actor: Any) -> None:
    missing = _incomplete(order)
    if missing:
        raise DomainError("The order is incomplete: " + " ".join(missing), problems=missing)
    portal_services.transition(obj=order, name="submit", actor=actor)
    order_submitted(order=order, actor=actor)
    webhooks.emit(WebhookEvent.ORDER_SUBMITTED, obj=order)


def _incomplete(order: Order) -> list[str]:
    """Re-validate stored values against the current field definitions and local
    conditions."""
    missing: list[str] = []
    try:
        _clean_for(order.package, order.values, None, order.values, strict=False)
    except ValidationError as exc:
        definitions = {
            d.name: d.label for d in order.package.reference_campaign.personalisation_fields.all()
        }
        missing += [
            f"{definitions.get(name, name)}: {' '.join(messages)}"
            for name, messages in exc.message_dict.items()
        ]
    try:
        clean_local_values(order.package, order.local_values)
    except ValidationError as exc:
        missing += exc.messages  # each names its condition
    return missing


def submit_order(*, order: Order, actor: Any) -> Order:
    """Send a draft order for central approval."""
    check_may_act_for(actor=actor, entity=order.entity, perm="packages.change_order")
    with transaction.atomic():
        order = _locked_order(order)
        if order.state != OrderState.DRAFT:
            raise DomainError(f"Only draft orders can be submitted; this one is {order.state}.")
        _check_package_open(order.package, now=timezone.now())
        _submit(order=order, actor=actor)
    return order


def cancel_order(*, order: Order, actor: Any, comment: str = "") -> Order:
    """The entity withdraws its order (until the registration deadline)."""
    check_may_act_for(actor=actor, entity=order.entity, perm="packages.change_order")
    with transaction.atomic():
        order = _locked_order(order)
        package = order.package
        if not package.registration_open():
            raise DomainError(
                f"The registration deadline passed on {_fmt(package.registration_deadline)}: "
                "the order can no longer be cancelled by the entity."
            )
        portal_services.transition(obj=order, name="cancel", actor=actor, comment=comment)
        order_cancelled(order=order, actor=actor)
    return order


# --------------------------------------------------------------------------------------------
# Hooks called inside the order's transaction
# --------------------------------------------------------------------------------------------


def central_approvers(package: Package) -> list[Any]:
    return list(
        portal_services.users_with_role(entity=package.owning_entity, roles=[Role.CENTRAL_APPROVER])
    )


def order_submitted(*, order: Order, actor: Any) -> None:
    """An order awaits a decision: open its approval request, which emails each central
    approver a personal link (unless the package turned submit notifications off)."""
    from approvals import services as approvals

    package = order.package
    approvals.request_approval(
        obj=order,
        requester=actor,
        deadline=timezone.now() + timedelta(days=package.approval_days),
        auto_approve_on_expiry=package.approval_expiry_default == ExpiryDefault.AUTO_APPROVE,
        notify=package.notify_on_submit,
    )


def order_cancelled(*, order: Order, actor: Any) -> None:
    """An order was cancelled: withdraw its pending approval, stop its child campaign."""
    from approvals import services as approvals
    from campaigns import services as campaign_services

    approvals.cancel_requests_for(obj=order, actor=actor, reason="The order was cancelled.")
    campaign_services.stop_child_for_order(order=order, actor=actor)
    webhooks.emit(WebhookEvent.ORDER_CANCELLED, obj=order)


def order_accepted(*, order: Order, actor: Any) -> None:
    """An approved or pre-registered order becomes a child campaign or a scheduled run."""
    from campaigns import services as campaign_services

    campaign_services.realise_order(order=order, actor=actor)


def apply_order_decision(*, order: Order, approved: bool, actor: Any, comment: str) -> Order:
    """Called by the approvals app, inside the decision's transaction."""
    order = _locked_order(order)
    portal_services.transition(
        obj=order,
        name="approve" if approved else "reject",
        actor=actor,
        comment=comment,
        check_permission=False,
        by=actor,
        note=comment,
    )
    webhooks.emit(
        WebhookEvent.ORDER_APPROVED if approved else WebhookEvent.ORDER_REJECTED, obj=order
    )
    if approved:
        order_accepted(order=order, actor=actor)
    if order.package.notify_on_decision:
        portal_services.notify(
            recipients=_order_recipients(order),
            template="order_decided",
            context={
                "order": order,
                "approved": approved,
                "comment": comment,
                "order_url": absolute_url(reverse("packages:order_detail", args=[order.pk])),
            },
            related=order,
            entity=order.entity,
        )
    return order


def order_request_expired(*, order: Order) -> None:
    """Nobody decided in time: tell the ordering entity."""
    portal_services.notify(
        recipients=_order_recipients(order),
        template="order_expired",
        context={
            "order": order,
            "order_url": absolute_url(reverse("packages:order_detail", args=[order.pk])),
        },
        related=order,
        entity=order.entity,
    )


def _order_recipients(order: Order) -> list[Any]:
    recipients = entity_recipients(order.entity)
    if order.ordered_by and order.ordered_by.is_active:
        recipients.append(order.ordered_by)
    return recipients
