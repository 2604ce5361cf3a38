"""Issue 16: destructive actions ask for confirmation with a reason (package cancel in the
admin, delivery cancel and campaign stop in the portal), and the personalisation-field inline
shows only the chosen type's options. Screenshots go to $SCREENSHOTS when it is set."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign, Delivery
from packages.models import Package
from portal.models import AuditLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        page.screenshot(path=f"{folder}/{name}.png", full_page=True)


def test_cancel_package_asks_for_a_reason_in_the_admin(org, make_package, log_in, live_server):
    package = make_package(label="Spring kit", audience=[org.store_a, org.store_b])
    page = log_in(org.marketer)
    page.goto(f"{live_server.url}/admin/packages/package/{package.pk}/change/")
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    page.get_by_role("link", name="Cancel package…").click()
    expect(page.get_by_role("heading", name="Cancel the package “Spring kit”?")).to_be_visible()
    shot(page, "admin-cancel-package")
    page.get_by_role("button", name="Cancel the package").click()  # no reason: refused
    expect(page.get_by_role("heading", name="Cancel the package “Spring kit”?")).to_be_visible()
    assert Package.objects.get(pk=package.pk).state == "published"
    page.get_by_label("Reason").fill("The supplier withdrew the offer")
    page.get_by_role("button", name="Cancel the package").click()
    expect(page.locator(".messagelist")).to_contain_text(
        "Cancelled; 0 orders cancelled, 2 entities notified."
    )
    shot(page, "admin-package-cancelled")
    package.refresh_from_db()
    assert package.state == "cancelled"
    entry = AuditLog.objects.for_object(package).get(action="cancel")
    assert entry.comment == "The supplier withdrew the offer"


def test_cancel_the_delivery_asks_first_and_going_back_changes_nothing(org, log_in, live_server):
    from tests.campaigns.test_deliveries import person
    from tests.campaigns.test_sending import prepared
    from tests.factories import CampaignFactory

    campaign = CampaignFactory(name="Spring", kind="parent", collaborative_type="", entity=org.hq)
    for n in range(3):
        person(org, f"P{n}", first_name=f"Pat{n}", entity=org.store_a)
    delivery = prepared(campaign)
    page = log_in(org.marketer)
    page.goto(f"{live_server.url}/deliveries/{delivery.pk}/")
    page.get_by_role("link", name="Cancel the delivery…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cancel the delivery “Spring”?")
    expect(page.get_by_text("3 messages not yet sent will not be sent.")).to_be_visible()
    shot(page, "portal-cancel-delivery")
    page.get_by_role("link", name="Go back, change nothing").click()
    expect(page).to_have_url(re.compile(rf"/deliveries/{delivery.pk}/$"))
    assert Delivery.objects.get(pk=delivery.pk).state == "prepared"
    page.get_by_role("link", name="Cancel the delivery…").click()
    page.get_by_label("Reason").fill("Wrong offer in the subject")
    page.get_by_role("button", name="Cancel the delivery").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Cancelled; 3 messages will not be sent."
    )
    shot(page, "portal-delivery-cancelled")
    assert Delivery.objects.get(pk=delivery.pk).state == "cancelled"


def test_stop_asks_for_a_reason_in_the_portal(org, log_in, live_server):
    from tests.factories import CampaignFactory

    parent = CampaignFactory(name="Welcome", kind="parent", collaborative_type="", entity=org.hq)
    child = CampaignFactory(
        name="Welcome — Store A", kind="child", collaborative_type="by_campaign",
        parent=parent, entity=org.store_a,
    )  # fmt: skip
    page = log_in(org.operator_a)
    page.goto(f"{live_server.url}/campaigns/{child.pk}/")
    page.get_by_role("link", name="Stop…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Stop the campaign “Welcome — Store A”?"
    )
    shot(page, "portal-stop-campaign")
    page.get_by_label("Reason").fill("The store closes for works")
    page.get_by_role("button", name="Stop the campaign").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Stopped; “Welcome — Store A” is stopped."
    )
    assert Campaign.objects.get(pk=child.pk).state == "stopped"


def test_the_field_inline_shows_only_the_options_of_the_chosen_type(org, log_in, live_server):
    from tests.factories import CampaignFactory, FieldFactory

    campaign = CampaignFactory(name="Opening", collaborative_type="by_form", entity=org.hq)
    FieldFactory(campaign=campaign, name="offer", field_type="text", max_length=80)
    FieldFactory(campaign=campaign, name="discount", field_type="number", min_value=5)
    page = log_in(org.marketer)
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    text, number = "#personalisation_fields-0", "#personalisation_fields-1"
    expect(page.locator(f"{text} .fieldBox.field-max_length")).to_be_visible()
    expect(page.locator(f"{text} .fieldBox.field-allowed_extensions")).to_be_hidden()
    expect(page.locator(f"{text} .field-choices")).to_be_hidden()
    expect(page.locator(f"{text} .fieldBox.field-min_value")).to_be_hidden()
    expect(page.locator(f"{number} .fieldBox.field-min_value input")).to_have_value("5")
    expect(page.locator(f"{number} .fieldBox.field-max_length")).to_be_hidden()
    shot(page, "admin-personalisation-fields")
    page.locator(f"{text} select[name$='-field_type']").select_option("file")
    expect(page.locator(f"{text} .fieldBox.field-allowed_extensions")).to_be_visible()
    expect(page.locator(f"{text} .fieldBox.field-max_file_size_kb")).to_be_visible()
    expect(page.locator(f"{text} .fieldBox.field-max_length")).to_be_hidden()
    page.locator(f"{text} select[name$='-field_type']").select_option("choice")
    expect(page.locator(f"{text} .field-choices")).to_be_visible()
    expect(page.locator(f"{text} .fieldBox.field-allowed_extensions")).to_be_hidden()
