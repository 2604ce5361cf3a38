"""Forms of the packages app: the order form generated from the field definitions, and the
admin's package form (audience with regions)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from functools import reduce
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q

from campaigns.models import PersonalisationField
from campaigns.personalisation import form_field_for, initial_for
from packages.models import Package
from portal.models import Entity


class PersonalisationForm(forms.Form):
    """Renders one field per definition. Validation is the service's (the same rules for
    every entry point); its errors are attached back to the fields here."""

    def __init__(
        self,
        definitions: Iterable[PersonalisationField],
        *args: Any,
        stored: Mapping[str, Any] | None = None,
        with_comment: bool = True,
        comment: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.definitions = list(definitions)
        self.stored = dict(stored or {})
        for definition in self.definitions:
            field = form_field_for(definition)
            stored_file = self.stored.get(definition.name)
            if definition.field_type == "file" and isinstance(stored_file, Mapping):
                field.required = False  # the stored file stays unless replaced
                field.stored_file = stored_file
                field.may_clear = not definition.required
            field.initial = initial_for(definition, self.stored)
            self.fields[definition.name] = field
        if with_comment:
            self.fields["comment"] = forms.CharField(
                label="Comment for the central team",
                required=False,
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 3}),
                initial=comment,
            )

    def stored_file(self, name: str) -> Mapping[str, Any] | None:
        value = self.stored.get(name)
        return value if isinstance(value, Mapping) else None

    def attach_errors(self, error: ValidationError) -> None:
        """Show the service's errors; the form's own cleaning found the same ones already
        when the rule is a field's, so each message appears once."""
        for name, messages in error.message_dict.items():
            target = name if name in self.fields else None
            shown = self.errors.get(target or "__all__", [])
            for message in messages:
                if message not in shown:
                    self.add_error(target, message)


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
            "execution_until",
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
