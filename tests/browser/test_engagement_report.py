"""The engagement report page in Chromium: its charts draw (Chart.js from static files, data
from json_script) under the Content-Security-Policy, and a store sees only its own entity."""

from __future__ import annotations

import pytest

from tests.campaigns.test_engagement_reports import package, sent_delivery  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""

CHARTS = """() => ["engagement-timeline", "engagement-entities"].map((id) => {
  const chart = window.Chart.getChart(document.getElementById(id));
  return chart ? {type: chart.config.type, labels: chart.data.labels.length,
                  sums: chart.data.datasets.map((d) => d.data.reduce((a, b) => a + b, 0))}
               : null;
})"""


def test_the_package_report_draws_its_charts(page, log_in, live_server, org, sent_delivery, package):  # noqa: E501, F811  # fmt: skip
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(LISTEN)
    log_in(org.marketer)
    page.goto(f"{live_server.url}/reports/engagement/package/{package.pk}/")
    page.wait_for_selector("html[data-charts=ready]")
    timeline, entities = page.evaluate(CHARTS)
    assert timeline["type"] == "line" and timeline["labels"] == 72
    assert timeline["sums"] == [2, 2, 2]  # human opens, human clicks, machine events
    assert entities == {"type": "bar", "labels": 2, "sums": [100.0, 100.0]}
    box = page.locator("#engagement-timeline").bounding_box()
    assert box["width"] > 200 and box["height"] > 50  # drawn, not an empty element
    assert page.locator("#engagement-figures [data-figure=opened]").inner_text().startswith("2")
    assert page.evaluate("window.__cspViolations") == [] and errors == []


def test_a_store_sees_its_own_entity_only_in_the_chart(page, log_in, live_server, org, sent_delivery, package):  # noqa: E501, F811  # fmt: skip
    log_in(org.operator_a)
    page.goto(f"{live_server.url}/reports/engagement/package/{package.pk}/")
    page.wait_for_selector("html[data-charts=ready]")
    labels = page.evaluate(
        "() => window.Chart.getChart(document.getElementById('engagement-entities')).data.labels"
    )
    assert labels == ["STORE_A"]
    assert page.locator("#engagement-entity-table tbody tr").count() == 1
