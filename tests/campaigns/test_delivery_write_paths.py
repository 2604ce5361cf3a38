"""A bad delivery is refused by every way one is written, with a message naming the field:
the admin (delivery and typology forms), the canvas and its step panel, demo seeding,
package publication and the child's run. The rules are the delivery services' and the
typology module's; the models run them only through what those modules registered."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from campaigns import demo
from campaigns.delivery import services as delivery_services
from campaigns.delivery import typology
from campaigns.models import Activity, Delivery, Typology, checks
from campaigns.workflow import canvas, engine
from campaigns.workflow.copy import copy_workflow
from packages import services as package_services
from portal.exceptions import DomainError
from tests.api.test_api import client_for
from tests.campaigns.test_canvas import graph, save
from tests.campaigns.workflow import QUERY, act, link
from tests.factories import CampaignFactory, PackageFactory

pytestmark = pytest.mark.django_db

BAD_SUBJECT = "Hi {{ contact.nickname }}"
GOOD = {"channel": "email", "subject": "Hi {{ contact.first_name }}", "text_body": "Hello"}
BAD = {**GOOD, "subject": BAD_SUBJECT}
INLINE = {
    "history-portal-auditlog-content_type-object_id-TOTAL_FORMS": "0",
    "history-portal-auditlog-content_type-object_id-INITIAL_FORMS": "0",
}


def test_the_models_run_the_rules_their_owners_registered():
    assert checks.registered(Delivery) == [delivery_services.delivery_problems]
    assert checks.registered(Typology) == [typology.typology_problems]


def test_the_service_names_the_field_and_the_model_applies_it(campaign):
    delivery = Delivery(campaign=campaign, label="Bad", channel="email", subject=BAD_SUBJECT,
                        text_body="Body")  # fmt: skip
    problems = delivery_services.delivery_problems(delivery)
    assert list(problems) == ["subject"] and "unknown variable" in problems["subject"][0]
    with pytest.raises(ValidationError) as caught:
        delivery.full_clean(exclude=["state"])
    assert caught.value.message_dict["subject"] == problems["subject"]


def staff(org, client):
    org.marketer.is_staff = True
    org.marketer.save()
    client.force_login(org.marketer)


def test_the_admin_delivery_form_refuses_bad_content_on_its_field(campaign, org, client):
    staff(org, client)
    response = client.post(reverse("admin:campaigns_delivery_add"), {
        "campaign": campaign.pk, "label": "Promo", "channel": "email", "dimension": "contact",
        "subject": BAD_SUBJECT, "text_body": "Hi", "push_data": "{}", "columns": "[]",
        "export_format": "csv", **INLINE,
    })  # fmt: skip
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["subject"] and "unknown variable" in errors["subject"][0]
    assert not Delivery.objects.filter(label="Promo").exists()


def test_the_admin_typology_form_refuses_bad_rules_naming_the_rule(org, client):
    staff(org, client)
    response = client.post(reverse("admin:campaigns_typology_add"), {
        "name": "Odd", "entity": org.hq.pk, "purpose": "marketing", "description": "",
        "rules": json.dumps([{"rule": "consent"}, {"rule": "teleport"}]),
    })  # fmt: skip
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["rules"] and errors["rules"][0].startswith("rules[1]: rule must be")
    assert not Typology.objects.filter(name="Odd").exists()


def test_the_api_does_not_write_deliveries(org, campaign):
    client, _ = client_for(org.marketer)
    body = {"campaign": campaign.pk, "label": "Api", "channel": "email", "subject": BAD_SUBJECT}
    assert client.post("/api/v1/deliveries/", body, format="json").status_code == 405
    assert not Delivery.objects.filter(label="Api").exists()


def test_a_canvas_save_refuses_bad_delivery_content_on_its_step(campaign, org):
    bad = graph(
        ("q", "query", {"conditions": QUERY}),
        ("mail", "delivery", BAD),
        ("end", "end", {}),
        arrows=[("q", "out", "mail"), ("mail", "out", "end")],
    )
    with pytest.raises(canvas.GraphRefused) as caught:
        save(campaign, bad, org.marketer)
    on_mail = [p.message for p in caught.value.graph_problems if p.step == "mail"]
    assert any("subject: " in m and "unknown variable" in m for m in on_mail), on_mail
    assert not campaign.activities.exists()


def test_the_step_panel_refuses_bad_delivery_content_on_its_field(campaign, org, client):
    client.force_login(org.marketer)
    url = reverse("campaigns:canvas_step", args=[campaign.pk])
    refused = client.post(url, {
        "action": "check", "type": "delivery", "key": "mail", "settings": "{}",
        "s-channel": "email", "s-subject": BAD_SUBJECT, "s-text_body": "Hello",
        "s-sender": "promo@elsewhere.example",
    }).json()  # fmt: skip
    assert refused["ok"] is False
    assert (
        "unknown variable" in refused["html"]
        and "not at a verified sender domain" in (refused["html"])
    )


def test_demo_seeding_refuses_a_bad_delivery_step_naming_it_and_writes_nothing(campaign):
    steps = [("q", "query", "Everyone", {"conditions": QUERY}),
             ("mail", "delivery", "Mail", BAD)]  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        demo.workflow(campaign, steps, [("q", "mail", "out")])
    assert list(caught.value.message_dict) == ["mail"]
    assert caught.value.message_dict["mail"][0].startswith("subject: ")
    assert not Activity.objects.filter(campaign=campaign).exists()
    steps[1] = ("mail", "delivery", "Mail", GOOD)
    assert set(demo.workflow(campaign, steps, [("q", "mail", "out")])) == {"q", "mail"}


def by_campaign_parent(org, settings):
    parent = CampaignFactory(name="Parent", collaborative_type="by_campaign", entity=org.hq)
    q = act(parent, "q", "query", conditions=QUERY)
    mail = act(parent, "mail", "delivery", **settings)
    end = act(parent, "end", "end")
    link(parent, q, mail)
    link(parent, mail, end)
    return parent


def test_publication_refuses_a_reference_campaign_with_a_bad_delivery_step(org):
    parent = by_campaign_parent(org, BAD)
    package = PackageFactory(reference_campaign=parent, audience=[org.store_a])
    with pytest.raises(DomainError) as caught:
        package_services.publish_package(package=package, actor=org.marketer)
    assert any(p.startswith("Delivery step “mail”: subject: ") for p in caught.value.problems)
    package.refresh_from_db()
    assert package.state == "draft"
    Activity.objects.filter(campaign=parent, key="mail").update(settings=GOOD)
    published = package_services.publish_package(package=package, actor=org.marketer).package
    assert published.state == "published"


def test_a_child_whose_copied_delivery_went_bad_cannot_run_naming_the_field(org):
    parent = by_campaign_parent(org, GOOD)
    child = CampaignFactory(name="Child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=parent)  # fmt: skip
    copy_workflow(source=parent, target=child)
    assert engine.validate_workflow(child) == []
    Activity.objects.filter(campaign=child, key="mail").update(settings=BAD)
    with pytest.raises(DomainError) as caught:
        engine.start_run(campaign=child, actor=org.operator_a, simulate=True)
    assert any("subject: " in p and "unknown variable" in p for p in caught.value.problems)
