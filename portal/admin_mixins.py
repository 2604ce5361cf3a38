"""Admin building blocks reused by every app: entity scoping, audit history, service-backed
transition buttons."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.admin import GenericTabularInline
from django.core.exceptions import EmptyResultSet, PermissionDenied, ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db import connection, connections, models
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django_fsm import can_proceed
from import_export.admin import ExportMixin

from portal.confirm import Confirmation, reason_form
from portal.exceptions import DomainError
from portal.models import AuditLog
from portal.validation import JSONFormField


class EntityScopedAdminMixin:
    """Limit an admin to the objects of the entities the user may see (404 for the rest).

    Models expose ``objects.visible_to(user)``; superusers and central operators see all,
    because the central group holds rights on every entity.
    """

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return queryset.visible_to(request.user)


class BoundedJSONAdminMixin:
    """JSON fields parsed with bounded nesting: a deeply nested value is a form error, not a
    500 (``json.loads`` raises ``RecursionError``, which Django's JSON form field lets out)."""

    formfield_overrides = {models.JSONField: {"form_class": JSONFormField}}


class ReadOnlyAdminMixin:
    """Rows changed only through services: the admin lists and shows them, nothing more."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditLogInline(ReadOnlyAdminMixin, GenericTabularInline):
    """The object's history (audit entries), read-only, newest first."""

    model = AuditLog
    ct_field = "content_type"
    ct_fk_field = "object_id"
    fields = ["created_at", "actor_repr", "action", "from_state", "to_state", "comment"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "history entry"
    verbose_name_plural = "history (audit log)"
    ordering = ["-created_at", "-id"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent object's own rights already apply


ServiceAction = Callable[..., Any]
Describe = Callable[[Any, Any], str]


class ServiceTransitionAdminMixin:
    """Transition buttons on the change form that call services, never raw FSM methods.

    ``transition_actions`` maps a button name to ``(label, service_call)``; the call receives
    ``(obj, actor, request)``, plus ``reason=`` for the actions of ``transition_confirmations``
    (name → function of the object giving its ``Confirmation``): those buttons open a
    confirmation page that asks for a reason first. ``transition_done_messages`` says what
    happened: a function of ``(object, what the service returned)``. Domain errors,
    permission refusals and validation errors are shown as messages and change nothing.
    """

    change_form_template = "admin/portal/transition_change_form.html"
    transition_actions: dict[str, tuple[str, ServiceAction]] = {}
    transition_confirmations: dict[str, Callable[[Any], Confirmation]] = {}
    transition_done_messages: dict[str, Describe] = {}

    def available_transition_actions(self, obj: Any, request: HttpRequest) -> list[tuple]:
        """Buttons whose FSM transition of the same name can proceed from the object's state
        (buttons without such a transition are always offered)."""
        actions = []
        for name, (label, _call) in self.transition_actions.items():
            method = getattr(obj, name, None)
            if hasattr(method, "_django_fsm") and not can_proceed(method):
                continue
            actions.append((name, label))
        return actions

    def get_urls(self):  # type: ignore[no-untyped-def]
        meta = self.model._meta  # type: ignore[attr-defined]
        return [
            path(
                "<path:object_id>/run/<str:action>/",
                self.admin_site.admin_view(self.run_transition_view),  # type: ignore[attr-defined]
                name=f"{meta.app_label}_{meta.model_name}_run",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):  # type: ignore[no-untyped-def]
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        context = dict(extra_context or {})
        if obj is not None:
            meta = self.model._meta  # type: ignore[attr-defined]
            context["transition_buttons"] = [
                (
                    label,
                    reverse(f"admin:{meta.app_label}_{meta.model_name}_run", args=[obj.pk, name]),
                    name in self.transition_confirmations,
                )
                for name, label in self.available_transition_actions(obj, request)
            ]
        return super().change_view(request, object_id, form_url, extra_context=context)  # type: ignore[misc]

    def run_transition_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponse:
        confirm = action in self.transition_confirmations
        if request.method != "POST" and not confirm:
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        if obj is None or action not in self.transition_actions:
            raise Http404
        meta = self.model._meta  # type: ignore[attr-defined]
        back = redirect(f"admin:{meta.app_label}_{meta.model_name}_change", obj.pk)
        if action not in dict(self.available_transition_actions(obj, request)):
            # Only what the object's buttons offer: a forged POST runs nothing else.
            self.message_user(  # type: ignore[attr-defined]
                request, f"“{self.transition_actions[action][0]}” is not available now.",
                messages.ERROR,
            )  # fmt: skip
            return back
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        label, call = self.transition_actions[action]
        kwargs = {}
        if confirm:
            confirmation = self.transition_confirmations[action](obj)
            form = reason_form(request, confirmation)
            if not form.is_valid():
                return TemplateResponse(
                    request,
                    "admin/portal/confirm_transition.html",
                    {
                        **self.admin_site.each_context(request),  # type: ignore[attr-defined]
                        "title": confirmation.title,
                        "object": obj,
                        "opts": meta,
                        "confirmation": confirmation,
                        "form": form,
                        "action_url": request.path,
                        "back_url": back.url,
                    },
                )
            kwargs["reason"] = form.cleaned_data["reason"]
        try:
            result = call(obj, request.user, request, **kwargs)
        except DomainError as exc:
            for problem in exc.problems:
                self.message_user(request, problem, messages.ERROR)  # type: ignore[attr-defined]
        except (PermissionDenied, ValidationError) as exc:
            text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            self.message_user(request, text or "You may not do that.", messages.ERROR)  # type: ignore[attr-defined]
        else:
            describe = self.transition_done_messages.get(action)
            obj.refresh_from_db()
            done = describe(obj, result) if describe else f"{label}: done."
            self.message_user(request, done, messages.SUCCESS)  # type: ignore[attr-defined]
        return back


class LabelledAutocompleteJsonView(AutocompleteJsonView):
    """Autocomplete results named by the model's ``autocomplete_label()`` when it has one
    (type, state and id for campaigns), else by ``str()`` as Django does."""

    def serialize_result(self, obj: Any, to_field_name: str) -> dict[str, str]:
        result = super().serialize_result(obj, to_field_name)
        label = getattr(obj, "autocomplete_label", None)
        if callable(label):
            result["text"] = label()
        return result


def use_labelled_autocomplete(site: admin.AdminSite) -> None:
    site.autocomplete_view = lambda request: LabelledAutocompleteJsonView.as_view(  # type: ignore[method-assign]
        admin_site=site
    )(request)


def register_site_titles(site: admin.AdminSite, site_name: str) -> None:
    site.site_header = f"{site_name} — central workspace"
    site.site_title = site_name
    site.index_title = "Campaigns, packages, entities and operators"


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """A filter on a column's values, read from its index instead of a DISTINCT over the table.

    Django's values filter runs ``SELECT DISTINCT column`` over the whole list on every page
    load: on a million-row table that is a full scan for a handful of values. On PostgreSQL a
    central user's choices come from a skip scan of the column's btree index (one index probe
    per distinct value, a few milliseconds), at most ``limit`` of them. Other users keep the
    scoped DISTINCT: their lists are one entity's rows, and they must not see another entity's
    values.
    """

    limit = 100

    def __init__(self, field, request, params, model, model_admin, field_path):  # type: ignore[no-untyped-def]
        super().__init__(field, request, params, model, model_admin, field_path)
        from portal.models import is_central_user

        indexed = model is field.model and field.db_index
        if indexed and connection.vendor == "postgresql" and is_central_user(request.user):
            self.lookup_choices = skip_scan_values(model, field.column, self.limit)


def skip_scan_values(model: type[models.Model], column: str, limit: int) -> list[Any]:
    """The distinct non-null values of an indexed column, in order, by a recursive skip scan.

    Table and column names come from the model's metadata, never from a request."""
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(column)
    sql = (
        f"WITH RECURSIVE v(x) AS ("
        f" (SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 1)"
        f" UNION ALL SELECT (SELECT {column} FROM {table} WHERE {column} > v.x ORDER BY 1 LIMIT 1)"
        f" FROM v WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class BoundedPaginator(Paginator):
    """Pages of a huge list without counting it, and without walking deep offsets.

    On PostgreSQL a list takes the planner's estimate of its rows (``EXPLAIN`` of the list's
    own query, parameters bound) and is counted exactly only when that estimate is below
    ``exact_below``: a COUNT(*) of a quarter of a million filtered rows costs more than the
    page itself. Pages stop at ``max_pages``: page 15,000 of a booking list is an OFFSET of
    1.5M rows that no one reads; a search or a filter finds a row faster.
    """

    max_pages = 200
    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connection.vendor == "postgresql" and isinstance(queryset, models.QuerySet):
            estimate = planner_estimate(queryset)
            if estimate >= self.exact_below:
                return estimate
        return super().count

    @cached_property
    def num_pages(self) -> int:
        return min(super().num_pages, self.max_pages)

    def validate_number(self, number: Any) -> int:
        """A page past the end (or past the bound) shows the last one, not an error."""
        try:
            return super().validate_number(number)
        except EmptyPage:
            if int(number) < 1:
                raise
            return self.num_pages


def planner_estimate(queryset: models.QuerySet) -> int:
    """The planner's estimate of the rows a queryset selects (its SQL, its bound parameters).
    A queryset that cannot match anything (``none()``, ``pk__in=[]``) has no SQL: 0 rows."""
    try:
        sql, params = queryset.order_by().query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return 0
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EntityListFilter(admin.RelatedFieldListFilter):
    """The entity filter of a large list: the local entities the user may see, read from the
    entity table (Django's "related only" filter reads DISTINCT entity ids from the list)."""

    def field_choices(self, field, request, model_admin):  # type: ignore[no-untyped-def]
        from portal.models import Entity

        entities = Entity.objects.visible_to(request.user).filter(kind="local")
        return [(entity.pk, str(entity)) for entity in entities.order_by("name")]


class SortableOnlyChangeList(ChangeList):
    """A changelist sorted only by the columns of ``sortable_by``: Django leaves them out of
    the headers but still obeys a hand-written ``?o=`` naming any other column."""

    def get_ordering_field(self, field_name: Any) -> Any:
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


class LargeTableAdminMixin:
    """Lists of million-row tables (contacts, bookings, subscriptions, messages, webhook
    deliveries): no facet counts, no full result count, an estimated and bounded paginator,
    and values filters read from indexes. Searches and sorts of such lists name indexed
    columns only (each admin's ``sortable_by``, enforced for hand-written URLs too)."""

    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    paginator = BoundedPaginator
    list_per_page = 100

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SortableOnlyChangeList


class BackgroundExportMixin(ExportMixin):
    """django-import-export's export page (formats, column choice, the changelist's filters),
    with the file never built in memory (``portal.exports``): up to
    ``EXPORT_IMMEDIATE_MAX_ROWS`` rows are streamed in the response; more become an export job
    written by a worker, and the page goes to its progress page, which offers the download.

    ``export_kind`` names the ``portal.exports`` list; its column names are the resource's."""

    export_kind = ""

    def _do_file_export(  # type: ignore[override]
        self, file_format: Any, request: HttpRequest, queryset: Any, export_form: Any = None
    ) -> HttpResponse:
        from portal import exports, spreadsheets
        from portal.choices import ExportFormat

        if not self.has_export_permission(request):
            raise PermissionDenied
        kind = exports.get_kind(self.export_kind)
        fmt = ExportFormat.XLSX if isinstance(file_format, spreadsheets.XLSX) else ExportFormat.CSV
        names = self.get_export_resource_fields_from_form(export_form) or []
        columns = exports.chosen_columns(kind, names)
        selected = export_form is not None and "export_items" in export_form.changed_data
        if selected or not queryset[exports.immediate_limit() :].exists():
            # A selection from one page, or few rows: answered at once, streamed.
            name = f"{kind.name}-{timezone.localdate():%Y-%m-%d}"
            return exports.stream_response(
                kind=kind, queryset=queryset, columns=columns, file_format=fmt, name=name
            )
        try:
            job = exports.create_export(
                actor=request.user,
                kind=kind.name,
                file_format=fmt,
                filters=exports.admin_filters(request),
                columns=[column.name for column in columns],
            )
        except DomainError as exc:
            messages.error(request, str(exc))
            return redirect(request.get_full_path())
        messages.success(
            request,
            "The export is being prepared by a worker; this page shows its progress and "
            "offers the file when it is ready.",
        )
        return redirect("admin:portal_exportjob_change", job.pk)


class ResendActionMixin:
    """The "resend the selected failed rows" action of an outbox admin (notifications,
    webhook deliveries): each row through its service, refusals listed one by one.

    Set ``resend_row(row, actor)``, ``resend_noun`` and ``resend_permission``."""

    resend_noun = "row(s)"
    resend_permission = ""
    actions = ["resend"]

    def resend_row(self, row: Any, actor: Any) -> None:
        raise NotImplementedError

    @admin.action(description="Resend the selected failed rows", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: models.QuerySet) -> None:
        done, refused = 0, []
        for row in queryset:
            try:
                self.resend_row(row, request.user)
                done += 1
            except (DomainError, PermissionDenied) as exc:
                refused.append(f"#{row.pk}: {exc}")
        if done:
            self.message_user(  # type: ignore[attr-defined]
                request, f"{done} {self.resend_noun} queued again.", messages.SUCCESS
            )
        for text in refused:
            self.message_user(request, text, messages.WARNING)  # type: ignore[attr-defined]

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(self.resend_permission)
