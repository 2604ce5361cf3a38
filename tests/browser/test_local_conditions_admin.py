"""The central marketer marks conditions of a reference campaign's query as completed by the
local entity, through the admin's form (never JSON)."""

import os

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign
from tests.local_conditions import reference_campaign

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_marketer_defines_local_conditions_in_the_admin(org, log_in, live_server, page):
    campaign = reference_campaign(org, spec=None)
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(org.marketer)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.get_by_role("link", name="edit the local conditions").click()
    expect(page.get_by_text("Opted-in travellers")).to_be_visible()

    first = page.locator("fieldset.local-condition").nth(0)
    first.get_by_label("Label").fill("Product")
    first.get_by_label("Name").fill("product")
    first.get_by_label("Condition on").select_option("bookings.product")
    first.get_by_label("Kind").select_option("choice")
    first.get_by_label("Allowed values").fill("Cruise\nSafari")
    second = page.locator("fieldset.local-condition").nth(1)
    second.get_by_label("Label").fill("Booking dates")
    second.get_by_label("Name").fill("window")
    second.get_by_label("Condition on").select_option("bookings.product")  # wrong on purpose
    second.get_by_label("Kind").select_option("date_window")
    second.get_by_label("Lowest allowed").fill("2026-01-01")
    page.get_by_role("button", name="Save local conditions").click()
    expect(page.get_by_text("A date window applies to a date field.")).to_be_visible()
    assert Campaign.objects.get(pk=campaign.pk).local_conditions == []

    page.locator("fieldset.local-condition").nth(1).get_by_label("Condition on").select_option(
        "bookings.booking_date"
    )
    shots = os.environ.get("SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=f"{shots}/admin-local-conditions.png", full_page=True)
    page.get_by_role("button", name="Save local conditions").click()
    expect(page.get_by_text("The local conditions are saved.")).to_be_visible()
    saved = Campaign.objects.get(pk=campaign.pk).local_conditions
    assert [(p["name"], p["kind"]) for p in saved] == [
        ("product", "choice"),
        ("window", "date_window"),
    ]
    assert saved[0]["choices"] == ["Cruise", "Safari"] and saved[1]["min"] == "2026-01-01"
