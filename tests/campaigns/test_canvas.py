"""The workflow canvas: whole-graph saves (validation, concurrency, local limits), the step
form panel, and counts on transitions."""

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from campaigns.models import Activity, Campaign, Transition
from campaigns.workflow import canvas
from campaigns.workflow.copy import copy_workflow
from portal.models import AuditLog
from tests.campaigns.workflow import FRENCH, QUERY, act, link, simulate
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def graph(*steps, arrows=()):
    return {
        "steps": [
            {"key": key, "type": type_, "settings": settings, "x": 10 * n, "y": 0}
            for n, (key, type_, settings) in enumerate(steps)
        ],
        "arrows": [{"source": s, "label": label, "target": t} for s, label, t in arrows],
    }


SIMPLE = graph(
    ("q", "query", {"conditions": QUERY}),
    ("fr", "query", {"conditions": FRENCH}),
    ("keep", "exclusion", {}),
    ("end", "end", {}),
    ("gone", "end", {}),
    arrows=[("q", "out", "keep"), ("fr", "out", "keep"), ("keep", "out", "end"),
            ("keep", "removed", "gone")],
)  # fmt: skip


def save(campaign, data, actor, version=None):
    campaign.refresh_from_db()
    return canvas.save_graph(
        campaign=campaign,
        graph=data,
        version=campaign.workflow_version if version is None else version,
        actor=actor,
    )


def test_it_saves_a_whole_graph_and_counts_the_version(campaign, org):
    assert save(campaign, SIMPLE, org.marketer) == 1
    assert set(campaign.activities.values_list("key", flat=True)) == {
        "q", "fr", "keep", "end", "gone"
    }  # fmt: skip
    arrows = list(Transition.objects.filter(campaign=campaign).order_by("id").values_list(
        "source__key", "label", "target__key"))  # fmt: skip
    # The exclusion's inputs keep the canvas's order: the first is the population.
    assert arrows[:2] == [("q", "out", "keep"), ("fr", "out", "keep")]
    assert ("keep", "removed", "gone") in arrows
    entry = AuditLog.objects.get(action="edit_workflow")
    assert entry.actor == org.marketer and entry.extra["version"] == 1


def test_a_second_save_from_the_same_version_is_refused_and_changes_nothing(campaign, org):
    save(campaign, SIMPLE, org.marketer)
    first = json.loads(json.dumps(SIMPLE))
    first["steps"][0]["label"] = "Consenting"
    second = json.loads(json.dumps(SIMPLE))
    second["steps"][0]["label"] = "Overwritten?"
    assert save(campaign, first, org.marketer, version=1) == 2
    with pytest.raises(canvas.StaleGraph, match="Someone else saved"):
        save(campaign, second, org.marketer, version=1)
    assert campaign.activities.get(key="q").label == "Consenting"
    assert Campaign.objects.get(pk=campaign.pk).workflow_version == 2


def test_a_bad_graph_is_refused_naming_each_problem_on_its_step(campaign, org):
    save(campaign, SIMPLE, org.marketer)
    bad = graph(
        ("q", "query", {"conditions": QUERY}),
        ("a", "deduplication", {}),
        ("b", "deduplication", {}),
        ("wait", "wait", {"days": -1}),
        ("end", "end", {}),
        arrows=[("q", "out", "a"), ("a", "out", "b"), ("b", "out", "a"), ("ghost", "out", "end"),
                ("q", "out", "wait")],
    )  # fmt: skip
    with pytest.raises(canvas.GraphRefused) as caught:
        save(campaign, bad, org.marketer)
    by_step = {}
    for problem in caught.value.graph_problems:
        by_step.setdefault(problem.step, []).append(problem.message)
    assert any("unknown step “ghost”" in m for m in by_step["end"])  # a dangling input
    # shape problems come first; fix the dangling input to see the graph's own problems
    bad["arrows"] = [a for a in bad["arrows"] if a["source"] != "ghost"]
    with pytest.raises(canvas.GraphRefused) as caught:
        save(campaign, bad, org.marketer)
    by_step = {}
    for problem in caught.value.graph_problems:
        by_step.setdefault(problem.step, []).append(problem.message)
    assert any("cycle" in m for m in by_step["a"]) and any("cycle" in m for m in by_step["b"])
    assert any("whole number" in m for m in by_step["wait"])
    assert any("needs at least 1 incoming" in m for m in by_step["end"])
    # nothing saved: the previous graph is intact
    assert set(campaign.activities.values_list("key", flat=True)) == {
        "q", "fr", "keep", "end", "gone"
    }  # fmt: skip
    assert Campaign.objects.get(pk=campaign.pk).workflow_version == 1


def test_an_unknown_type_and_a_malformed_graph_are_refused(campaign, org):
    with pytest.raises(canvas.GraphRefused, match="not an activity type"):
        save(campaign, graph(("x", "teleport", {})), org.marketer)
    with pytest.raises(canvas.GraphRefused, match="steps and arrows must be lists"):
        save(campaign, {"steps": "nope"}, org.marketer)
    with pytest.raises(canvas.GraphRefused, match="key must be a short identifier"):
        save(campaign, graph(("Bad Key!", "end", {})), org.marketer)
    assert not campaign.activities.exists()


def test_a_step_keeps_its_row_and_settings_are_stored_normalised(campaign, org):
    save(campaign, SIMPLE, org.marketer)
    before = campaign.activities.get(key="q").pk
    changed = json.loads(json.dumps(SIMPLE))
    changed["steps"][0]["settings"] = {"conditions": QUERY, "dimension": "", "entity_path": ""}
    save(campaign, changed, org.marketer)
    q = campaign.activities.get(key="q")
    assert q.pk == before and q.settings == {"conditions": QUERY}


def test_outsiders_and_local_operators_cannot_save_a_central_workflow(campaign, org):
    with pytest.raises(PermissionDenied):
        save(campaign, SIMPLE, org.operator_a)
    assert not campaign.activities.exists()


@pytest.fixture
def family(org):
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    q = act(parent, "q", "query", conditions=QUERY)
    wait = act(parent, "wait", "wait", days=1)
    end = act(parent, "end", "end")
    Activity.objects.filter(pk=wait.pk).update(local_edit=True)
    link(parent, q, wait)
    link(parent, wait, end)
    child = CampaignFactory(name="Child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=parent)  # fmt: skip
    copy_workflow(source=parent, target=child)
    return parent, child


def child_graph(child, user):
    return canvas.graph_of(child, user=user)


def test_a_local_operator_changes_an_allowed_step_only(family, org):
    _parent, child = family
    data = child_graph(child, org.operator_a)
    assert data["mode"] == "local"
    editable = {s["key"]: s["editable"] for s in data["steps"]}
    assert editable == {"q": [], "wait": ["days", "hours", "minutes"], "end": []}
    for item in data["steps"]:
        if item["key"] == "wait":
            item["settings"] = {"hours": 5}
    assert save(child, data, org.operator_a) == 1
    assert child.activities.get(key="wait").settings == {"hours": 5}
    for item in data["steps"]:
        if item["key"] == "q":
            item["settings"] = {"conditions": FRENCH}
    with pytest.raises(PermissionDenied, match="locked by the parent"):
        save(child, data, org.operator_a)
    assert child.activities.get(key="q").settings == {"conditions": QUERY}
    data = child_graph(child, org.operator_a)
    data["steps"].append({"key": "extra", "type": "end", "settings": {}})
    with pytest.raises(PermissionDenied, match="add, remove or link"):
        save(child, data, org.operator_a)


def test_the_canvas_views_refuse_a_forged_change_of_a_locked_step(family, org, client):
    _parent, child = family
    client.force_login(org.operator_a)
    url = reverse("campaigns:canvas_save", args=[child.pk])
    data = child_graph(child, org.operator_a)
    for item in data["steps"]:
        if item["key"] == "q":
            item["settings"] = {"conditions": FRENCH}
    body = json.dumps({"version": 0, "graph": data})
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 403 and "locked" in response.json()["error"]
    step_url = reverse("campaigns:canvas_step", args=[child.pk])
    forged = {"action": "check", "type": "query", "key": "q", "s-conditions": json.dumps(FRENCH)}
    assert client.post(step_url, forged).status_code == 403
    client.force_login(org.operator_b)  # another entity: the campaign does not exist for it
    assert client.post(url, body, content_type="application/json").status_code == 404
    assert client.get(reverse("campaigns:canvas_graph", args=[child.pk])).status_code == 404
    assert child.activities.get(key="q").settings == {"conditions": QUERY}


def test_the_save_view_answers_409_and_400_with_problems_on_steps(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("campaigns:canvas_save", args=[campaign.pk])
    ok = client.post(url, json.dumps({"version": 0, "graph": SIMPLE}), "application/json")
    assert ok.status_code == 200 and ok.json()["version"] == 1
    stale = client.post(url, json.dumps({"version": 0, "graph": SIMPLE}), "application/json")
    assert stale.status_code == 409 and "Someone else saved" in stale.json()["error"]
    cyclic = graph(("a", "deduplication", {}), ("b", "deduplication", {}),
                   arrows=[("a", "out", "b"), ("b", "out", "a")])  # fmt: skip
    bad = client.post(url, json.dumps({"version": 1, "graph": cyclic}), "application/json")
    assert bad.status_code == 400
    assert {p["step"] for p in bad.json()["problems"] if "cycle" in p["message"]} >= {"a", "b"}
    assert client.post(url, "{not json", "application/json").status_code == 400


def test_the_step_panel_renders_the_typed_form_and_checks_it(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("campaigns:canvas_step", args=[campaign.pk])
    html = client.post(url, {"type": "wait", "key": "w", "settings": '{"days": 2}'})
    assert html.status_code == 200
    assert 'name="s-days"' in html.content.decode() and 'value="2"' in html.content.decode()
    checked = client.post(url, {"action": "check", "type": "wait", "key": "w", "settings": "{}",
                                "s-days": "", "s-hours": "4", "s-minutes": ""}).json()  # fmt: skip
    assert checked == {"ok": True, "settings": {"hours": 4}, "outputs": ["out"], "preview": None}
    refused = client.post(url, {"action": "check", "type": "wait", "key": "w", "settings": "{}",
                                "s-days": "9999"}).json()  # fmt: skip
    assert refused["ok"] is False and "days must be a whole number" in refused["html"]
    split = client.post(url, {"action": "check", "type": "split", "key": "s", "settings": "{}",
                              "s-branches-0-label": "test", "s-branches-0-percent": "10",
                              "s-branches-0-limit": "", "s-branches-0-conditions": "",
                              "s-remainder": "rest"}).json()  # fmt: skip
    assert split["outputs"] == ["test", "rest"]
    assert split["settings"] == {
        "branches": [{"label": "test", "percent": 10}],
        "remainder": "rest",
    }


def test_distribution_limits_are_a_table_of_entities(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("campaigns:canvas_step", args=[campaign.pk])
    html = client.post(url, {"type": "distribution", "key": "d", "settings": "{}"}).content
    assert b'name="s-limits-STORE_A"' in html and b"Store B" in html
    posted = {"action": "check", "type": "distribution", "key": "d", "settings": "{}",
              "s-limits-STORE_A": "40", "s-limits-STORE_B": "",
              "s-default_limit": "10"}  # fmt: skip
    checked = client.post(url, posted).json()
    assert checked["settings"] == {"limits": {"STORE_A": 40}, "default_limit": 10}


def test_counts_show_on_the_transitions_after_a_simulation(
    campaign, audience, org, django_capture_on_commit_callbacks
):
    save(campaign, SIMPLE, org.marketer)
    simulate(campaign, org, django_capture_on_commit_callbacks)
    counts = {
        (a["source"], a["label"], a["target"]): a["count"]
        for a in canvas.graph_of(campaign, user=org.marketer)["arrows"]
    }
    # 11 consenting contacts; French ones (A1, A3, A5, A7, A9) are taken out
    consenting_french = 3  # A1, A3, A5 (A0..A5 consent)
    assert counts[("q", "out", "keep")] == 11
    assert counts[("keep", "out", "end")] == 11 - consenting_french
    assert counts[("keep", "removed", "gone")] == consenting_french


def test_the_admin_campaign_page_holds_the_canvas(campaign, org, client):
    save(campaign, SIMPLE, org.marketer)
    client.force_login(org.marketer)
    page = client.get(reverse("admin:campaigns_campaign_change", args=[campaign.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert 'id="wf-canvas-data"' in body and "campaigns/canvas.js" in body
    assert "drawflow.min.js" in body and "<script>" not in body.split("wf-canvas")[1][:2000]


def test_a_delivery_step_is_checked_and_previewed_in_the_panel(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("campaigns:canvas_step", args=[campaign.pk])
    posted = {"action": "check", "type": "delivery", "key": "mail", "settings": "{}",
              "s-channel": "email", "s-subject": "Hi {{ contact.first_name }}",
              "s-text_body": "Hello {{ contact.first_name }}",
              "s-html_body": "<p>Hello {{ contact.first_name }}</p>"}  # fmt: skip
    checked = client.post(url, posted).json()
    assert checked["ok"], checked
    assert checked["preview"]["subject"] == "Hi <first_name>"
    assert checked["preview"]["html_body"] == "<p>Hello &lt;first_name&gt;</p>"
    posted["s-subject"] = "Hi {{ contact.salary }}"
    refused = client.post(url, posted).json()
    assert refused["ok"] is False and "unknown variable" in refused["html"]
