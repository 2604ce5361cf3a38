"""The package level of the engagement report (registered with campaigns' report view, so
the dependency runs packages → campaigns)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404

from campaigns.delivery import reports
from packages.models import Package


def package_report_subject(user: Any, pk: int) -> tuple[Package, Any, str]:
    """(the package, its deliveries, its title) when the user may see the package; 404
    otherwise."""
    package = get_object_or_404(Package.objects.visible_to(user), pk=pk)
    return package, reports.package_deliveries(package), package.label
