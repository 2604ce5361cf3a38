"""The admin page where the central team marks conditions of a reference campaign's
targeting query as completed by the ordering entity: one form row per condition (field,
kind, allowed values or range), never JSON. Saved through
``campaigns.services.set_local_conditions``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from campaigns import services
from campaigns.targeting import local
from campaigns.targeting.words import condition_words
from portal.exceptions import DomainError


class LocalParameterForm(forms.Form):
    """One local condition. Its rules are ``local.parse_parameter``'s: each refusal shows on
    the field it is about."""

    label = forms.CharField(max_length=100, help_text="What the local operator reads.")
    name = forms.SlugField(
        max_length=40, help_text="Short identifier (lower-case letters, digits and _)."
    )
    field = forms.ChoiceField(label="Condition on")
    kind = forms.ChoiceField(choices=list(local.KINDS.items()))
    choices = forms.CharField(
        required=False,
        label="Allowed values",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 24}),
        help_text="For a list: one value per line.",
    )
    minimum = forms.CharField(
        required=False, label="Lowest allowed", help_text="A date (YYYY-MM-DD) or a number."
    )
    maximum = forms.CharField(required=False, label="Highest allowed")
    required = forms.BooleanField(required=False, initial=True)
    help_text = forms.CharField(required=False, max_length=500)

    def __init__(self, *args: Any, dimension: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dimension = dimension
        self.fields["field"].choices = [("", "—"), *local.field_choices(dimension)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors or not self.has_changed():
            return data
        raw = {
            "name": data.get("name"),
            "label": data.get("label"),
            "field": data.get("field"),
            "kind": data.get("kind"),
            "choices": [line.strip() for line in (data.get("choices") or "").splitlines()]
            if data.get("kind") == local.CHOICE_KIND
            else [],
            "min": data.get("minimum") or None,
            "max": data.get("maximum") or None,
            "required": bool(data.get("required")),
            "help_text": data.get("help_text") or "",
        }
        raw["choices"] = [c for c in raw["choices"] if c]
        try:
            self.parameter = local.parse_parameter(raw, self.dimension)
        except ValidationError as exc:
            keys = {"min": "minimum", "max": "maximum"}
            for key, problems in exc.message_dict.items():
                target = keys.get(key, key)
                self.add_error(target if target in self.fields else None, problems)
        return data

    @staticmethod
    def initial_for(parameter: local.LocalParameter) -> dict[str, Any]:
        data = parameter.as_json()
        return {
            "label": data["label"],
            "name": data["name"],
            "field": data["field"],
            "kind": data["kind"],
            "choices": "\n".join(data.get("choices", [])),
            "minimum": data.get("min", ""),
            "maximum": data.get("max", ""),
            "required": data["required"],
            "help_text": data.get("help_text", ""),
        }


class BaseLocalParameterFormSet(forms.BaseFormSet):
    def __init__(self, *args: Any, dimension: str, **kwargs: Any) -> None:
        self.dimension = dimension
        super().__init__(*args, **kwargs)

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        return {**super().get_form_kwargs(index), "dimension": self.dimension}

    @property
    def empty_form(self) -> forms.Form:  # type: ignore[override]
        return self.form(
            auto_id=self.auto_id,
            prefix=self.add_prefix("__prefix__"),
            empty_permitted=True,
            use_required_attribute=False,
            renderer=self.renderer,
            dimension=self.dimension,
        )

    def parameters(self) -> list[local.LocalParameter]:
        return [
            form.parameter
            for form in self.forms
            if form.has_changed()
            and not self._should_delete_form(form)
            and getattr(form, "parameter", None)
        ]


LocalParameterFormSet = forms.formset_factory(
    LocalParameterForm,
    formset=BaseLocalParameterFormSet,
    extra=2,
    can_delete=True,
    max_num=local.MAX_PARAMETERS,
    validate_max=True,
)


def local_conditions_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """List, add, change and remove a reference campaign's local conditions."""
    campaign = model_admin.get_object(request, object_id)
    if campaign is None or campaign.kind != "reference":
        raise Http404("No such reference campaign.")
    if not model_admin.has_change_permission(request, campaign):
        raise PermissionDenied
    step = local.targeting_step(campaign)
    dimension = local.step_dimension(step)
    initial = [LocalParameterForm.initial_for(p) for p in local.campaign_parameters(campaign)]
    formset = LocalParameterFormSet(
        request.POST or None, initial=initial, prefix="local", dimension=dimension
    )
    if request.method == "POST" and formset.is_valid():
        try:
            services.set_local_conditions(
                campaign=campaign, parameters=formset.parameters(), actor=request.user
            )
        except ValidationError as exc:
            for message in exc.messages:
                formset._non_form_errors.append(message)  # shown above the table
        except DomainError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "The local conditions are saved.")
            return redirect(
                reverse("admin:campaigns_campaign_local_conditions", args=[campaign.pk])
            )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Local conditions of “{campaign}”",
        "opts": model_admin.model._meta,
        "original": campaign,
        "campaign": campaign,
        "formset": formset,
        "step": step,
        "step_words": condition_words((step.settings or {}).get("conditions"), dimension)
        if step
        else "",
        "dimension": dimension,
        "kinds": local.KINDS,
    }
    return TemplateResponse(request, "admin/campaigns/campaign/local_conditions.html", context)
