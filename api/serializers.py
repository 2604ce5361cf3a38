"""Serializers: what the API shows of each resource, and the shapes of its requests.

They validate the shape of input only; every rule is applied by the services they feed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from api.models import ApiToken, Scope
from approvals.models import ApprovalRequest
from campaigns.models import Booking, Campaign, Contact, Delivery, Store, Subscription
from packages.models import Order, Package
from portal.models import Entity

# Entities -----------------------------------------------------------------------------------


class EntitySerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Entity
        fields = ["id", "code", "name", "kind", "parent", "contact_email", "active"]


# Audience data (written through campaigns.imports) ----------------------------------------

Scalar = serializers.JSONField  # a row value: string, number, boolean or null


class ContactSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Contact
        fields = [
            "id", "external_id", "first_name", "last_name", "email", "phone", "push_token",
            "language", "birth_date", "entity", "email_consent", "email_consent_source",
            "sms_consent", "sms_consent_source", "push_consent", "push_consent_source",
            "blocklisted", "created_at", "updated_at",
        ]  # fmt: skip


class StoreSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Store
        fields = ["id", "code", "name", "city", "entity"]


class BookingSerializer(serializers.ModelSerializer):
    contact = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    store = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Booking
        fields = [
            "id", "reference", "contact", "store", "product", "destination", "booking_date",
            "amount", "status",
        ]  # fmt: skip


class SubscriptionSerializer(serializers.ModelSerializer):
    contact = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = Subscription
        fields = ["id", "contact", "product", "start_date", "end_date", "status"]


@extend_schema_field(
    {
        "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}],
        "nullable": True,
        "description": "A value as in an import file: the import's rules read it.",
    }
)
class ScalarField(serializers.Field):
    """A row's value: a string, number, boolean or null (``row_problems`` refuses others)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


def row_serializer(columns: list[str], *, name: str) -> type[serializers.Serializer]:
    """A write serializer for one row of an import kind: its columns, each a scalar."""
    attrs: dict[str, Any] = {
        column: ScalarField(required=False, allow_null=True) for column in columns
    }
    return type(name, (StrictRowSerializer,), attrs)


def row_problems(data: Any, columns: Any) -> list[tuple[str, str]]:
    """What is wrong with the shape of one row: (field, message) pairs, none when fine. The
    one-row serializers and the bulk path (which checks 10,000 rows without a serializer
    each) share it."""
    if not isinstance(data, dict):
        return [(api_settings.NON_FIELD_ERRORS_KEY, "Send an object of column → value.")]
    unknown = sorted(set(data) - set(columns))
    if unknown:
        return [(name, "Unknown column.") for name in unknown]
    for column, value in data.items():
        if isinstance(value, dict | list):
            return [(column, "Send a string, number or boolean.")]
    return []


class StrictRowSerializer(serializers.Serializer):
    """Refuses unknown columns (a typo would otherwise be ignored silently)."""

    def to_internal_value(self, data: Any) -> Any:
        problems = row_problems(data, self.fields)
        if problems:
            raise serializers.ValidationError({field: [message] for field, message in problems})
        return {column: value for column, value in data.items()}


@extend_schema_field(
    {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": True}}
)
class RowsField(serializers.Field):
    """A non-empty list of rows, passed on as it came: each row's shape is checked by
    ``row_problems`` and its values by the import's rules (no field object per value:
    10,000 rows would cost more to wrap than to import)."""

    default_error_messages = {
        "not_a_list": "Send a list of rows.",
        "empty": "Send at least one row.",
    }

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            self.fail("not_a_list")
        if not data:
            self.fail("empty")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class BulkSerializer(serializers.Serializer):
    rows = RowsField(help_text="Objects of column → value (see the resource's columns).")
    entity = serializers.CharField(
        required=False, help_text="Code of the entity the rows are imported for."
    )
    import_valid_rows = serializers.BooleanField(
        default=False, help_text="Write the valid rows even when some rows have errors."
    )
    dry_run = serializers.BooleanField(default=False, help_text="Only check the rows.")

    def validate_rows(self, rows: list[dict]) -> list[dict]:
        limit = settings.API_BULK_MAX_ROWS
        if len(rows) > limit:
            raise serializers.ValidationError(f"At most {limit:,} rows per request.")
        return rows


class RowProblemSerializer(serializers.Serializer):
    row = serializers.IntegerField()
    field = serializers.CharField()
    message = serializers.CharField()


class BulkResultSerializer(serializers.Serializer):
    new = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    errors = serializers.IntegerField()
    written = serializers.BooleanField()
    problems = RowProblemSerializer(many=True)


# Counts ------------------------------------------------------------------------------------


class CountRequestSerializer(serializers.Serializer):
    dimension = serializers.ChoiceField(
        choices=["contact", "booking", "subscription"], default="contact"
    )
    conditions = serializers.JSONField(
        default=dict,
        allow_null=True,
        help_text="A condition tree (see the targeting documentation); none counts all.",
    )
    entity = serializers.CharField(
        required=False, help_text="Count only this entity's subtree (its code)."
    )


class CountResultSerializer(serializers.Serializer):
    rows = serializers.IntegerField()
    contacts = serializers.IntegerField()
    milliseconds = serializers.FloatField()


# Packages and orders ----------------------------------------------------------------------


class PackageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Package
        fields = [
            "id", "label", "description", "category", "state", "approval_mode",
            "allow_multiple_orders", "execution_at", "execution_until", "visible_from",
            "visible_until", "registration_deadline", "personalisation_deadline", "published_at",
        ]  # fmt: skip


class OrderSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Order
        fields = [
            "id", "package", "entity", "sequence", "state", "values", "local_values",
            "comment", "late_personalisation", "created_at", "submitted_at", "decided_at",
            "decision_comment",
        ]  # fmt: skip
        read_only_fields = fields


class OrderCreateSerializer(serializers.Serializer):
    package = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    entity = serializers.CharField(help_text="Code of the ordering entity.")
    values = serializers.DictField(default=dict, help_text="Personalisation values by name.")
    local_values = serializers.DictField(
        default=dict,
        help_text="Values of the reference campaign's local conditions by name (a date "
        "window as [from, to]); refused outside what the central team allowed.",
    )
    comment = serializers.CharField(default="", allow_blank=True, max_length=5000)
    submit = serializers.BooleanField(default=False, help_text="Submit at once.")


class OrderUpdateSerializer(serializers.Serializer):
    values = serializers.DictField(help_text="Personalisation values by name.")
    local_values = serializers.DictField(
        required=False, help_text="Values of the local conditions by name (unchanged if left out)."
    )
    comment = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(default="", allow_blank=True, max_length=5000)


# Approvals ---------------------------------------------------------------------------------


class ApprovalSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id", "kind", "title", "entity", "state", "deadline", "created_at", "decided_at",
            "decision_comment", "decided_via",
        ]  # fmt: skip


class DecisionSerializer(serializers.Serializer):
    approve = serializers.BooleanField()
    comment = serializers.CharField(default="", allow_blank=True, max_length=5000)


# Campaigns and deliveries ------------------------------------------------------------------


class CampaignSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "description", "entity", "kind", "collaborative_type", "state",
            "parent", "order", "created_at", "last_run_at", "targeted_count", "sent_count",
            "scheduled_start_at",
        ]  # fmt: skip


class CampaignStartSerializer(serializers.Serializer):
    """Start a child campaign now (no ``at``) or schedule its start (``at``, within the
    package's execution window); ``unschedule`` withdraws a scheduled start."""

    at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    unschedule = serializers.BooleanField(required=False, default=False)


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = [
            "id", "campaign", "label", "channel", "dimension", "state", "scheduled_at",
            "targeted", "exclusions", "created_at", "prepared_at", "sent_at", "error",
        ]  # fmt: skip


class FiguresSerializer(serializers.Serializer):
    targeted = serializers.IntegerField()
    excluded = serializers.IntegerField()
    pending = serializers.IntegerField()
    sending = serializers.IntegerField()
    in_flight = serializers.IntegerField()
    in_doubt = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    by_rule = serializers.DictField(child=serializers.IntegerField())


# Tokens ------------------------------------------------------------------------------------


class TokenSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id", "name", "prefix", "scopes", "created_at", "expires_at", "last_used_at",
            "revoked_at", "status",
        ]  # fmt: skip
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), allow_empty=False
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class NewTokenSerializer(TokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once: store it now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "key"]
        read_only_fields = fields
