"""The portal's “API tokens” page: create (the secret shown once), list and revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime
from django.utils.timezone import make_aware
from django.views.decorators.http import require_POST

from api.models import ApiToken, Scope
from api.services import create_token, revoke_token


@login_required
def tokens_page(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        expires = (
            parse_datetime(request.POST.get("expires_at") or "")
            if request.POST.get("expires_at")
            else None
        )
        if expires is not None and expires.tzinfo is None:
            expires = make_aware(expires)
        try:
            new = create_token(
                user=request.user,
                name=request.POST.get("name", ""),
                scopes=request.POST.getlist("scopes"),
                expires_at=expires,
            )
            new_key = new.key
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    tokens = ApiToken.objects.filter(user=request.user)
    return render(
        request,
        "api/tokens.html",
        {"tokens": tokens, "new_key": new_key, "scopes": Scope.choices},
    )


@login_required
@require_POST
def revoke_page(request: HttpRequest, pk: int) -> HttpResponse:
    token = ApiToken.objects.filter(user=request.user, pk=pk).first()
    if token is None:
        raise Http404
    revoke_token(token=token, actor=request.user)
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("api:tokens_page")
