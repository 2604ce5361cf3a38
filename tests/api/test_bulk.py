"""The set-based contact upsert of the API answers exactly what the import answers for the
same rows (counts, problems and their messages), and writes all or nothing."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.test import APIClient

from api import bulk
from api.services import create_token
from campaigns import imports
from campaigns.choices import ImportKind
from campaigns.models import Contact
from tests.factories import EntityFactory

pytestmark = pytest.mark.django_db


def client_for(user):
    key = create_token(user=user, name="test", scopes=["read", "write"]).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


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


@pytest.mark.parametrize("actor,entity", [("operator_a", "store_a"), ("marketer", None)])
def test_it_answers_what_the_import_answers(org, contacts, actor, entity):
    user, scope = getattr(org, actor), getattr(org, entity) if entity else None
    rows = [dict(row) for row in MIXED]
    expected = imports.import_rows(
        kind=ImportKind.CONTACTS, rows=[dict(r) for r in rows], actor=user, entity=scope,
        dry_run=True,
    )  # fmt: skip
    got = bulk.upsert_contacts(rows=rows, actor=user, entity=scope, dry_run=True)
    assert got == expected
    assert got["errors"] >= 5 and not got["written"]
    messages = {(row, field) for row, field, _ in got["problems"]}
    assert (1, "email") in messages and (1, "birth_date") in messages
    assert (2, "first_name") in messages and (3, "entity") in messages
    assert (5, "external_id") in messages and (6, "external_id") in messages
    assert ((4, "external_id") in messages) == (actor == "operator_a")  # B1 is store B's


def test_a_central_row_without_entity_is_refused_like_the_import(org):
    rows = [{"external_id": "C1", "email": "c1@example.com"}]
    expected = imports.import_rows(
        kind=ImportKind.CONTACTS, rows=[dict(rows[0])], actor=org.marketer, dry_run=True
    )
    got = bulk.upsert_contacts(rows=rows, actor=org.marketer)
    assert got["problems"] == expected["problems"] == [(0, "entity", got["problems"][0][2])]
    assert not Contact.objects.exists()


def test_it_writes_new_and_changed_rows_and_leaves_the_rest(org, contacts):
    before = Contact.objects.get(external_id="A2").updated_at
    rows = [
        {"external_id": "N1", "email": "n1@example.com", "email_consent": "true"},
        {"external_id": "A1", "last_name": "Changed", "language": "fr"},
        {"external_id": "A2", "last_name": "Same"},
    ]
    result = bulk.upsert_contacts(rows=rows, actor=org.operator_a, entity=org.store_a)
    assert (result["new"], result["updated"], result["unchanged"]) == (1, 1, 1)
    assert result["written"] and result["problems"] == []
    new = Contact.objects.get(external_id="N1")
    assert new.entity == org.store_a and new.email_consent and new.language == "en"
    assert new.created_at is not None
    changed = Contact.objects.get(external_id="A1")
    assert (changed.last_name, changed.language) == ("Changed", "fr")
    assert Contact.objects.get(external_id="A2").updated_at == before
    again = bulk.upsert_contacts(rows=rows, actor=org.operator_a, entity=org.store_a)
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, 3)


def test_one_bad_row_writes_nothing_unless_asked(org, contacts):
    rows = [{"external_id": "A1", "last_name": "New"}, {"external_id": "X", "email": "bad"}]
    refused = bulk.upsert_contacts(rows=rows, actor=org.operator_a, entity=org.store_a)
    assert not refused["written"] and refused["errors"] == 1
    assert Contact.objects.get(external_id="A1").last_name == "Before"
    partial = bulk.upsert_contacts(
        rows=rows, actor=org.operator_a, entity=org.store_a, import_valid_rows=True
    )
    assert partial["written"] and partial["updated"] == 1
    assert Contact.objects.get(external_id="A1").last_name == "New"
    assert not Contact.objects.filter(external_id="X").exists()


def test_a_key_inserted_meanwhile_refuses_everything(org, contacts):
    rows = [{"external_id": "A1", "last_name": "Lost"}, {"external_id": "B1"}]
    real = bulk._existing

    def stale(keys, *, lock):  # as if B1 did not exist yet when the rows were read
        return {k: v for k, v in real(keys, lock=lock).items() if k != "B1"}

    with mock.patch.object(bulk, "_existing", stale):
        result = bulk.upsert_contacts(rows=rows, actor=org.marketer, entity=org.store_a)
    assert not result["written"]
    assert result["problems"] == [(1, "", imports.CHANGED_MESSAGE)]
    assert Contact.objects.get(external_id="A1").last_name == "Before"
    assert Contact.objects.get(external_id="B1").entity == org.store_b


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
