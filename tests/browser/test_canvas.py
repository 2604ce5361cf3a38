"""The workflow canvas in Chromium at 1280 px: build, configure, save, simulate and read the
counts; a local operator within the parent's limits; a concurrent save refused."""

import json
import os
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from campaigns.models import Activity, Contact
from campaigns.workflow.copy import copy_workflow
from tests.campaigns.workflow import QUERY, act, link
from tests.factories import CampaignFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("CANVAS_SCREENSHOTS", tempfile.gettempdir()))


@pytest.fixture
def wide(page):
    page.set_viewport_size({"width": 1280, "height": 900})
    return page


def admin_page(page, live_server, campaign):
    page.goto(f"{live_server.url}/admin/campaigns/campaign/{campaign.pk}/change/")
    expect(page.locator("#wf-drawflow")).to_be_visible()
    return page


def node(page, key):
    return page.locator(f".drawflow-node[data-key='{key}']")


def connect(page, source, target, output=1):
    page.locator(f".drawflow-node[data-key='{source}'] .output_{output}").hover()
    page.mouse.down()
    page.locator(f".drawflow-node[data-key='{target}'] .input_1").hover()
    page.mouse.up()


def test_a_marketer_builds_configures_saves_and_simulates_on_the_canvas(
    org, log_in, live_server, wide
):
    for n in range(7):
        Contact.objects.create(external_id=f"A{n}", entity=org.store_a, email_consent=n < 4)
    campaign = CampaignFactory(name="Canvas", kind="parent", collaborative_type="",
                               entity=org.hq)  # fmt: skip
    log_in(org.marketer)
    page = admin_page(wide, live_server, campaign)
    board = page.locator("#wf-drawflow")
    # Drag two types from the palette onto the canvas.
    page.get_by_role("button", name="Query (build an audience)").drag_to(
        board, target_position={"x": 60, "y": 60}
    )
    expect(node(page, "query-1")).to_be_visible()
    page.get_by_role("button", name="End", exact=True).drag_to(
        board, target_position={"x": 300, "y": 160}
    )
    expect(node(page, "end-1")).to_be_visible()
    connect(page, "query-1", "end-1")
    expect(page.locator("svg.connection")).to_have_count(1)
    # Configure the query through its form: the builder, never JSON.
    node(page, "query-1").click()
    panel = page.locator("[data-panel]")
    expect(panel.get_by_label("Dimension")).to_be_visible()
    panel.get_by_label("Name").fill("Consenting")
    panel.get_by_role("button", name="+ condition").first.click()
    panel.get_by_label("Field").first.select_option("f:email_consent")
    panel.get_by_role("button", name="Apply settings").click()
    expect(page.locator("[data-status]")).to_contain_text("applied")
    expect(node(page, "query-1")).to_contain_text("Consenting")
    page.get_by_role("button", name="Save workflow").click()
    expect(page.locator("[data-status]")).to_contain_text("Saved (version 1)")
    query = campaign.activities.get(key="query-1")
    assert query.label == "Consenting"
    assert "email_consent" in json.dumps(query.settings["conditions"])
    page.get_by_role("button", name="Simulate").click()
    expect(page.locator("[data-status]")).to_contain_text("Simulation completed")
    expect(page.locator(".wf-count")).to_have_text("4")
    page.screenshot(path=str(SHOTS / "canvas-admin.png"), full_page=True)


def test_a_bad_graph_shows_its_problems_on_the_steps(org, log_in, live_server, wide):
    campaign = CampaignFactory(name="Broken", kind="parent", collaborative_type="",
                               entity=org.hq)  # fmt: skip
    log_in(org.marketer)
    page = admin_page(wide, live_server, campaign)
    # Keyboard: focus a palette entry and press Enter to place the step.
    page.get_by_role("button", name="End", exact=True).focus()
    page.keyboard.press("Enter")
    expect(node(page, "end-1")).to_be_visible()
    page.get_by_role("button", name="Save workflow").click()
    expect(page.locator("[data-status]")).to_contain_text("not saved")
    expect(node(page, "end-1").locator(".wf-node-problems")).to_contain_text(
        "needs at least 1 incoming"
    )
    assert not campaign.activities.exists()


def test_a_concurrent_save_is_refused(org, log_in, live_server, wide):
    campaign = CampaignFactory(name="Shared", kind="parent", collaborative_type="",
                               entity=org.hq)  # fmt: skip
    q = act(campaign, "q", "query", conditions=QUERY)
    link(campaign, q, act(campaign, "end", "end"))
    log_in(org.marketer)
    first = admin_page(wide, live_server, campaign)
    second = admin_page(wide.context.new_page(), live_server, campaign)
    for page, name in ((first, "Mine"), (second, "Theirs")):
        node(page, "q").click()
        page.locator("[data-panel]").get_by_label("Name").fill(name)
        page.get_by_role("button", name="Apply settings").click()
        expect(page.locator("[data-status]")).to_contain_text("applied")
    first.get_by_role("button", name="Save workflow").click()
    expect(first.locator("[data-status]")).to_contain_text("Saved (version 1)")
    second.get_by_role("button", name="Save workflow").click()
    expect(second.locator("[data-status]")).to_contain_text("Someone else saved this workflow")
    assert campaign.activities.get(key="q").label == "Mine"


def test_a_local_operator_changes_an_allowed_step_and_not_a_locked_one(
    org, log_in, live_server, wide
):
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    q = act(parent, "q", "query", conditions=QUERY)
    wait = act(parent, "wait", "wait", days=1)
    Activity.objects.filter(pk=wait.pk).update(local_edit=True, label="Pause")
    link(parent, q, wait)
    link(parent, wait, act(parent, "end", "end"))
    child = CampaignFactory(name="Store child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=parent)  # fmt: skip
    copy_workflow(source=parent, target=child)
    page = log_in(org.operator_a)
    page.goto(f"{live_server.url}/campaigns/{child.pk}/")
    expect(page.locator("#wf-drawflow")).to_be_visible()
    expect(node(page, "wait")).to_contain_text("yours to change")
    node(page, "wait").click()
    panel = page.locator("[data-panel]")
    panel.get_by_label("Hours").fill("6")
    panel.get_by_label("Days").fill("")
    panel.get_by_role("button", name="Apply settings").click()
    expect(page.locator("[data-status]")).to_contain_text("applied")
    page.get_by_role("button", name="Save workflow").click()
    expect(page.locator("[data-status]")).to_contain_text("Saved (version 1)")
    assert child.activities.get(key="wait").settings == {"hours": 6}
    # The locked query: the panel is read only, and a forged save is refused.
    node(page, "q").click()
    expect(panel).to_contain_text("set by the parent campaign")
    expect(panel.get_by_role("button", name="Apply settings")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "canvas-portal.png"), full_page=True)
    status = page.evaluate(
        """async (url) => {
            const data = JSON.parse(document.getElementById('wf-canvas-data').textContent);
            const graph = data.graph;
            graph.steps.forEach(s => { if (s.key === 'q') s.settings = {conditions: {}}; });
            const token = document.querySelector(
                '#wf-canvas input[name=csrfmiddlewaretoken]').value;
            const response = await fetch(url, {method: 'POST', body: JSON.stringify(
                {version: 1, graph: graph}), headers: {'X-CSRFToken': token,
                'Content-Type': 'application/json'}});
            return response.status;
        }""",
        f"/campaigns/{child.pk}/canvas/save/",
    )
    assert status == 403
    assert child.activities.get(key="q").settings == json.loads(json.dumps({"conditions": QUERY}))
