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
    # The builder (a deferred script) must have drawn the default tree before the conditions
    # are replaced, or its first drawing can land in the middle of the change.
    expect(page.get_by_label("Field").first).to_be_visible()
    # A store operator never sees the conditions as JSON: the builder writes a hidden field.
    expect(page.get_by_label("Conditions (JSON)")).to_have_count(0)
    set_conditions(page, '{"field": "email_consent", "op": "eq", "value": true}')
    expect(page.get_by_label("Field").first).to_have_value("f:email_consent")  # builder follows
    page.evaluate("window.notReloaded = true")
    page.get_by_role("button", name="Count", exact=True).click()
    expect(page.locator("#count-output")).to_contain_text("2 rows")
    expect(page.locator("#count-output")).to_contain_text("for: Email consent is yes.")
    assert page.evaluate("window.notReloaded") is True
    set_conditions(page, '{"field": "salary", "op": "gt", "value": 1}')
    page.wait_for_timeout(500)  # let the builder settle before clicking
    page.get_by_role("button", name="Count", exact=True).click()
    expect(page.locator("#count-output")).to_contain_text("unknown field “salary”")


def set_conditions(page, tree):
    """Put a condition tree where the builder keeps it, as the builder itself does."""
    page.locator("#conditions").evaluate(
        "(el, tree) => { el.value = tree; el.dispatchEvent(new Event('input')); }", tree
    )


def test_a_marketer_builds_a_query_without_writing_json(org, page, live_server):
    from datetime import date

    from campaigns.models import Booking, SavedQuery
    from tests.factories import PASSWORD

    for n in range(4):
        contact = Contact.objects.create(
            external_id=f"Q{n}", entity=org.store_a, email_consent=n % 2 == 0
        )
        if n < 3:
            Booking.objects.create(
                contact=contact, reference=f"QB{n}", product="Ski week", booking_date=date.today()
            )
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/campaigns/savedquery/add/")
    page.fill("#id_name", "Opted-in skiers")
    page.get_by_role("button", name="+ condition").first.click()
    page.get_by_label("Field").last.select_option("f:email_consent")
    page.get_by_label("Value").last.select_option("true")
    page.get_by_role("button", name="+ condition").first.click()
    page.get_by_label("Field").last.select_option("r:bookings")
    page.get_by_role("button", name="Count and show a sample").click()
    expect(page.locator("#count-output")).to_contain_text("2 rows")
    expect(page.locator("#count-output table")).to_contain_text("Q0")
    page.screenshot(path=str(live_server_screenshot()), full_page=True)
    entity = page.locator("#id_entity")
    entity.evaluate(
        "(el, pk) => { el.appendChild(new Option('HQ', pk, true, true)); }", str(org.hq.pk)
    )
    page.get_by_role("button", name="Save", exact=True).click()
    query = SavedQuery.objects.get(name="Opted-in skiers")
    assert query.conditions == {
        "and": [
            {"field": "email_consent", "op": "eq", "value": True},
            {"relation": "bookings", "op": "exists"},
        ]
    }


def live_server_screenshot():
    import os
    from pathlib import Path

    folder = Path(os.environ.get("SCREENSHOT_DIR", "/tmp"))
    return folder / "query-builder.png"
