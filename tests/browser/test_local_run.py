"""A local operator simulates their child campaign on its canvas, reads the counts, starts
it; the central team then finds its state on the parent's page (Chromium at 1280 px)."""

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns import services as campaign_services
from campaigns.models import Campaign, Contact
from packages import services as package_services
from packages.models import Package
from tests.campaigns.workflow import QUERY, act, link
from tests.factories import CampaignFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("CANVAS_SCREENSHOTS", tempfile.gettempdir()))


@pytest.fixture
def ready_child(org, make_package):
    for n in range(7):
        Contact.objects.create(external_id=f"A{n}", entity=org.store_a, email_consent=n < 4)
    parent = CampaignFactory(name="Autumn", collaborative_type="by_campaign", entity=org.hq)
    link(parent, act(parent, "q", "query", conditions=QUERY), act(parent, "end", "end"))
    package = make_package(campaign=parent, audience=[org.store_a, org.store_b])
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    now = timezone.now()
    Package.objects.filter(pk=package.pk).update(
        registration_deadline=now - timedelta(days=1),
        execution_at=now - timedelta(hours=1),
        execution_until=now + timedelta(days=3),
    )
    child = Campaign.objects.get(order=order)
    campaign_services.run_campaign_transition(
        campaign=child, name="mark_ready", actor=org.operator_a
    )
    return parent, child


def test_a_local_operator_simulates_reads_the_counts_and_starts_their_child(
    org, ready_child, log_in, live_server, page
):
    parent, child = ready_child
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(org.operator_a)
    page.goto(f"{live_server.url}/campaigns/{child.pk}/")
    expect(page.locator("#wf-drawflow")).to_be_visible()
    page.get_by_role("button", name="Simulate").click()
    expect(page.locator("[data-status]")).to_contain_text("Simulation completed")
    expect(page.locator(".wf-count")).to_have_text("4")
    child.refresh_from_db()
    assert child.state == "ready"  # a simulation changes nothing
    page.screenshot(path=str(SHOTS / "local-run-child.png"), full_page=True)
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_text("Started;")).to_be_visible()
    child.refresh_from_db()
    assert child.state in ("running", "completed")
    assert child.runs.filter(simulate=False, started_by=org.operator_a).count() == 1
    expect(page.locator("h1 .badge")).to_have_text(child.get_state_display())
    page.screenshot(path=str(SHOTS / "local-run-child-started.png"), full_page=True)

    log_in(org.marketer)
    page.goto(f"{live_server.url}/campaigns/{parent.pk}/")
    table = page.get_by_test_id("children")
    row = table.locator("tbody tr", has_text="Store A")
    expect(row).to_contain_text(child.name)
    expect(row).to_contain_text(child.get_state_display())
    expect(row).not_to_contain_text("never")
    table.screenshot(path=str(SHOTS / "local-run-parent-children.png"))
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{parent.pk}/change/")
    expect(page.get_by_text("associated (child) campaigns", exact=False)).to_be_visible()
    expect(page.locator("body")).to_contain_text(child.name)
    page.screenshot(path=str(SHOTS / "local-run-parent-admin.png"), full_page=True)
