"""The central team follows the scheduled runs of simple and by-form orders in the admin:
each run links to the campaign it started, a failed one says why (Chromium at 1280 px)."""

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
from campaigns.models import ScheduledRun
from packages import services as package_services
from packages.models import Package
from tests.local_conditions import JUNE, reference_campaign

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("CANVAS_SCREENSHOTS", tempfile.gettempdir()))


def accepted_run(org, make_package, entity, operator, name):
    parent = reference_campaign(org, kind="by_form", name=name)
    package = make_package(campaign=parent, audience=[entity], execution_at=None)
    order = package_services.place_order(
        package=package, entity=entity, actor=operator, submit=True, local_values=JUNE
    ).order
    approvals.decide(
        request=ApprovalRequest.objects.for_object(order).get(), actor=org.approver, approve=True
    )
    return ScheduledRun.objects.get(order=order)


def test_the_runs_list_links_each_run_to_its_campaign(org, make_package, page, log_in, live_server):
    done = accepted_run(org, make_package, org.store_a, org.operator_a, "Summer cruises")
    failed = accepted_run(org, make_package, org.store_b, org.operator_b, "Autumn safaris")
    Package.objects.filter(pk=failed.order.package_id).update(
        execution_until=timezone.now() - timedelta(minutes=1)
    )
    assert campaign_services.execute_scheduled_runs() == 1
    done.refresh_from_db()

    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(org.marketer)
    page.goto(f"{live_server.url}/admin/campaigns/scheduledrun/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#result_list")).to_contain_text("execution window closed")
    page.screenshot(path=str(SHOTS / "scheduled-runs-admin.png"), full_page=True)
    rows.filter(has_text="Summer cruises").locator("td.field-execution_link a").click()
    expect(page).to_have_url(
        f"{live_server.url}/admin/campaigns/campaign/{done.execution_campaign_id}/change/"
    )
    expect(page.locator("body")).to_contain_text("Summer cruises — Store A")
