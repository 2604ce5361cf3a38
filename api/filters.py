"""Filters of the API lists. A reference is filtered by its id as a plain integer: an id
that matches nothing gives an empty page, as any other filter value does (django-filter's
default, a choice among all rows, would answer 400 and read every row to build it)."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from campaigns.models import Campaign, Delivery
from packages.models import Order


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class StrictBooleanField(forms.NullBooleanField):
    """``true``/``false`` (or ``1``/``0``); anything else is refused, not read as "any"."""

    widget = forms.TextInput  # NullBooleanSelect would read "null" or "x" as "any"

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise forms.ValidationError("Give true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StrictFilterSet(django_filters.FilterSet):
    """The base of every API filter set: booleans are strict."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        models.BooleanField: {"filter_class": StrictBooleanFilter},
    }


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, building ``filterset_fields`` sets on ``StrictFilterSet``."""

    filterset_base = StrictFilterSet


class OrderFilter(StrictFilterSet):
    package = IdFilter(field_name="package_id")

    class Meta:
        model = Order
        fields = ["state", "package"]


class CampaignFilter(StrictFilterSet):
    parent = IdFilter(field_name="parent_id")

    class Meta:
        model = Campaign
        fields = ["kind", "state", "parent"]


class DeliveryFilter(StrictFilterSet):
    campaign = IdFilter(field_name="campaign_id")

    class Meta:
        model = Delivery
        fields = ["campaign", "state", "channel"]
