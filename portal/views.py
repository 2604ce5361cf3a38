"""The local operators' and approvers' pages: dashboard, entities, health."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from portal import dashboard
from portal.forms import OutboxPasswordResetForm
from portal.models import AuditLog, Entity


class PasswordResetView(auth_views.PasswordResetView):
    """Password reset whose links point at SITE_URL and whose email goes through the outbox."""

    form_class = OutboxPasswordResetForm

    def form_valid(self, form: OutboxPasswordResetForm) -> HttpResponse:
        site = urlsplit(settings.SITE_URL)
        form.save(
            domain_override=site.netloc,
            use_https=site.scheme == "https",
            subject_template_name=self.subject_template_name,
            email_template_name=self.email_template_name,
            request=self.request,
            extra_email_context={"site_name": settings.SITE_NAME},
        )
        return super(auth_views.PasswordResetView, self).form_valid(form)


@login_required
def dashboard_view(request: HttpRequest) -> HttpResponse:
    entities = Entity.objects.visible_to(request.user).select_related("parent")
    return render(
        request,
        "portal/dashboard.html",
        {
            "sections": dashboard.sections_for(request.user),
            "entity_count": entities.count(),
        },
    )


@login_required
def entity_list(request: HttpRequest) -> HttpResponse:
    entities = Entity.objects.visible_to(request.user).select_related("parent")
    return render(request, "portal/entity_list.html", {"entities": entities})


@login_required
def entity_detail(request: HttpRequest, code: str) -> HttpResponse:
    entity = get_object_or_404(Entity.objects.visible_to(request.user), code=code)
    return render(
        request,
        "portal/entity_detail.html",
        {
            "entity": entity,
            "children": entity.children.visible_to(request.user).order_by("name"),
            "memberships": entity.memberships.select_related("user").order_by("role"),
            "history": AuditLog.objects.for_object(entity).select_related("actor")[:50],
        },
    )


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


FAVICON = (Path(__file__).parent / "static" / "portal" / "favicon.ico").read_bytes()


@require_GET
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponse:
    """The icon browsers ask for at /favicon.ico by themselves (the admin's pages name none)."""
    return HttpResponse(FAVICON, content_type="image/x-icon")
