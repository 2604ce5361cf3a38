"""Local operators' pages: package catalogue, package page, ordering and my orders."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from approvals.models import ApprovalRequest
from campaigns.models import Campaign, ScheduledRun
from campaigns.personalisation import value_rows
from packages import services
from packages.choices import (
    ACTIVE_ORDER_STATES,
    EDITABLE_ORDER_STATES,
    OrderState,
    PackageState,
)
from packages.forms import EntityChoiceForm, LocalConditionsForm, PersonalisationForm
from packages.models import Order, Package
from portal.models import AuditLog, Entity
from portal.web import (
    add_warnings,
    attempt,
    file_response,
    page_number,
    stored_value_response,
)


def _my_local_entities(user: Any) -> Any:
    return Entity.objects.visible_to(user).filter(kind="local", active=True)


def _visible_package(request: HttpRequest, pk: int) -> Package:
    queryset = Package.objects.visible_to(request.user).select_related("reference_campaign")
    return get_object_or_404(queryset, pk=pk)


def _visible_order(request: HttpRequest, pk: int) -> Order:
    queryset = Order.objects.visible_to(request.user).select_related(
        "package__reference_campaign", "entity", "ordered_by", "decided_by"
    )
    return get_object_or_404(queryset, pk=pk)


@login_required
def catalogue(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    entities = _my_local_entities(request.user)
    packages = (
        Package.objects.visible_to(request.user)
        .open_now(now)
        .filter(audience__in=entities)
        .distinct()
        .select_related("reference_campaign")
        .prefetch_related(
            Prefetch(
                "orders",
                queryset=Order.objects.filter(entity__in=entities).select_related("entity"),
                to_attr="my_orders",
            )
        )
        .order_by("registration_deadline", "label")
    )
    category = request.GET.get("category", "")
    if category:
        packages = packages.filter(category=category)
    return render(
        request,
        "packages/catalogue.html",
        {"packages": packages, "now": now, "category": category},
    )


@login_required
def package_detail(request: HttpRequest, pk: int) -> HttpResponse:
    package = _visible_package(request, pk)
    entities = _my_local_entities(request.user)
    orders = (
        package.orders.filter(entity__in=entities).select_related("entity").order_by("entity__code")
    )
    ordered = {o.entity_id for o in orders if o.state in ACTIVE_ORDER_STATES}
    can_order_for = [
        entity
        for entity in package.audience.filter(pk__in=entities).order_by("name")
        if package.allow_multiple_orders or entity.pk not in ordered
    ]
    may_order = (
        package.state == PackageState.PUBLISHED
        and package.is_visible_now()
        and package.registration_open()
        and request.user.has_perm("packages.add_order")
    )
    return render(
        request,
        "packages/package_detail.html",
        {
            "package": package,
            "orders": orders,
            "documents": package.documents.all(),
            "fields": package.reference_campaign.personalisation_fields.all(),
            "can_order_for": can_order_for if may_order else [],
            "registration_open": package.registration_open(),
            "personalisation_late": package.personalisation_late(),
        },
    )


@login_required
def document(request: HttpRequest, pk: int, document_pk: int) -> HttpResponse:
    package = _visible_package(request, pk)
    doc = get_object_or_404(package.documents, pk=document_pk)
    return file_response(doc.file.name, PurePath(doc.file.name).name)


@login_required
def order_create(request: HttpRequest, pk: int) -> HttpResponse:
    package = _visible_package(request, pk)
    if not request.user.has_perm("packages.add_order"):
        raise PermissionDenied("Your role does not allow ordering.")
    candidates = package.audience.filter(pk__in=_my_local_entities(request.user)).order_by("name")
    if not candidates.exists():
        raise Http404("None of your entities is in this package's audience.")
    chooser = EntityChoiceForm(request.POST or request.GET or None, entities=candidates)
    entity = candidates.first() if candidates.count() == 1 else None
    if entity is None and chooser.is_valid():
        entity = chooser.cleaned_data["entity"]
    if entity is not None and not package.allow_multiple_orders:
        existing = package.orders.filter(entity=entity, state__in=ACTIVE_ORDER_STATES).first()
        if existing:
            messages.info(request, f"{entity.name} has already ordered this package.")
            return redirect("packages:order_detail", existing.pk)
    definitions = package.reference_campaign.personalisation_fields.all()
    form = PersonalisationForm(definitions, request.POST or None, request.FILES or None)
    local_form = LocalConditionsForm(services.local_parameters(package), request.POST or None)
    evaluating = request.method == "POST" and request.POST.get("action") == "evaluate"
    if request.method == "POST" and entity is not None and not evaluating:
        try:
            ok, result = attempt(
                request,
                lambda: services.place_order(
                    package=package,
                    entity=entity,
                    actor=request.user,
                    data=request.POST,
                    files=request.FILES,
                    comment=request.POST.get("comment", "").strip(),
                    submit=request.POST.get("action") == "submit",
                    local_values=local_form.raw_values(),
                ),
            )
        except ValidationError as exc:
            _attach(form, exc)
            local_form.full_clean()
            ok, result = False, None
        if ok and result is not None:
            add_warnings(request, result.warnings)
            messages.success(request, _order_message(result.order))
            return redirect("packages:order_detail", result.order.pk)
    elif request.method == "POST" and entity is None:
        messages.error(request, "Choose the entity you order for.")
    return render(
        request,
        "packages/order_form.html",
        {
            "package": package,
            "form": form,
            "local_form": local_form,
            "chooser": chooser if candidates.count() > 1 else None,
            "entity": entity,
            "creating": True,
            "personalisation_late": package.personalisation_late(),
            **_evaluation(request, package=package, entity=entity, local_form=local_form),
        },
    )


def _evaluation(
    request: HttpRequest,
    *,
    package: Package,
    entity: Entity | None,
    local_form: LocalConditionsForm,
) -> dict[str, Any]:
    """The Evaluate button's answer (a POST that only computes), or, for a package without
    local conditions, the entity's estimated target shown before ordering."""
    context: dict[str, Any] = {"evaluation": None, "evaluated": False}
    evaluate = request.method == "POST" and request.POST.get("action") == "evaluate"
    if entity is None or not (evaluate or not local_form.parameters):
        return context
    if evaluate and not local_form.is_valid():
        return context  # the refusals show on their fields
    try:
        ok, result = attempt(
            request,
            lambda: services.evaluate_order(
                package=package,
                entity=entity,
                actor=request.user,
                local_values=local_form.raw_values(),
                validate=evaluate,
            ),
        )
    except ValidationError:  # the form found the same refusals and shows them
        return context
    context.update(evaluation=result if ok else None, evaluated=evaluate)
    return context


def _attach(form: PersonalisationForm, exc: ValidationError) -> None:
    """The service's refusals: local conditions' ones show on the local form (which found
    them itself), the others on the personalisation form."""
    if not hasattr(exc, "error_dict"):
        form.attach_errors(exc)
        return
    others = {
        name: messages
        for name, messages in exc.message_dict.items()
        if not name.startswith(services.LOCAL_PREFIX)
    }
    if others:
        form.attach_errors(ValidationError(others))


def _order_message(order: Order) -> str:
    return {
        "draft": "Your order is saved as a draft. Submit it when it is complete.",
        "submitted": "Your order is submitted: the central team has been asked to approve it.",
        "preregistered": "Your registration is recorded; no approval is needed.",
    }.get(order.state, "Your order is saved.")


def _value_rows(order: Order) -> list[dict[str, Any]]:
    return value_rows(
        order.package.reference_campaign.personalisation_fields.all(),
        order.values,
        file_url=lambda name: reverse("packages:order_file", args=[order.pk, name]),
    )


def _local_rows(order: Order) -> list[tuple[str, str]]:
    from campaigns.targeting import local

    return local.value_rows(services.local_parameters(order.package), order.local_values)


def _targeting_words(child: Campaign | None, run: ScheduledRun | None) -> dict[str, str]:
    """What the order's child campaign targets (its query step, with the local values), and
    what the local values add to a scheduled run, in words."""
    from campaigns.targeting import local
    from campaigns.targeting.words import condition_words

    words: dict[str, str] = {}
    step = local.targeting_step(child) if child else None
    if step is not None:
        words["child_targeting"] = condition_words(
            (step.settings or {}).get("conditions"), local.step_dimension(step)
        )
    if run is not None and run.local_targeting:
        words["run_targeting"] = condition_words(
            run.local_targeting, local.step_dimension(local.targeting_step(run.campaign))
        )
    return words


@login_required
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = _visible_order(request, pk)
    package = order.package
    history = AuditLog.objects.for_object(order).select_related("actor")
    approval_requests = ApprovalRequest.objects.for_object(order).select_related("decided_by")
    may_change = request.user.has_perm("packages.change_order") and package.registration_open()
    child = Campaign.objects.filter(order=order).first()
    scheduled_run = ScheduledRun.objects.filter(order=order).first()
    return render(
        request,
        "packages/order_detail.html",
        {
            "order": order,
            "package": package,
            "rows": _value_rows(order),
            "local_rows": _local_rows(order),
            "history": history,
            "approval_requests": approval_requests,
            "child": child,
            "scheduled_run": scheduled_run,
            **_targeting_words(child, scheduled_run),
            "can_edit": may_change
            and order.state in EDITABLE_ORDER_STATES
            and package.state == PackageState.PUBLISHED,
            "can_submit": may_change and order.state == "draft",
            "can_cancel": may_change and order.state in ACTIVE_ORDER_STATES,
            "personalisation_late": package.personalisation_late(),
        },
    )


@login_required
def order_edit(request: HttpRequest, pk: int) -> HttpResponse:
    order = _visible_order(request, pk)
    if not request.user.has_perm("packages.change_order"):
        raise PermissionDenied("Your role does not allow changing orders.")
    definitions = order.package.reference_campaign.personalisation_fields.all()
    form = PersonalisationForm(
        definitions,
        request.POST or None,
        request.FILES or None,
        stored=order.values,
        comment=order.comment,
    )
    local_form = LocalConditionsForm(
        services.local_parameters(order.package), request.POST or None, stored=order.local_values
    )
    evaluating = request.method == "POST" and request.POST.get("action") == "evaluate"
    if request.method == "POST" and not evaluating:
        try:
            ok, result = attempt(
                request,
                lambda: services.update_order(
                    order=order,
                    actor=request.user,
                    data=request.POST,
                    files=request.FILES,
                    comment=request.POST.get("comment", "").strip(),
                    local_values=local_form.raw_values() if local_form.parameters else None,
                ),
            )
        except ValidationError as exc:
            _attach(form, exc)
            local_form.full_clean()
            ok, result = False, None
        if ok and result is not None:
            add_warnings(request, result.warnings)
            messages.success(request, "Your changes are saved.")
            if request.POST.get("action") == "submit" and result.order.state == "draft":
                return order_submit(request, pk)
            return redirect("packages:order_detail", order.pk)
    return render(
        request,
        "packages/order_form.html",
        {
            "package": order.package,
            "order": order,
            "form": form,
            "local_form": local_form,
            "entity": order.entity,
            "creating": False,
            "personalisation_late": order.package.personalisation_late(),
            **_evaluation(
                request, package=order.package, entity=order.entity, local_form=local_form
            ),
        },
    )


@login_required
@require_POST
def order_submit(request: HttpRequest, pk: int) -> HttpResponse:
    order = _visible_order(request, pk)
    ok, _ = attempt(request, lambda: services.submit_order(order=order, actor=request.user))
    if ok:
        messages.success(request, _order_message(Order.objects.get(pk=order.pk)))
    return redirect("packages:order_detail", order.pk)


@login_required
@require_POST
def order_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    order = _visible_order(request, pk)
    ok, cancelled = attempt(
        request,
        lambda: services.cancel_order(
            order=order, actor=request.user, comment=request.POST.get("comment", "").strip()
        ),
    )
    if ok:
        from campaigns.models import Campaign

        stopped = Campaign.objects.filter(order=cancelled, state="stopped").exists()
        tail = "; its campaign is stopped" if stopped else ""
        messages.success(request, f"Cancelled; order {cancelled} is withdrawn{tail}.")
    return redirect("packages:order_detail", order.pk)


@login_required
def order_file(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    return stored_value_response(_visible_order(request, pk).values, name)


@login_required
def order_list(request: HttpRequest) -> HttpResponse:
    orders = (
        Order.objects.visible_to(request.user)
        .select_related("package", "entity")
        .order_by("-updated_at", "-id")
    )
    state = request.GET.get("state", "")
    if state:
        orders = orders.filter(state=state)
    page = Paginator(orders, 50).get_page(page_number(request))
    return render(
        request,
        "packages/order_list.html",
        {"page": page, "state": state, "states": OrderState.choices},
    )
