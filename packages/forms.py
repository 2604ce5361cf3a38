"""Forms of the packages app: the entity choice of an order and the admin's package form
(audience with regions). The order form generated from the field definitions is
``campaigns.personalisation.PersonalisationForm`` (beside the definitions it is built from;
re-exported here so existing imports keep working)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from functools import reduce
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import Q
from django.forms.utils import ErrorDict

from campaigns.personalisation import PersonalisationForm
from campaigns.targeting import local
from packages.models import Package
from portal.models import Entity

__all__ = ["EntityChoiceForm", "LocalConditionsForm", "PackageAdminForm", "PersonalisationForm"]


class DateWindowWidget(forms.MultiWidget):
    """Two date pickers, from and to."""

    template_name = "packages/widgets/date_window.html"

    def __init__(self, attrs: dict | None = None) -> None:
        super().__init__(
            [forms.DateInput(attrs={"type": "date"}), forms.DateInput(attrs={"type": "date"})],
            attrs,
        )

    def decompress(self, value: Any) -> list[Any]:
        if isinstance(value, list | tuple) and len(value) == 2:
            return list(value)
        return [None, None]


class LocalConditionsForm(forms.Form):
    """The reference campaign's local conditions as typed fields of the order form.

    Its validation is the targeting rules' own (``campaigns.targeting.local.clean_values``,
    which the order services apply again): the form only collects the raw values and shows
    the refusals on their fields.
    """

    prefix = "local"

    def __init__(
        self,
        parameters: Iterable[local.LocalParameter],
        *args: Any,
        stored: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.parameters = list(parameters)
        stored = dict(stored or {})
        for parameter in self.parameters:
            field: forms.Field
            attrs = {"data-local-kind": parameter.kind}
            if parameter.kind == local.CHOICE_KIND:
                field = forms.ChoiceField(
                    choices=[("", "—")] + [(c, c) for c in parameter.choices],
                    widget=forms.Select(attrs=attrs),
                )
            elif parameter.kind == local.DATE_WINDOW:
                minimum = parameter.minimum.isoformat() if parameter.minimum else None
                maximum = parameter.maximum.isoformat() if parameter.maximum else None
                widget = DateWindowWidget(attrs=attrs)
                for sub, end in zip(widget.widgets, ("from", "to"), strict=True):
                    sub.attrs.update({k: v for k, v in (("min", minimum), ("max", maximum)) if v})
                    sub.attrs["aria-label"] = f"{parameter.label}: {end}"
                field = forms.MultiValueField(
                    fields=[forms.DateField(), forms.DateField()], widget=widget
                )
            else:
                field = forms.IntegerField(
                    min_value=parameter.minimum,
                    max_value=parameter.maximum,
                    widget=forms.NumberInput(attrs=attrs),
                )
            field.required = parameter.required
            field.label = parameter.label
            field.help_text = " ".join(t for t in (parameter.help_text, parameter.allowed()) if t)
            field.initial = stored.get(parameter.name)
            self.fields[parameter.name] = field

    def raw_values(self) -> dict[str, Any]:
        """The values as typed, by parameter name (validated by the services)."""
        if not self.is_bound:
            return {}
        values: dict[str, Any] = {}
        for parameter in self.parameters:
            key = self.add_prefix(parameter.name)
            if parameter.kind == local.DATE_WINDOW:
                values[parameter.name] = [self.data.get(f"{key}_0"), self.data.get(f"{key}_1")]
            else:
                values[parameter.name] = self.data.get(key)
        return values

    def full_clean(self) -> None:
        self._errors = ErrorDict()
        self.cleaned_data = {}
        if not self.is_bound:
            return
        try:
            self.cleaned_data = local.clean_values(self.parameters, self.raw_values())
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                key = name if name in self.fields else NON_FIELD_ERRORS
                self._errors.setdefault(key, self.error_class()).extend(messages)


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
