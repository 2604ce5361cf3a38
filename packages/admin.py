"""Central workspace for packages and orders."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import linebreaksbr
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from import_export import fields, resources

from campaigns.models import Campaign
from campaigns.personalisation import value_rows
from packages import services
from packages.choices import ACTIVE_ORDER_STATES, OrderState, PackageState
from packages.exports import values_text
from packages.forms import PackageAdminForm
from packages.models import Order, Package, PackageDocument
from portal import services as portal_services
from portal import spreadsheets
from portal.admin_mixins import (
    AuditLogInline,
    BackgroundExportMixin,
    EntityScopedAdminMixin,
    ReadOnlyAdminMixin,
    ServiceTransitionAdminMixin,
)
from portal.confirm import Confirmation
from portal.web import counted


class PackageDocumentInline(admin.TabularInline):
    model = PackageDocument
    extra = 0
    fields = ["title", "file", "uploaded_at"]
    readonly_fields = ["uploaded_at"]


def _counts_annotation() -> dict[str, Count]:
    return {
        f"orders_{state}": Count("orders", filter=Q(orders__state=state))
        for state in OrderState.values
    }


def published_message(done: services.PackageChange) -> str:
    parts = [f"{counted(done.entities_notified, 'entity', 'entities')} notified"]
    if done.orders_preregistered:
        parts.append(f"{counted(done.orders_preregistered, 'entity', 'entities')} pre-registered")
    return f"Published; {'; '.join(parts)}."


def cancelled_message(done: services.PackageChange) -> str:
    return (
        f"Cancelled; {counted(done.orders_cancelled, 'order')} cancelled, "
        f"{counted(done.entities_notified, 'entity', 'entities')} notified."
    )


def cancel_confirmation(package: Package) -> Confirmation:
    orders = package.orders.filter(state__in=ACTIVE_ORDER_STATES).count()
    consequences = [f"Its {counted(orders, 'open order')} will be cancelled and their child "
                    "campaigns stopped (those not yet run)."]  # fmt: skip
    if package.state == PackageState.PUBLISHED:
        consequences.append(
            "Every entity concerned is emailed the reason, with a link to the package."
        )
    consequences.append("This cannot be undone.")
    return Confirmation(
        title=f"Cancel the package “{package}”?",
        button="Cancel the package",
        consequences=consequences,
        reason_help="Kept in the history and written in the email to the entities.",
    )


@admin.register(Package)
class PackageAdmin(ServiceTransitionAdminMixin, admin.ModelAdmin):
    form = PackageAdminForm
    list_display = [
        "label",
        "state",
        "collaborative_type_display",
        "category",
        "registration_deadline",
        "visible_until",
        "order_counts",
    ]
    list_filter = ["state", "category", "approval_mode", "reference_campaign__collaborative_type"]
    search_fields = ["label", "description", "category", "reference_campaign__name"]
    autocomplete_fields = ["reference_campaign", "audience"]
    readonly_fields = ["state", "published_at", "created_by", "created_at", "order_summary",
                       "delivery_summary"]  # fmt: skip
    inlines = [PackageDocumentInline, AuditLogInline]
    list_select_related = ["reference_campaign"]
    date_hierarchy = "registration_deadline"
    fieldsets = [
        (None, {"fields": ["label", "description", "category", "reference_campaign", "state"]}),
        (
            "Dates",
            {
                "fields": [
                    ("visible_from", "visible_until"),
                    ("registration_deadline", "personalisation_deadline"),
                    ("execution_at", "execution_until"),
                ]
            },
        ),
        ("Audience", {"fields": ["audience", "regions", "approval_mode", "allow_multiple_orders"]}),
        (
            "Notifications and approval",
            {
                "fields": [
                    ("notify_on_publish", "notify_on_submit", "notify_on_decision"),
                    "reminder_days",
                    ("approval_days", "approval_expiry_default"),
                ]
            },
        ),
        (
            "Orders",
            {
                "fields": [
                    "order_summary",
                    "delivery_summary",
                    "published_at",
                    "created_by",
                    "created_at",
                ]
            },
        ),
    ]
    transition_actions = {
        "publish": (
            "Publish",
            lambda obj, actor, request: services.publish_package(package=obj, actor=actor),
        ),
        "close": (
            "Close",
            lambda obj, actor, request: services.close_package(package=obj, actor=actor),
        ),
        "archive": (
            "Archive",
            lambda obj, actor, request: services.archive_package(package=obj, actor=actor),
        ),
        # Not "Cancel": in a form that reads as "stop editing".
        "cancel": (
            "Cancel package…",
            lambda obj, actor, request, reason: services.cancel_package(
                package=obj, actor=actor, reason=reason
            ),
        ),
    }
    transition_confirmations = {"cancel": lambda obj: cancel_confirmation(obj)}
    transition_done_messages = {
        "publish": lambda obj, done: published_message(done),
        "close": lambda obj, done: f"Closed; “{obj}” takes no new orders.",
        "archive": lambda obj, done: f"Archived; “{obj}” is kept for the record.",
        "cancel": lambda obj, done: cancelled_message(done),
    }

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(**_counts_annotation())

    @admin.display(description="type", ordering="reference_campaign__collaborative_type")
    def collaborative_type_display(self, obj: Package) -> str:
        return obj.reference_campaign.get_collaborative_type_display()

    @admin.display(description="orders")
    def order_counts(self, obj: Package) -> str:
        parts = [
            (label.lower(), getattr(obj, f"orders_{state}", 0))
            for state, label in OrderState.choices
        ]
        shown = [(label, count) for label, count in parts if count]
        if not shown:
            return "—"
        return format_html_join(", ", "{} {}", ((count, label) for label, count in shown))

    @admin.display(description="messages of its campaigns")
    def delivery_summary(self, obj: Package) -> str:
        """The package's report: deliveries of its reference campaign and of the child
        campaigns created from its orders, added up."""
        from campaigns.delivery import reports

        if not obj.pk:
            return "—"
        deliveries = reports.package_deliveries(obj)
        figures = reports.totals(deliveries)
        engaged = reports.engagement(deliveries)
        return format_html(
            "{} deliveries · targeted {} · excluded {} · sent {} · failed {} · opened {} · "
            'clicked {} · unsubscribed {} · <a href="{}">engagement by entity</a>',
            deliveries.count(), figures.targeted, figures.excluded, figures.sent, figures.failed,
            engaged.opened, engaged.clicked, engaged.unsubscribed,
            reverse("campaigns:engagement", args=["package", obj.pk]),
        )  # fmt: skip

    @admin.display(description="orders by state")
    def order_summary(self, obj: Package) -> str:
        if not obj.pk:
            return "—"
        counts = dict(
            obj.orders.values_list("state")
            .annotate(total=Count("id"))
            .values_list("state", "total")
        )
        url = reverse("admin:packages_order_changelist") + f"?package__id__exact={obj.pk}"
        rows = format_html_join(
            "",
            "<li>{}: {}</li>",
            ((label, counts.get(state, 0)) for state, label in OrderState.choices),
        )
        return format_html('<ul>{}</ul><a href="{}">See the orders</a>', rows, url)

    def save_model(self, request: HttpRequest, obj: Package, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        added = form.expanded_audience()
        if added:
            form.instance.audience.add(*added)
        portal_services.record_audit(
            obj=form.instance,
            action="change_package" if change else "create_package",
            actor=request.user,
            extra={"changed": form.changed_data, "audience_added": [e.code for e in added]},
        )


class OrderResource(resources.ModelResource):
    package = fields.Field(attribute="package__label", column_name="package")
    entity_code = fields.Field(attribute="entity__code", column_name="entity code")
    entity_name = fields.Field(attribute="entity__name", column_name="entity")
    ordered_by = fields.Field(attribute="ordered_by__username", column_name="ordered by")
    values = fields.Field(column_name="personalisation")

    class Meta:
        model = Order
        fields = [
            "id",
            "package",
            "entity_code",
            "entity_name",
            "sequence",
            "state",
            "ordered_by",
            "values",
            "comment",
            "late_personalisation",
            "created_at",
            "submitted_at",
            "decided_at",
            "decision_comment",
        ]
        export_order = fields

    def dehydrate_values(self, order: Order) -> str:
        return values_text(order.values)


@admin.register(Order)
class OrderAdmin(
    ReadOnlyAdminMixin, BackgroundExportMixin, EntityScopedAdminMixin, admin.ModelAdmin
):
    resource_classes = [OrderResource]  # the column choice; rows: portal.exports
    export_kind = "orders"
    formats = spreadsheets.EXPORT_FORMATS
    list_display = [
        "__str__",
        "package",
        "entity",
        "state",
        "ordered_by",
        "submitted_at",
        "late_personalisation",
        "child_link",
    ]
    list_filter = [
        "state",
        ("package", admin.RelatedOnlyFieldListFilter),
        ("entity", admin.RelatedOnlyFieldListFilter),
        "late_personalisation",
    ]
    search_fields = ["package__label", "entity__code", "entity__name", "comment"]
    list_select_related = ["package", "entity", "ordered_by", "child_campaign"]
    readonly_fields = [
        {"values": "values_table", "local_values": "local_values_table"}.get(f.name, f.name)
        for f in Order._meta.fields
    ] + ["child_link"]
    exclude = ["values", "local_values"]
    inlines = [AuditLogInline]

    @admin.display(description="values")
    def values_table(self, obj: Order) -> str:
        """Label and value of each personalisation field, files as rights-checked links;
        never the stored JSON or a storage path."""
        rows = value_rows(
            obj.package.reference_campaign.personalisation_fields.all(),
            obj.values or {},
            file_url=lambda name: reverse("packages:order_file", args=[obj.pk, name]),
        )
        if not rows:
            return "—"
        body = format_html_join(
            "",
            '<tr><th scope="row">{}</th><td>{}</td></tr>',
            (
                (
                    row["label"],
                    format_html('<a href="{}">{}</a>', row["url"], row["value"])
                    if row["url"]
                    else linebreaksbr(row["value"], autoescape=True),
                )
                for row in rows
            ),
        )
        return format_html('<table class="order-values">{}</table>', body)

    @admin.display(description="targeting conditions")
    def local_values_table(self, obj: Order) -> str:
        """The values the entity gave to the campaign's local conditions, in words."""
        from campaigns.targeting import local
        from packages.services import local_parameters

        rows = local.value_rows(local_parameters(obj.package), obj.local_values or {})
        if not rows:
            return "—"
        body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows)
        return format_html('<table class="order-values">{}</table>', body)

    @admin.display(description="child campaign")
    def child_link(self, obj: Order) -> str:
        try:
            child = obj.child_campaign
        except Campaign.DoesNotExist:
            return "—"
        url = reverse("admin:campaigns_campaign_change", args=[child.pk])
        return format_html('<a href="{}">{}</a>', url, child.get_state_display())
