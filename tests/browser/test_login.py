import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_local_operator_logs_in_and_sees_only_its_entity(org, log_in, live_server):
    page = log_in(org.operator_a)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")
    expect(page.get_by_role("link", name="Store A")).to_be_visible()
    page.get_by_role("link", name="Entities").click()
    expect(page.get_by_role("table")).to_contain_text("Store A")
    expect(page.get_by_role("table")).not_to_contain_text("Store B")
    page.goto(f"{live_server.url}/entities/STORE_B/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")


def test_a_wrong_password_is_refused_politely(org, page, live_server):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("operator_a")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
