import json

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Contact, SavedQuery


@pytest.fixture
def contacts(org):
    Contact.objects.create(
        external_id="A1", last_name="Alpha", email="a@x.com", entity=org.store_a, email_consent=True
    )
    Contact.objects.create(external_id="A2", first_name="Bea", last_name="Beta", entity=org.store_a)
    Contact.objects.create(
        external_id="B1", last_name="Gamma", entity=org.store_b, email_consent=True
    )


def post_count(client, payload):
    return client.post(
        reverse("campaigns:audience_count"), json.dumps(payload), content_type="application/json"
    )


def test_the_count_button_returns_exact_counts_of_my_contacts(contacts, org, client):
    client.force_login(org.operator_a)
    response = post_count(
        client,
        {
            "dimension": "contact",
            "conditions": json.dumps({"field": "email_consent", "op": "eq", "value": True}),
        },
    )
    assert response.status_code == 200
    assert response.json()["rows"] == 1
    client.force_login(org.marketer)
    assert post_count(client, {"dimension": "contact", "conditions": {}}).json()["rows"] == 3


def test_bad_conditions_come_back_with_their_paths(contacts, org, client):
    client.force_login(org.operator_a)
    response = post_count(
        client,
        {
            "dimension": "contact",
            "conditions": {"and": [{"field": "salary", "op": "gt", "value": 1}]},
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "and[0].field"
    response = post_count(client, {"dimension": "contact", "conditions": "{not json"})
    assert (
        response.status_code == 400 and "Not valid JSON" in response.json()["errors"][0]["message"]
    )
    response = client.post(
        reverse("campaigns:audience_count"), "[]", content_type="application/json"
    )
    assert response.status_code == 400


def test_counting_for_another_entity_is_refused(contacts, org, client):
    client.force_login(org.operator_a)
    response = post_count(
        client, {"dimension": "contact", "conditions": {}, "entity": org.store_b.pk}
    )
    assert response.status_code == 400


def test_the_count_needs_login_post_and_csrf(contacts, org):
    anonymous = Client()
    assert post_count(anonymous, {"conditions": {}}).status_code == 302
    client = Client(enforce_csrf_checks=True)
    client.force_login(org.operator_a)
    assert post_count(client, {"conditions": {}}).status_code == 403
    client = Client()
    client.force_login(org.operator_a)
    assert client.get(reverse("campaigns:audience_count")).status_code == 405


def test_the_audience_page_lists_only_my_contacts(contacts, org, client):
    client.force_login(org.operator_a)
    body = client.get(reverse("campaigns:audience")).content.decode()
    assert "Alpha" in body and "Beta" in body and "Gamma" not in body
    body = client.get(reverse("campaigns:audience") + "?q=gamma").content.decode()
    assert "Gamma" not in body
    # The search box matches first names too, as the review page's does (one rule).
    body = client.get(reverse("campaigns:audience") + "?q=bea").content.decode()
    assert "Beta" in body and "Alpha" not in body


def test_a_staff_local_user_cannot_list_other_contacts_in_the_admin(contacts, org, client):
    from django.contrib.auth.models import Permission

    org.operator_a.is_staff = True
    org.operator_a.save()
    client.force_login(org.operator_a)
    response = client.get(reverse("admin:campaigns_contact_changelist"))
    listed = {contact.external_id for contact in response.context["cl"].result_list}
    assert listed == {"A1", "A2"}  # (not a text search: a CSRF token may contain "B1")
    other = Contact.objects.get(external_id="B1")
    assert client.get(reverse("admin:campaigns_contact_change", args=[other.pk])).status_code == 302
    assert Permission.objects.filter(codename="view_contact").exists()


def test_contacts_export_is_scoped(contacts, org, client):
    client.force_login(org.marketer)
    response = client.post(
        reverse("admin:campaigns_contact_export"),
        {"format": "0", "contactexportresource_external_id": "on"},
    )
    assert response.status_code == 200
    assert {"A1", "A2", "B1"} <= set(response.getvalue().decode().split())


def test_saved_queries_are_validated_on_save(org):
    from django.core.exceptions import ValidationError

    query = SavedQuery(name="Bad", entity=org.hq, conditions={"field": "x", "op": "eq"})
    with pytest.raises(ValidationError, match="unknown field"):
        query.full_clean()


def test_the_admin_query_builder_counts(contacts, org, client):
    client.force_login(org.marketer)
    query = SavedQuery.objects.create(name="Opted in", entity=org.hq, conditions={})
    page = client.get(reverse("admin:campaigns_savedquery_change", args=[query.pk]))
    assert "Count and show a sample" in page.content.decode()
    response = client.post(
        reverse("admin:campaigns_count"),
        json.dumps({"conditions": {}, "sample": True}),
        content_type="application/json",
    )
    assert response.json()["rows"] == 3
    sample = response.json()["sample"]
    assert sample["columns"][0] == "external_id"
    assert [row[0] for row in sample["rows"]] == ["A1", "A2", "B1"]


def test_local_operators_import_from_the_portal(org, client, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(org.operator_a)
    upload = SimpleUploadedFile("c.csv", b"external_id,first_name\nP1,Pat\n")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("campaigns:import_create"),
            {"kind": "contacts", "file": upload, "entity": org.store_a.pk, "dry_run": "on"},
        )
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "1 new" in page and "would be imported" in page
    assert not Contact.objects.filter(external_id="P1").exists()  # checked only
    response = client.post(
        reverse("campaigns:import_create"),
        {"kind": "contacts", "file": SimpleUploadedFile("c.csv", b"x"), "entity": org.store_b.pk},
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
