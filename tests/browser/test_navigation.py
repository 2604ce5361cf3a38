import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("/audience/imports/", "Audience"),
        ("/audience/", "Audience"),
        ("/orders/", "Orders"),
        ("/campaigns/", "Campaigns"),
        ("/approvals/", "Approvals"),
    ],
)
def test_the_navigation_highlights_the_section_of_the_page(org, log_in, live_server, path, section):
    page = log_in(org.operator_a)
    page.goto(live_server.url + path)
    current = page.locator('nav.mainnav a[aria-current="page"]')
    expect(current).to_have_count(1)
    expect(current).to_have_text(section)


@pytest.mark.parametrize("who", ["marketer", "approver"])
def test_the_central_navigation_fits_on_one_line_at_1280_px(org, log_in, live_server, who):
    user = getattr(org, who)
    # A real name, longer than a test username: the header must not wrap for it either.
    user.first_name, user.last_name = "Jean-Baptiste", "Dupont-Martin de la Tour"
    user.save(update_fields=["first_name", "last_name"])
    page = log_in(user)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.reload()
    tops = {
        round(box["y"])
        for link in page.locator("header.topbar a, header.topbar button").all()
        if (box := link.bounding_box())
    }
    assert max(tops) - min(tops) < 12, tops
