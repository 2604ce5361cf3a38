"""What the property tests found, pinned: strict query parameters, reference filters by id,
error answers documented, a 404 problem (not a CSRF page) for a POST to no endpoint."""

from __future__ import annotations

import pytest
import yaml
from rest_framework.test import APIClient

from api.services import create_token
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


def client_for(user):
    key = create_token(user=user, name="test", scopes=["read", "write"]).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.mark.parametrize("query", ["page_size=x", "page_size=0", "page_size=1001", "active=null"])
def test_bad_query_parameters_are_refused_not_ignored(org, query):
    response = client_for(org.marketer).get(f"/api/v1/entities/?{query}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] in ("page_size", "active")


def test_boolean_and_page_size_filters_work(org):
    client = client_for(org.marketer)
    codes = [
        e["code"] for e in client.get("/api/v1/entities/?active=true&page_size=2").json()["results"]
    ]
    assert codes == ["HQ", "NORTH"]
    assert client.get("/api/v1/entities/?active=false").json()["results"] == []


def test_an_unknown_reference_id_gives_an_empty_page(org):
    parent = CampaignFactory(entity=org.hq)
    client = client_for(org.marketer)
    assert client.get("/api/v1/campaigns/?parent=0").json()["results"] == []
    assert client.get(f"/api/v1/campaigns/?parent={parent.pk}").status_code == 200
    assert client.get("/api/v1/campaigns/?parent=x").status_code == 400


def test_a_post_to_no_endpoint_is_a_404_problem(org):
    response = client_for(org.marketer).post("/api/v1/approvals/0.5/decide/", {}, "json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_the_schema_documents_problem_answers(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    responses = schema["paths"]["/api/v1/contacts/bulk/"]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "429"} <= set(responses)
    assert "application/problem+json" in responses["400"]["content"]
    parent = schema["components"]["schemas"]["Entity"]["properties"]["parent"]
    assert parent.get("nullable") is True
