"""One confirmation step for every destructive action (admin and portal): a page that says
what will happen, asks for a reason and posts it with CSRF. No JavaScript needed.

The action's URL shows the page on GET; a POST carrying a valid reason runs the action; a POST
without one (an old button, a forged form) shows the page again and runs nothing. The reason
goes to the service, which writes it to the audit entry and to any email it sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

REASON_MAX_LENGTH = 500


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation page says: the question, what follows, the button's words."""

    title: str
    button: str
    consequences: list[str] = field(default_factory=list)
    reason_label: str = "Reason"
    reason_help: str = "Kept in the history."
    reason_required: bool = True
    danger: bool = True


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=REASON_MAX_LENGTH,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )

    def __init__(self, *args, confirmation: Confirmation, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        reason = self.fields["reason"]
        reason.label = confirmation.reason_label
        reason.help_text = confirmation.reason_help
        reason.required = confirmation.reason_required
        reason.widget.attrs["aria-describedby"] = "id_reason_helptext"
        if confirmation.reason_required:
            reason.widget.attrs["required"] = True


def reason_form(request: HttpRequest, confirmation: Confirmation) -> ReasonForm:
    """Bound only to a POST that answers the confirmation page (it carries ``reason``): any
    other request gets the page, unbound, and nothing runs."""
    if request.method == "POST" and "reason" in request.POST:
        return ReasonForm(request.POST, confirmation=confirmation)
    return ReasonForm(confirmation=confirmation)


def ask(request: HttpRequest, confirmation: Confirmation, *, back_url: str) -> str | HttpResponse:
    """The portal's confirmation step: the reason once the page is answered, else the page
    (shown again with the problem when the reason is missing)."""
    form = reason_form(request, confirmation)
    if form.is_valid():
        return form.cleaned_data["reason"]
    return render(
        request,
        "portal/confirm.html",
        {
            "confirmation": confirmation,
            "form": form,
            "action_url": request.path,
            "back_url": back_url,
        },
    )
