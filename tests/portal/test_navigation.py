"""Every portal page belongs to the navigation section a user expects."""

import pytest
from django.urls import get_resolver, resolve, reverse

from portal.navigation import SECTIONS, section_for

# Endpoints that are not pages (downloads, POST actions, JSON): no section to highlight.
NOT_PAGES = {
    "packages:document",
    "packages:order_submit",
    "packages:order_cancel",
    "packages:order_file",
    "campaigns:action",
    "campaigns:schedule",
    "campaigns:file",
    "campaigns:delivery_action",
    "campaigns:audience_count",
    "campaigns:import_report",
    "campaigns:import_template",
    "campaigns:canvas_graph",
    "campaigns:canvas_save",
    "campaigns:canvas_step",
    "campaigns:canvas_simulate",
    "portal:export_create",
    "portal:export_status",
    "portal:export_download",
}


def _portal_view_names():
    names = set()
    for namespace in ("portal", "packages", "campaigns", "approvals"):
        resolver = get_resolver().namespace_dict[namespace][1]
        names |= {f"{namespace}:{name}" for name in resolver.reverse_dict if isinstance(name, str)}
    return names


def test_every_portal_page_has_a_section():
    missing = _portal_view_names() - set(SECTIONS) - NOT_PAGES
    assert not missing


@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("/audience/imports/", "audience"),
        ("/audience/imports/3/", "audience"),
        ("/exports/3/", "audience"),
        ("/audience/contacts/3/", "audience"),
        ("/campaigns/lists/3/", "approvals"),
        ("/deliveries/3/", "campaigns"),
        ("/campaigns/3/personalise/", "campaigns"),
        ("/orders/3/", "orders"),
        ("/packages/3/", "packages"),
    ],
)
def test_pages_belong_to_their_section(path, section):
    assert section_for(resolve(path)) == section


def test_the_page_highlights_its_section_only(org, client):
    client.force_login(org.operator_a)
    body = client.get(reverse("campaigns:import_create")).content.decode()
    assert body.count('aria-current="page"') == 1
    assert 'aria-current="page">Audience</a>' in body
