from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from portal.navigation import section_for


def portal(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    memberships = []
    if user is not None and user.is_authenticated:
        memberships = list(user.memberships.select_related("entity").order_by("entity__path"))
    # ``portal_name``, not ``site_name``: Django's auth views (log in, password reset) put the
    # request's host in ``site_name``, which would then show on their pages.
    return {
        "site_name": settings.SITE_NAME,
        "portal_name": settings.SITE_NAME,
        "my_memberships": memberships,
        "nav_section": section_for(getattr(request, "resolver_match", None)),
    }
