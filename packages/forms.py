"""Forms of the packages app: the entity choice of an order and the admin's package form
(audience with regions). The order form generated from the field definitions is
``campaigns.personalisation.PersonalisationForm`` (beside the definitions it is built from;
re-exported here so existing imports keep working)."""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any

from django import forms
from django.db.models import Q

from campaigns.personalisation import PersonalisationForm
from packages.models import Package
from portal.models import Entity

__all__ = ["EntityChoiceForm", "PackageAdminForm", "PersonalisationForm"]


class EntityChoiceForm(forms.Form):
    entity = forms.ModelChoiceField(queryset=Entity.objects.none(), label="Order for")

    def __init__(self, *args: Any, entities: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["entity"].queryset = entities


class PackageAdminForm(forms.ModelForm):
    """Adds "whole regions" to the audience: each selected region's active local entities."""

    regions = forms.ModelMultipleChoiceField(
        queryset=Entity.objects.filter(kind="region"),
        required=False,
        help_text="Adds every active local entity of the selected regions to the audience.",
    )

    class Meta:
        model = Package
        fields = [
            "label",
            "description",
            "category",
            "reference_campaign",
            "execution_at",
            "visible_from",
            "visible_until",
            "registration_deadline",
            "personalisation_deadline",
            "audience",
            "approval_mode",
            "allow_multiple_orders",
            "notify_on_publish",
            "notify_on_submit",
            "notify_on_decision",
            "reminder_days",
            "approval_days",
            "approval_expiry_default",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "reference_campaign" in self.fields:  # the chosen one, named as the picker names it
            self.fields["reference_campaign"].label_from_instance = lambda c: c.autocomplete_label()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        campaign = data.get("reference_campaign")
        if campaign and campaign.kind != "reference":
            self.add_error("reference_campaign", "Choose a reference (collaborative) campaign.")
        for start, end, message in [
            ("visible_from", "visible_until", "The visibility end must come after its start."),
        ]:
            if data.get(start) and data.get(end) and data[start] >= data[end]:
                self.add_error(end, message)
        return data

    def expanded_audience(self) -> list[Entity]:
        regions = list(self.cleaned_data.get("regions") or [])
        if not regions:
            return []
        below = reduce(operator.or_, (Q(path__startswith=region.path) for region in regions))
        return list(Entity.objects.filter(below, kind="local", active=True))
