"""A local operator completes the centre's conditions in the order form, evaluates, orders;
the approver sees the values and approves from the emailed link; the child campaign's
targeting holds them."""

import os
import re

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign
from packages.models import Order
from portal import bearer
from portal.models import Notification
from tests.local_conditions import reference_campaign, travellers

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_local_operator_evaluates_then_orders_and_the_child_gets_the_values(
    org, make_package, log_in, live_server, page
):
    travellers(org)
    package = make_package(
        campaign=reference_campaign(org), audience=[org.store_a], label="Summer cruises kit"
    )
    page.set_viewport_size({"width": 1280, "height": 900})
    page = log_in(org.operator_a)
    page.get_by_role("link", name="Packages", exact=True).click()
    page.get_by_role("link", name="Summer cruises kit").click()
    page.get_by_role("link", name="Order for Store A").click()

    # A value outside what the centre allowed is refused, naming the field.
    page.get_by_label("Product").select_option("Cruise")
    page.get_by_label("Booking dates: from").fill("2025-06-01")
    page.get_by_label("Booking dates: to").fill("2026-06-30")
    page.get_by_label("Minimum bookings").fill("1")
    page.get_by_role("button", name="Evaluate").click()
    refusal = "Booking dates: the window may not start before 2026-01-01."
    expect(page.get_by_text(refusal)).to_be_visible()

    page.get_by_label("Booking dates: from").fill("2026-06-01")
    page.get_by_label("Language").select_option("fr")
    page.get_by_role("button", name="Evaluate").click()
    count = page.locator(".evaluation-count")
    expect(count).to_have_text("5")
    expect(page.locator(".evaluation-sample tbody tr")).to_have_count(5)
    expect(page.locator(".evaluation-sample")).to_contain_text("Ann06 Alpha")
    expect(page.locator(".evaluation-sample")).not_to_contain_text("Bea")
    assert not Order.objects.exists()  # evaluating orders nothing
    shots = os.environ.get("SCREENSHOT_DIR")
    if shots:
        page.screenshot(path=f"{shots}/order-evaluate.png", full_page=True)

    page.get_by_label("Minimum bookings").fill("2")
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator(".evaluation-count")).to_have_text("1")
    page.get_by_role("button", name="Submit order").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Submitted")
    expect(page.locator(".local-values")).to_contain_text("2026-06-01 to 2026-06-30")
    order = Order.objects.get(package=package)
    assert order.local_values == {
        "product": "Cruise",
        "window": ["2026-06-01", "2026-06-30"],
        "min_bookings": 2,
        "language": "fr",
    }

    # The approver reads the values on the emailed link's page and approves.
    email = Notification.objects.get(kind="approval_request", recipient=org.approver)
    _subject, text, _html = bearer.reveal(email)
    path = re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", text).group(1)
    page.context.clear_cookies()
    page.goto(f"{live_server.url}{path}")
    expect(page.get_by_text("Targeting: Booking dates")).to_be_visible()
    expect(page.get_by_text("2026-06-01 to 2026-06-30")).to_be_visible()
    page.get_by_label("Approve").check()
    page.get_by_role("button", name="Confirm my decision").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("approved")

    # The child campaign's targeting holds the values.
    page = log_in(org.operator_a)
    page.goto(f"{live_server.url}/orders/{order.pk}/")
    targeting = page.locator(".child-targeting")
    expect(targeting).to_contain_text("Email consent is yes")
    expect(targeting).to_contain_text("Language is “fr”")
    expect(targeting).to_contain_text("has at least 2 bookings where Product is “Cruise”")
    expect(targeting).to_contain_text("Booking date is between “2026-06-01” and “2026-06-30”")
    child = Campaign.objects.get(order=order)
    conditions = child.activities.get(key="target").settings["conditions"]
    assert {"field": "language", "op": "eq", "value": "fr"} in conditions["and"][1]["and"]
