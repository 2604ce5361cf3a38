import re

import pytest
from playwright.sync_api import expect

from packages.models import Order
from portal import bearer
from portal.models import Notification

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_local_operator_orders_a_by_form_package_with_a_file(
    org, make_package, form_campaign, log_in, live_server, tmp_path
):
    package = make_package(campaign=form_campaign, label="Store event kit")
    flyer = tmp_path / "flyer.png"
    flyer.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)

    page = log_in(org.operator_a)
    page.get_by_role("link", name="Packages", exact=True).click()
    page.get_by_role("link", name="Store event kit").click()
    page.get_by_role("link", name="Order for Store A").click()
    page.get_by_label("Headline").fill("Free coffee all day")
    page.get_by_label("Discount").fill("15")
    page.get_by_label("Event date").fill("2030-05-01")
    page.get_by_label("Segment").select_option("Loyal")
    page.get_by_label("With map").check()
    page.get_by_label("Flyer").set_input_files(str(flyer))
    page.get_by_role("button", name="Submit order").click()

    expect(page.get_by_role("status").first).to_contain_text("submitted")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Submitted")
    expect(page.get_by_role("link", name="flyer.png")).to_be_visible()
    order = Order.objects.get(package=package)
    assert order.state == "submitted"
    assert order.values["flyer"]["name"] == "flyer.png"


def test_a_bad_value_is_shown_next_to_its_field(org, make_package, form_campaign, log_in):
    make_package(campaign=form_campaign, label="Store event kit")
    page = log_in(org.operator_a)
    page.get_by_role("link", name="Packages", exact=True).click()
    page.get_by_role("link", name="Store event kit").click()
    page.get_by_role("link", name="Order for Store A").click()
    page.get_by_label("Headline").fill("Free coffee")
    page.get_by_label("Discount").fill("80")
    page.get_by_role("button", name="Submit order").click()
    expect(page.get_by_text("less than or equal to 50")).to_be_visible()
    assert not Order.objects.exists()


def test_the_approver_rejects_from_the_emailed_link(
    org, make_package, form_campaign, valid_values, page, live_server, log_in
):
    from packages import services

    package = make_package(campaign=form_campaign, label="Store event kit")
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    ).order
    email = Notification.objects.get(kind="approval_request", recipient=org.approver)
    _subject, text, _html = bearer.reveal(email)  # as sent: the outbox row holds no link
    path = re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", text).group(1)

    page.goto(f"{live_server.url}{path}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Store event kit")
    expect(page.get_by_text("Free coffee")).to_be_visible()
    page.get_by_label("Reject").check()
    page.get_by_label("Comment").fill("Keep the discount under 10% this month.")
    page.get_by_role("button", name="Confirm my decision").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("rejected")

    page.context.clear_cookies()
    page = log_in(org.operator_a)
    page.goto(f"{live_server.url}/orders/{order.pk}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Rejected")
    expect(page.get_by_role("status").first).to_contain_text(
        "Keep the discount under 10% this month."
    )
