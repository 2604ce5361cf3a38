"""Finding 9: malformed input answers 400 (with the path of the problem) or a form error,
never a 500; every number is bounded."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Activity
from campaigns.workflow.copy import copy_workflow
from tests.campaigns.workflow import act, link
from tests.factories import CampaignFactory

HUGE = 10**30


@pytest.fixture
def client(org):
    """A client that turns server errors into 500 responses instead of raising them."""
    client = Client(raise_request_exception=False)
    client.force_login(org.marketer)
    return client


def count(client, payload, raw=None):
    return client.post(
        reverse("campaigns:audience_count"),
        raw if raw is not None else json.dumps(payload),
        content_type="application/json",
    )


def errors(response):
    assert response.status_code == 400, response.content[:300]
    return {error["path"]: error["message"] for error in response.json()["errors"]}


def test_deeply_nested_json_is_a_400_not_a_recursion_error(client):
    deep = "[" * 100_000 + "]" * 100_000
    assert "Nested deeper" in errors(count(client, None, raw=deep))[""]
    as_text = json.dumps({"conditions": deep})
    assert "Nested deeper" in errors(count(client, None, raw=as_text))["conditions"]
    moderately = {"conditions": {"not": {"not": {"not": {}}}}}
    for _ in range(20):
        moderately = {"conditions": {"and": [moderately["conditions"]]}}
    assert "nesting deeper than" in " ".join(errors(count(client, moderately)).values())


def test_an_impossible_date_names_its_path(client):
    payload = {"conditions": {"and": [{"field": "birth_date", "op": "eq", "value": "2026-13-45"}]}}
    assert "not a real date" in errors(count(client, payload))["and[0].value"]
    between = {"field": "birth_date", "op": "between", "value": ["2026-01-01", "2026-02-30"]}
    assert "not a real date" in errors(count(client, {"conditions": between}))["value[1]"]


def test_huge_numbers_are_refused_with_their_path(client):
    payload = {"conditions": {"relation": "bookings", "op": "count_gte", "value": HUGE}}
    assert "at most 1000000" in errors(count(client, payload))["value"]
    amounts = {"dimension": "booking",
               "conditions": {"field": "amount", "op": "in", "value": [1, HUGE]}}  # fmt: skip
    assert "give a number between" in errors(count(client, amounts))["value[1]"]
    infinite = (
        '{"dimension": "booking", "conditions": {"field": "amount", "op": "gt", "value": 1e999}}'
    )
    assert "give a number between" in errors(count(client, None, raw=infinite))["value"]
    assert errors(count(client, {"entity": str(HUGE)}))["entity"] == "Unknown entity."
    assert errors(count(client, {"entity": "²"}))["entity"] == "Unknown entity."


def test_names_that_are_not_text_are_refused(client):
    for node, path in [({"field": ["x"], "op": "eq"}, "field"),
                       ({"relation": {}, "op": "exists"}, "relation"),
                       ({"field": "email", "op": ["eq"], "value": "x"}, "op")]:  # fmt: skip
        assert path in errors(count(client, {"conditions": node}))
    assert "dimension" in errors(count(client, {"dimension": ["contact"]}))


@pytest.fixture
def child(org):
    """A child campaign whose scheduler and wait the local entity may change."""
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    start = act(parent, "start", "scheduler", at="2030-05-01T09:00:00+02:00")
    query = act(parent, "q", "query", conditions={})
    wait = act(parent, "wait", "wait", days=1)
    end = act(parent, "end", "end")
    Activity.objects.filter(pk__in=[start.pk, query.pk, wait.pk]).update(local_edit=True)
    link(parent, start, query)
    link(parent, query, wait)
    link(parent, wait, end)
    child = CampaignFactory(name="Child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=parent)  # fmt: skip
    copy_workflow(source=parent, target=child)
    return child


def edit(client, org, child, key, data):
    client.force_login(org.operator_a)
    step = child.activities.get(key=key)
    return client.post(reverse("campaigns:activity_edit", args=[child.pk, step.pk]), data)


@pytest.mark.parametrize("days", ["99999999999999999999", "3651", "-1"])
def test_a_wait_of_absurd_length_is_a_form_error(days, client, org, child):
    response = edit(client, org, child, "wait", {"days": days, "hours": "", "minutes": ""})
    assert response.status_code == 200
    assert "days" in response.content.decode()
    assert child.activities.get(key="wait").settings == {"days": 1}
    detail = client.get(reverse("campaigns:detail", args=[child.pk]))
    assert detail.status_code == 200


@pytest.mark.parametrize("at", ["2026-13-45T09:00:00", "2026-02-30", "99999-01-01T00:00:00"])
def test_an_impossible_schedule_date_is_a_form_error(at, client, org, child):
    response = edit(client, org, child, "start", {"at": at})
    assert response.status_code == 200
    assert "at must be a date and time" in response.content.decode()
    assert child.activities.get(key="start").settings == {"at": "2030-05-01T09:00:00+02:00"}


def test_step_conditions_with_an_impossible_date_or_deep_json_are_form_errors(client, org, child):
    bad_date = {"field": "birth_date", "op": "eq", "value": "2026-13-45"}
    response = edit(client, org, child, "q", {"conditions": json.dumps(bad_date)})
    assert response.status_code == 200
    assert "value: “2026-13-45” is not a real date" in response.content.decode()
    deep = "[" * 50_000 + "]" * 50_000
    response = edit(client, org, child, "q", {"conditions": deep})
    assert response.status_code == 200 and "Nested deeper" in response.content.decode()
    assert child.activities.get(key="q").settings == {"conditions": {}}


def test_other_request_numbers_are_bounded(client, org, child):
    from campaigns.models import Delivery

    delivery = Delivery.objects.create(campaign=child, label="D", channel="email")
    client.force_login(org.operator_a)
    for sample in ["²", str(HUGE), "0"]:
        response = client.post(
            reverse("campaigns:delivery_action", args=[delivery.pk, "proof"]),
            {"addresses": "operator_a@example.com", "sample": sample},
            follow=True,
        )
        assert (
            "Sample recipients: give a whole number between 1 and 20" in response.content.decode()
        )


def test_admin_json_fields_refuse_deep_nesting_with_a_form_error(client, org):
    deep = "[" * 50_000 + "]" * 50_000
    response = client.post(
        reverse("admin:campaigns_savedquery_add"),
        {"name": "Deep", "dimension": "contact", "entity": org.hq.pk, "conditions": deep},
    )
    assert response.status_code == 200
    assert "Nested deeper than" in response.content.decode()


def test_every_editable_admin_json_field_is_bounded(rf, org):
    from django.contrib import admin
    from django.db.models import JSONField

    from portal.admin_mixins import ReadOnlyAdminMixin
    from portal.validation import JSONFormField

    request = rf.get("/")
    request.user = org.marketer
    checked = 0
    for model_admin in admin.site._registry.values():
        holders = [model_admin] + [
            inline(model_admin.model, admin.site) for inline in model_admin.inlines
        ]
        for holder in holders:
            if isinstance(holder, ReadOnlyAdminMixin):
                continue
            readonly = set(holder.get_readonly_fields(request))
            for field in holder.model._meta.fields:
                if isinstance(field, JSONField) and field.editable and field.name not in readonly:
                    formfield = holder.formfield_for_dbfield(field, request=request)
                    assert isinstance(formfield, JSONFormField), (holder, field.name)
                    checked += 1
    assert checked >= 5
