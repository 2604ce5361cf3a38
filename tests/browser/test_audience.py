import pytest
from playwright.sync_api import expect

from campaigns.models import Contact

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_count_button_counts_without_reloading(org, log_in, live_server):
    for n in range(3):
        Contact.objects.create(external_id=f"A{n}", entity=org.store_a, email_consent=n > 0)
    Contact.objects.create(external_id="B0", entity=org.store_b, email_consent=True)
    page = log_in(org.operator_a)
    page.get_by_role("link", name="Audience").click()
    page.get_by_label("Conditions (JSON)").fill(
        '{"field": "email_consent", "op": "eq", "value": true}'
    )
    page.evaluate("window.notReloaded = true")
    page.get_by_role("button", name="Count", exact=True).click()
    expect(page.locator("#count-output")).to_contain_text("2 rows")
    assert page.evaluate("window.notReloaded") is True
    page.get_by_label("Conditions (JSON)").fill('{"field": "salary", "op": "gt", "value": 1}')
    page.get_by_role("button", name="Count", exact=True).click()
    expect(page.locator("#count-output")).to_contain_text("unknown field “salary”")
