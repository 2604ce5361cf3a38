"""Which section of the main navigation a page belongs to, from its URL name.

One table instead of conditions in the template: a page whose name is not listed belongs to
no section (nothing is highlighted), which is better than highlighting the wrong one.
"""

from __future__ import annotations

from django.urls import ResolverMatch

SECTIONS: dict[str, str] = {
    "portal:dashboard": "dashboard",
    "portal:entity_list": "entities",
    "portal:entity_detail": "entities",
    "packages:catalogue": "packages",
    "packages:package_detail": "packages",
    "packages:order_create": "packages",
    "packages:order_list": "orders",
    "packages:order_detail": "orders",
    "packages:order_edit": "orders",
    "campaigns:list": "campaigns",
    "campaigns:detail": "campaigns",
    "campaigns:personalise": "campaigns",
    "campaigns:activity_edit": "campaigns",
    # A delivery belongs to its campaign (its breadcrumb is Campaigns > campaign > delivery).
    "campaigns:delivery": "campaigns",
    "campaigns:engagement": "campaigns",
    "campaigns:audience": "audience",
    "campaigns:contact": "audience",
    "campaigns:import_create": "audience",
    "campaigns:import_detail": "audience",
    "campaigns:import_report": "audience",
    # Exports start from the audience page (the admin's exports have their own pages).
    "portal:export_list": "audience",
    "portal:export_detail": "audience",
    # Reviewing a target list is a decision the approvals inbox leads to.
    "campaigns:local_approval": "approvals",
    "approvals:inbox": "approvals",
    "approvals:request_detail": "approvals",
    "approvals:link": "approvals",
    # The user's own settings, linked beside their name.
    "api:tokens_page": "profile",
}


def section_for(match: ResolverMatch | None) -> str:
    """The navigation section of the resolved page ('' when none)."""
    if match is None:
        return ""
    return SECTIONS.get(match.view_name, "")
