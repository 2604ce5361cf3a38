"""API views. Each one reads through ``visible_to`` and changes through the apps' services:
an object outside the caller's rights answers 404, a refused action the service's message."""

from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api import filters
from api import serializers as s
from api.models import ApiToken
from api.problems import BodyLimitMixin, ProblemValidationError
from api.services import create_token, revoke_token
from approvals import services as approval_services
from approvals.choices import DecisionChannel
from approvals.models import ApprovalRequest
from campaigns import imports, targeting
from campaigns import services as campaign_services
from campaigns.choices import ImportKind
from campaigns.delivery.reports import delivery_figures
from campaigns.models import Booking, Campaign, Contact, Delivery, Store, Subscription
from packages import services as package_services
from packages.models import Order, Package
from portal import services as portal_services
from portal.models import Entity, is_central_user


def _require(request: Request, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")


def _visible_entity(request: Request, code: Any, *, path: str = "entity") -> Entity:
    entity = Entity.objects.visible_to(request.user).filter(code=str(code)).first()
    if entity is None:
        raise ProblemValidationError([{"path": path, "message": f"“{code}” is not found."}])
    return entity


class ReadPermissionMixin:
    """Reading a kind of object needs the role's view permission (as in the admin)."""

    view_permission = ""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if self.view_permission:
            _require(request, self.view_permission)


class ApiViewSet(BodyLimitMixin, ReadPermissionMixin, viewsets.GenericViewSet):
    pass


# Entities ----------------------------------------------------------------------------------


class EntityViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = s.EntitySerializer
    view_permission = "portal.view_entity"
    filterset_fields = ["kind", "active", "code"]

    def get_queryset(self) -> Any:
        return Entity.objects.visible_to(self.request.user).select_related("parent")


# Audience data -----------------------------------------------------------------------------


class AudienceViewSet(
    ApiViewSet,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
):
    """List and read through ``visible_to``; create, update and bulk upsert through the
    import resources of ``campaigns.imports`` (same validation, scoping and messages);
    delete with the model's delete permission, as in the admin."""

    model: Any = None
    kind = ""
    scope_column: str | None = "entity"  # the row's entity column, if the kind has one
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    @property
    def view_permission(self) -> str:  # type: ignore[override]
        return f"campaigns.view_{self.model._meta.model_name}"

    def get_queryset(self) -> Any:
        queryset = self.model.objects.visible_to(self.request.user)
        related = [
            f.name for f in self.model._meta.concrete_fields if f.is_relation and f.name != "id"
        ]
        return queryset.select_related(*related)

    def _columns(self) -> list[str]:
        return list(imports.RESOURCES[self.kind]().fields)

    def _scope(self, code: Any, obj: Any = None) -> Entity | None:
        """The entity rows are imported for: the one named, else a local user's only
        entity, else (an update) the object's own entity; None for central users."""
        if code:
            return _visible_entity(self.request, code)
        user = self.request.user
        if is_central_user(user):
            return None
        own = list(Entity.objects.filter(memberships__user=user).distinct()[:2])
        if len(own) == 1:
            return own[0]
        return obj.owning_entity if obj is not None else None

    def _import(self, rows: list[dict], *, entity: Entity | None, **options: Any) -> dict:
        return imports.import_rows(
            kind=self.kind, rows=rows, actor=self.request.user, entity=entity, **options
        )

    def _refuse(self, result: dict, *, prefix: str = "") -> None:
        errors = [
            {
                "path": "/".join(p for p in (prefix and f"{prefix}/{row}", field) if p),
                "row": row,
                "field": field,
                "message": message,
            }
            for row, field, message in result["problems"]
        ]
        raise ProblemValidationError(errors, "Nothing was written: some rows are invalid.")

    def _row(self, data: Any) -> dict[str, Any]:
        serializer = s.row_serializer(self._columns(), name=f"{self.kind}_row")(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def create(self, request: Request) -> Response:
        row = self._row(request.data)
        entity = self._scope(row.get(self.scope_column) if self.scope_column else None)
        result = self._import([row], entity=entity, expect="new")
        if result["problems"]:
            self._refuse(result)
        key = imports.RESOURCES[self.kind]._meta.import_id_fields[0]
        obj = self._find(row, key)
        return Response(self.get_serializer(obj).data, status=status.HTTP_201_CREATED)

    def _find(self, row: dict, key: str) -> Any:
        model_key = {"contact": "contact__external_id"}.get(key, key)
        lookup = {model_key: row[key]}
        if self.kind == ImportKind.SUBSCRIPTIONS:
            lookup = {
                "contact__external_id": row["contact"],
                "product": row["product"],
                "start_date": row["start_date"],
            }
        return self.get_queryset().get(**lookup)

    def update(self, request: Request, pk: Any = None, partial: bool = False) -> Response:
        obj = self.get_object()
        resource = imports.RESOURCES[self.kind]()
        current = dict(
            zip(resource.get_export_headers(), resource.export_resource(obj), strict=False)
        )
        changes = self._row(request.data)
        keys = list(resource._meta.import_id_fields)
        for key in keys:
            if key in changes and str(changes[key]) != str(current.get(key, "")):
                raise ProblemValidationError(
                    [{"path": key, "message": "The key of an existing row cannot change."}]
                )
        row = {**{k: current.get(k) for k in keys}, **changes}
        if not partial:
            row = {**{c: current.get(c) for c in self._columns()}, **changes}
        entity = self._scope(self.request.query_params.get("entity"), obj)
        result = self._import([row], entity=entity, expect="existing")
        if result["problems"]:
            self._refuse(result)
        obj = self.get_queryset().get(pk=obj.pk)
        return Response(self.get_serializer(obj).data)

    def partial_update(self, request: Request, pk: Any = None) -> Response:
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, instance: Any) -> None:
        _require(self.request, f"campaigns.delete_{self.model._meta.model_name}")
        with transaction.atomic():
            portal_services.record_audit(
                obj=instance,
                action=f"delete_{self.model._meta.model_name}",
                actor=self.request.user,
            )
            instance.delete()

    @extend_schema(request=s.BulkSerializer, responses={200: s.BulkResultSerializer})
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        """Upsert up to API_BULK_MAX_ROWS rows keyed by their natural key, all or nothing
        (unless ``import_valid_rows``); the same rows again change nothing. Every kind takes
        the import's set-based write path (``imports.import_rows`` → ``campaigns.staging``)."""
        payload = s.BulkSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        columns = set(self._columns())
        problems = [
            (number, field, message)
            for number, raw in enumerate(data["rows"])
            for field, message in s.row_problems(raw, columns)
        ]
        if problems:
            self._refuse({"problems": problems}, prefix="rows")
        entity = self._scope(data.get("entity"))
        options = {"import_valid_rows": data["import_valid_rows"], "dry_run": data["dry_run"]}
        result = self._import(data["rows"], entity=entity, **options)
        if result["problems"] and not data["import_valid_rows"] and not data["dry_run"]:
            self._refuse(result, prefix="rows")
        result["problems"] = [
            {"row": row, "field": field, "message": message}
            for row, field, message in result["problems"]
        ]
        return Response(result)


def documented_rows(viewset: Any) -> Any:
    """Document create, update and partial update as taking a row of the kind's import
    columns (values as in an import file) and answering the object."""
    row = s.row_serializer(
        list(imports.RESOURCES[viewset.kind]().fields), name=f"{viewset.kind}_row"
    )
    answer = viewset.serializer_class
    return extend_schema_view(
        create=extend_schema(request=row, responses={201: answer}),
        update=extend_schema(request=row, responses={200: answer}),
        partial_update=extend_schema(request=row, responses={200: answer}),
    )(viewset)


@documented_rows
class ContactViewSet(AudienceViewSet):
    """Contacts: natural key ``external_id``; ``entity`` is an entity code."""

    model = Contact
    kind = ImportKind.CONTACTS
    serializer_class = s.ContactSerializer
    filterset_fields = ["external_id", "email", "language", "blocklisted"]


@documented_rows
class StoreViewSet(AudienceViewSet):
    """Stores: natural key ``code``; ``entity`` is an entity code."""

    model = Store
    kind = ImportKind.STORES
    serializer_class = s.StoreSerializer
    filterset_fields = ["code", "city"]


@documented_rows
class BookingViewSet(AudienceViewSet):
    """Bookings: natural key ``reference``; ``contact`` is an external id, ``store`` a code."""

    model = Booking
    kind = ImportKind.BOOKINGS
    scope_column = None
    serializer_class = s.BookingSerializer
    filterset_fields = ["reference", "status", "product"]


@documented_rows
class SubscriptionViewSet(AudienceViewSet):
    """Subscriptions: natural key (``contact``, ``product``, ``start_date``)."""

    model = Subscription
    kind = ImportKind.SUBSCRIPTIONS
    scope_column = None
    serializer_class = s.SubscriptionSerializer
    filterset_fields = ["status", "product"]


# Counts ------------------------------------------------------------------------------------


class CountView(BodyLimitMixin, APIView):
    """Exact counts of a condition tree, of what the caller may see (read scope)."""

    required_scopes = {None: "read"}

    @extend_schema(request=s.CountRequestSerializer, responses={200: s.CountResultSerializer})
    def post(self, request: Request) -> Response:
        payload = s.CountRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        conditions = targeting.parse_conditions(data.get("conditions") or {})
        entity = _visible_entity(request, data["entity"]) if data.get("entity") else None
        started = time.perf_counter()
        result = targeting.count(data["dimension"], conditions, user=request.user, entity=entity)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return Response({**result.as_dict(), "milliseconds": elapsed})


# Packages and orders -----------------------------------------------------------------------


class PackageViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = s.PackageSerializer
    view_permission = "packages.view_package"
    filterset_fields = ["state", "category"]

    def get_queryset(self) -> Any:
        return Package.objects.visible_to(self.request.user)


class OrderViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Orders: create, change values, submit and cancel through the packages services."""

    serializer_class = s.OrderSerializer
    view_permission = "packages.view_order"
    filterset_class = filters.OrderFilter
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self) -> Any:
        return Order.objects.visible_to(self.request.user).select_related("entity")

    @extend_schema(request=s.OrderCreateSerializer, responses={201: s.OrderSerializer})
    def create(self, request: Request) -> Response:
        payload = s.OrderCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        package = Package.objects.visible_to(request.user).filter(pk=data["package"]).first()
        if package is None:
            raise ProblemValidationError([{"path": "package", "message": "Unknown package."}])
        entity = _visible_entity(request, data["entity"])
        result = package_services.place_order(
            package=package,
            entity=entity,
            actor=request.user,
            data=data["values"],
            comment=data["comment"],
            submit=data["submit"],
            local_values=data["local_values"],
        )
        body = self.get_serializer(result.order).data
        return Response({**body, "warnings": result.warnings}, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.OrderUpdateSerializer, responses={200: s.OrderSerializer})
    def partial_update(self, request: Request, pk: Any = None) -> Response:
        order = self.get_object()
        payload = s.OrderUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = package_services.update_order(
            order=order,
            actor=request.user,
            data=payload.validated_data["values"],
            comment=payload.validated_data.get("comment"),
            local_values=payload.validated_data.get("local_values"),
        )
        return Response({**self.get_serializer(result.order).data, "warnings": result.warnings})

    @extend_schema(request=None, responses={200: s.OrderSerializer})
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, pk: Any = None) -> Response:
        order = package_services.submit_order(order=self.get_object(), actor=request.user)
        return Response(self.get_serializer(order).data)

    @extend_schema(request=s.CommentSerializer, responses={200: s.OrderSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: Any = None) -> Response:
        payload = s.CommentSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        order = package_services.cancel_order(
            order=self.get_object(), actor=request.user, comment=payload.validated_data["comment"]
        )
        return Response(self.get_serializer(order).data)


# Approvals ---------------------------------------------------------------------------------


class ApprovalViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """Approval requests the caller may see; ``decide`` as an approver."""

    serializer_class = s.ApprovalSerializer
    view_permission = "approvals.view_approvalrequest"
    filterset_fields = ["state", "kind"]

    def get_queryset(self) -> Any:
        return ApprovalRequest.objects.visible_to(self.request.user).select_related("entity")

    @extend_schema(request=s.DecisionSerializer, responses={200: s.ApprovalSerializer})
    @action(detail=True, methods=["post"])
    def decide(self, request: Request, pk: Any = None) -> Response:
        payload = s.DecisionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        decided = approval_services.decide(
            request=self.get_object(),
            actor=request.user,
            approve=payload.validated_data["approve"],
            comment=payload.validated_data["comment"],
            via=DecisionChannel.PORTAL,
        )
        decided.refresh_from_db()
        return Response(self.get_serializer(decided).data)


# Campaigns and deliveries ------------------------------------------------------------------


class CampaignViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = s.CampaignSerializer
    view_permission = "campaigns.view_campaign"
    filterset_class = filters.CampaignFilter

    def get_queryset(self) -> Any:
        return Campaign.objects.visible_to(self.request.user).select_related("entity")

    @extend_schema(request=s.CampaignStartSerializer, responses={200: s.CampaignSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: Any = None) -> Response:
        """Start a child campaign now, schedule its start (``at``) or withdraw a scheduled
        start (``unschedule``), by the same rule as the portal and the admin."""
        campaign = self.get_object()
        payload = s.CampaignStartSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        if payload.validated_data["unschedule"]:
            campaign = campaign_services.unschedule_start(campaign=campaign, actor=request.user)
        elif payload.validated_data["at"] is not None:
            campaign = campaign_services.schedule_start(
                campaign=campaign, actor=request.user, at=payload.validated_data["at"]
            )
        else:
            run = campaign_services.start_campaign(campaign=campaign, actor=request.user)
            campaign = run.campaign
        return Response(self.get_serializer(campaign).data)


class DeliveryViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    serializer_class = s.DeliverySerializer
    filterset_class = filters.DeliveryFilter

    def get_queryset(self) -> Any:
        return Delivery.objects.visible_to(self.request.user)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Deliveries are seen with their campaign (local operators have no delivery right).
        if not (
            request.user.has_perm("campaigns.view_delivery")
            or request.user.has_perm("campaigns.view_campaign")
        ):
            raise PermissionDenied("Your role does not allow this.")

    @extend_schema(responses={200: s.FiguresSerializer})
    @action(detail=True, methods=["get"])
    def report(self, request: Request, pk: Any = None) -> Response:
        """Messages by status and exclusions by rule (they add up once the send is over)."""
        figures = delivery_figures(self.get_object())
        return Response(s.FiguresSerializer(figures).data)


# Tokens ------------------------------------------------------------------------------------


class TokenViewSet(ApiViewSet, mixins.ListModelMixin, mixins.RetrieveModelMixin):
    """The caller's own tokens. Creating one needs a logged-in session or a token with the
    write scope; the secret is in the answer once."""

    serializer_class = s.TokenSerializer

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return ApiToken.objects.visible_to(self.request.user).filter(user=self.request.user)

    @extend_schema(request=s.TokenCreateSerializer, responses={201: s.NewTokenSerializer})
    def create(self, request: Request) -> Response:
        payload = s.TokenCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        new = create_token(user=request.user, **payload.validated_data)
        body = {**s.TokenSerializer(new.token).data, "key": new.key}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.TokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: Any = None) -> Response:
        token = revoke_token(token=self.get_object(), actor=request.user)
        return Response(s.TokenSerializer(token).data)
