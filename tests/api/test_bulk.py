"""The API's bulk upsert takes the import's one write path (``imports.import_rows`` over
``campaigns.staging``) for every kind: per-row problems in the import's form, all or nothing
by default, idempotent, scoped to the token's entity."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.test import APIClient

from api.services import create_token
from campaigns import imports, staging
from campaigns.models import Booking, Contact, Store
from tests.factories import EntityFactory

pytestmark = pytest.mark.django_db


def client_for(user):
    key = create_token(user=user, name="test", scopes=["read", "write"]).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def post(client, kind, rows, **options):
    return client.post(f"/api/v1/{kind}/bulk/", {"rows": rows, **options}, "json")


MIXED = [
    {"external_id": "N1", "email": "n1@example.com", "email_consent": "yes"},
    {"external_id": "N2", "email": "not-an-email", "birth_date": "1990-13-45"},
    {"external_id": "N3", "first_name": "x" * 101, "blocklisted": "maybe"},
    {"external_id": "N4", "entity": "NOPE"},
    {"external_id": "B1", "first_name": "Stolen"},  # store B's contact
    {"external_id": "N1", "last_name": "Twice"},
    {"external_id": "", "last_name": "No key"},
    {"external_id": "A1", "last_name": "Changed", "language": "fr"},
    {"external_id": "A2", "last_name": "Same"},
    {"external_id": "N5", "birth_date": "2001-02-03", "sms_consent": "1", "entity": "STORE_A"},
]


@pytest.fixture
def contacts(org):
    Contact.objects.create(external_id="A1", entity=org.store_a, last_name="Before")
    Contact.objects.create(external_id="A2", entity=org.store_a, last_name="Same")
    Contact.objects.create(external_id="B1", entity=org.store_b, first_name="Bee")


def test_every_bad_row_is_reported_with_its_field_and_nothing_is_written(org, contacts):
    response = post(client_for(org.operator_a), "contacts", MIXED)
    assert response.status_code == 400
    errors = response.json()["errors"]
    found = {(error["row"], error["field"]) for error in errors}
    assert {(1, "email"), (1, "birth_date"), (2, "first_name")} <= found
    assert {(3, "entity"), (4, "external_id"), (5, "external_id"), (6, "external_id")} <= found
    assert all(error["path"] == f"rows/{error['row']}/{error['field']}" for error in errors)
    assert not {row for row, _ in found} & {0, 7, 8, 9}
    assert "NOPE" in next(e["message"] for e in errors if (e["row"], e["field"]) == (3, "entity"))
    assert Contact.objects.count() == 3
    assert Contact.objects.get(external_id="A1").last_name == "Before"
    assert imports.staging.staging_tables() == []


def test_another_stores_key_is_refused_for_a_store_token_only(org, contacts):
    rows = [{"external_id": "B1", "first_name": "Stolen"}]
    store = post(client_for(org.operator_a), "contacts", rows, dry_run=True).json()
    assert [(p["row"], p["field"]) for p in store["problems"]] == [(0, "external_id")]
    central = post(client_for(org.marketer), "contacts", rows, dry_run=True).json()
    assert central["problems"] == [] and central["updated"] == 1 and not central["written"]
    assert Contact.objects.get(external_id="B1").first_name == "Bee"


def test_a_central_row_without_entity_is_refused(org):
    response = post(client_for(org.marketer), "contacts", [{"external_id": "C1"}])
    assert response.status_code == 400
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(0, "entity")]
    assert not Contact.objects.exists()


def test_it_writes_new_and_changed_rows_and_leaves_the_rest(org, contacts):
    before = Contact.objects.get(external_id="A2").updated_at
    rows = [
        {"external_id": "N1", "email": "n1@example.com", "email_consent": "true"},
        {"external_id": "A1", "last_name": "Changed", "language": "fr"},
        {"external_id": "A2", "last_name": "Same"},
    ]
    client = client_for(org.operator_a)
    result = post(client, "contacts", rows).json()
    assert (result["new"], result["updated"], result["unchanged"]) == (1, 1, 1)
    assert result["written"] and result["problems"] == []
    new = Contact.objects.get(external_id="N1")
    assert new.entity == org.store_a and new.email_consent and new.language == "en"
    assert new.created_at is not None
    changed = Contact.objects.get(external_id="A1")
    assert (changed.last_name, changed.language) == ("Changed", "fr")
    assert Contact.objects.get(external_id="A2").updated_at == before
    again = post(client, "contacts", rows).json()
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, 3)
    assert Contact.objects.count() == 4


def test_one_bad_row_writes_nothing_unless_asked(org, contacts):
    client = client_for(org.operator_a)
    rows = [{"external_id": "A1", "last_name": "New"}, {"external_id": "X", "email": "bad"}]
    assert post(client, "contacts", rows).status_code == 400
    assert Contact.objects.get(external_id="A1").last_name == "Before"
    partial = post(client, "contacts", rows, import_valid_rows=True).json()
    assert partial["written"] and partial["updated"] == 1 and partial["errors"] == 1
    assert [(p["row"], p["field"]) for p in partial["problems"]] == [(1, "email")]
    assert Contact.objects.get(external_id="A1").last_name == "New"
    assert not Contact.objects.filter(external_id="X").exists()


def test_a_key_taken_by_another_store_meanwhile_refuses_everything(org, contacts):
    real = staging.StagedImport.apply

    def late(stage):  # another store's contact appears between the check and the write
        Contact.objects.create(external_id="N9", entity=org.store_b, first_name="Theirs")
        return real(stage)

    rows = [{"external_id": "A1", "last_name": "Lost"}, {"external_id": "N9", "last_name": "Mine"}]
    with mock.patch.object(staging.StagedImport, "apply", late):
        response = post(client_for(org.operator_a), "contacts", rows)
    assert response.status_code == 400
    assert {(e["row"], e["message"]) for e in response.json()["errors"]} == {
        (0, imports.CHANGED_MESSAGE),
        (1, imports.CHANGED_MESSAGE),
    }
    assert Contact.objects.get(external_id="A1").last_name == "Before"
    assert not Contact.objects.filter(external_id="N9").exists()  # rolled back with the rest


def test_the_other_kinds_take_the_same_path(org, contacts):
    stores = [{"code": "S1", "name": "Shop", "entity": "STORE_A"}, {"code": "S2", "name": "Two"}]
    refused = post(client_for(org.marketer), "stores", stores)
    assert [(e["row"], e["field"]) for e in refused.json()["errors"]] == [(1, "entity")]
    assert post(client_for(org.marketer), "stores", stores[:1]).json()["new"] == 1
    client = client_for(org.marketer)
    bookings = [
        {
            "reference": "K1",
            "contact": "A1",
            "store": "S1",
            "product": "Cruise",
            "booking_date": "2026-01-02",
        },
        {
            "reference": "K2",
            "contact": "B1",
            "store": "S1",
            "product": "Cruise",
            "booking_date": "2026-01-02",
        },
    ]
    refused = post(client, "bookings", bookings, entity="STORE_A")  # as store A
    assert refused.status_code == 400
    assert [(e["row"], e["field"]) for e in refused.json()["errors"]] == [(1, "contact")]
    assert not Booking.objects.exists()
    assert post(client, "bookings", bookings[:1], entity="STORE_A").json()["new"] == 1
    assert post(client, "bookings", bookings[:1], entity="STORE_A").json()["unchanged"] == 1
    assert set(Store.objects.values_list("entity__code", flat=True)) == {"STORE_A"}


def test_the_api_bulk_path_refuses_bad_shapes_per_row(org):
    client = client_for(org.operator_a)
    response = client.post(
        "/api/v1/contacts/bulk/",
        {"rows": [{"external_id": "A"}, "text", {"external_id": "B", "colour": "red"}]},
        "json",
    )
    assert response.status_code == 400
    paths = [error["path"] for error in response.json()["errors"]]
    assert paths == ["rows/1/non_field_errors", "rows/2/colour"]
    assert client.post("/api/v1/contacts/bulk/", {"rows": []}, "json").status_code == 400
    assert client.post("/api/v1/contacts/bulk/", {"rows": "x"}, "json").status_code == 400
    assert not Contact.objects.exists()


def test_a_region_operator_loads_into_one_of_its_stores(org):
    EntityFactory(code="STORE_C", name="Store C", parent=org.north)
    client = client_for(org.regional)
    rows = [{"external_id": "R1", "entity": "STORE_C"}, {"external_id": "R2", "entity": "STORE_A"}]
    response = client.post("/api/v1/contacts/bulk/", {"rows": rows, "entity": "NORTH"}, "json")
    assert response.status_code == 200, response.json()
    assert dict(Contact.objects.values_list("external_id", "entity__code")) == {
        "R1": "STORE_C",
        "R2": "STORE_A",
    }
