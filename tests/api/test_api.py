"""API: tokens (401/403/429), problem details, entity scoping (404), bulk upsert, counts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from api.models import ApiToken
from api.services import create_token, revoke_token
from campaigns.models import Contact

pytestmark = pytest.mark.django_db


def client_for(user, scopes=("read", "write")):
    key = create_token(user=user, name="test", scopes=scopes).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, key


def test_no_token_is_401_problem(org):
    response = APIClient().get("/api/v1/contacts/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert "Bearer" in response["WWW-Authenticate"]


def test_bad_and_revoked_token_401(org):
    client, key = client_for(org.marketer)
    assert client.get("/api/v1/entities/").status_code == 200
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION=key[:-2] + "xx")
    assert bad.get("/api/v1/entities/").status_code == 401
    revoke_token(token=ApiToken.objects.get(), actor=org.marketer)
    assert client.get("/api/v1/entities/").status_code == 401


def test_token_stored_hashed(org):
    new = create_token(user=org.marketer, name="crm", scopes=["read"])
    token = ApiToken.objects.get()
    assert new.key not in token.key_hash and len(token.key_hash) == 64


def test_missing_scope_is_403(org):
    client, _ = client_for(org.marketer, scopes=("read",))
    response = client.post("/api/v1/contacts/bulk/", {"rows": [{"external_id": "x"}]}, "json")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


def test_throttle_429_with_retry_after(org, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK}
    from rest_framework.throttling import SimpleRateThrottle

    SimpleRateThrottle.THROTTLE_RATES = {"token": "2/min"}
    try:
        client, _ = client_for(org.marketer)
        codes = [client.get("/api/v1/entities/").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        response = client.get("/api/v1/entities/")
        assert int(response["Retry-After"]) > 0
    finally:
        from django.conf import settings as live

        SimpleRateThrottle.THROTTLE_RATES = live.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]


def test_last_use_written_at_most_once_a_minute(org):
    client, _ = client_for(org.marketer)
    client.get("/api/v1/entities/")
    first = ApiToken.objects.get().last_used_at
    client.get("/api/v1/entities/")
    assert ApiToken.objects.get().last_used_at == first


def test_bulk_upsert_scoped_and_idempotent(org):
    client, _ = client_for(org.operator_a)
    rows = [
        {"external_id": f"A{i}", "email": f"a{i}@example.com", "email_consent": True}
        for i in range(5)
    ]
    response = client.post("/api/v1/contacts/bulk/", {"rows": rows}, "json")
    assert response.status_code == 200, response.json()
    assert response.json()["new"] == 5
    assert set(Contact.objects.values_list("entity__code", flat=True)) == {"STORE_A"}
    again = client.post("/api/v1/contacts/bulk/", {"rows": rows}, "json").json()
    assert again["unchanged"] == 5 and again["new"] == 0


def test_bulk_one_bad_row_writes_nothing(org):
    client, _ = client_for(org.operator_a)
    rows = [{"external_id": "OK1"}, {"external_id": "BAD", "email": "not-an-email"}]
    response = client.post("/api/v1/contacts/bulk/", {"rows": rows}, "json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors[0]["row"] == 1 and errors[0]["field"] == "email"
    assert not Contact.objects.exists()


def test_other_entity_contact_is_404_and_unwritable(org):
    client_a, _ = client_for(org.operator_a)
    client_b, _ = client_for(org.operator_b)
    client_a.post("/api/v1/contacts/bulk/", {"rows": [{"external_id": "A1"}]}, "json")
    contact = Contact.objects.get()
    assert client_a.get(f"/api/v1/contacts/{contact.pk}/").status_code == 200
    assert client_b.get(f"/api/v1/contacts/{contact.pk}/").status_code == 404
    assert client_b.get("/api/v1/contacts/").json()["results"] == []
    response = client_b.post(
        "/api/v1/contacts/bulk/", {"rows": [{"external_id": "A1", "first_name": "X"}]}, "json"
    )
    assert response.status_code == 400
    assert "not found among your contacts" in response.json()["errors"][0]["message"]
    assert Contact.objects.get().first_name == ""


def test_central_sees_all_and_counts(org):
    client_a, _ = client_for(org.operator_a)
    client_a.post("/api/v1/contacts/bulk/", {"rows": [{"external_id": "A1"}]}, "json")
    central, _ = client_for(org.marketer)
    assert len(central.get("/api/v1/contacts/").json()["results"]) == 1
    response = central.post("/api/v1/counts/", {"dimension": "contact", "conditions": {}}, "json")
    assert response.status_code == 200 and response.json()["contacts"] == 1
    client_b, _ = client_for(org.operator_b)
    assert client_b.post("/api/v1/counts/", {}, "json").json()["contacts"] == 0


def test_oversized_body_413(org, settings):
    settings.API_MAX_BODY_BYTES = 2048
    client, _ = client_for(org.marketer)
    rows = [{"external_id": f"X{i}", "first_name": "y" * 50} for i in range(100)]
    response = client.post("/api/v1/contacts/bulk/", {"rows": rows}, "json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"


def test_unknown_path_and_method_are_problems(org):
    client, _ = client_for(org.marketer)
    assert client.get("/api/v1/nothing/").status_code == 404
    response = client.put("/api/v1/entities/", {}, "json")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"


def test_schema_and_docs_served(org):
    assert APIClient().get("/api/schema/").status_code == 200
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()


def test_tokens_page_shows_key_once_and_revokes(org, client):
    client.force_login(org.operator_a)
    response = client.post("/api/tokens/", {"name": "crm", "scopes": ["read"]})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=org.operator_a)
    assert b"dmp_" + token.prefix.encode() in response.content
    assert b"dmp_" not in client.get("/api/tokens/").content.replace(
        b"<code>" + token.prefix.encode(), b""
    )
    client.force_login(org.operator_b)
    assert client.post(f"/api/tokens/{token.pk}/revoke/").status_code == 404
    client.force_login(org.operator_a)
    client.post(f"/api/tokens/{token.pk}/revoke/")
    assert ApiToken.objects.get().status == "revoked"


def test_order_create_submit_cancel_and_scoping(org):
    from packages import services as package_services
    from tests.factories import CampaignFactory, PackageFactory

    campaign = CampaignFactory(collaborative_type="simple", entity=org.hq)
    package = PackageFactory(reference_campaign=campaign, audience=[org.store_a, org.store_b])
    package_services.publish_package(package=package, actor=org.marketer)
    client_a, _ = client_for(org.operator_a)
    client_b, _ = client_for(org.operator_b)
    response = client_a.post(
        "/api/v1/orders/", {"package": package.pk, "entity": "STORE_A"}, "json"
    )
    assert response.status_code == 201, response.json()
    order_id = response.json()["id"]
    assert client_b.get(f"/api/v1/orders/{order_id}/").status_code == 404
    assert client_b.post(f"/api/v1/orders/{order_id}/submit/").status_code == 404
    # STORE_B is not the caller's entity: refused like an unknown one
    assert (
        client_a.post(
            "/api/v1/orders/", {"package": package.pk, "entity": "STORE_B"}, "json"
        ).status_code
        == 400
    )
    assert client_a.post(f"/api/v1/orders/{order_id}/submit/").json()["state"] == "submitted"
    assert (
        client_a.post(f"/api/v1/orders/{order_id}/cancel/", {}, "json").json()["state"]
        == "cancelled"
    )
    # a second cancel is refused by the service's rule: 409 problem, never a 500
    again = client_a.post(f"/api/v1/orders/{order_id}/cancel/", {}, "json")
    assert again.status_code == 409
    assert again["Content-Type"] == "application/problem+json"


LISTS = [
    "entities", "contacts", "stores", "bookings", "subscriptions", "packages", "orders",
    "approvals", "campaigns", "deliveries", "tokens",
]  # fmt: skip


@pytest.mark.parametrize("resource", LISTS)
def test_every_list_per_role(org, resource):
    assert APIClient().get(f"/api/v1/{resource}/").status_code == 401
    central, _ = client_for(org.marketer)
    expected = 403 if resource == "approvals" else 200  # marketers hold no approval right
    assert central.get(f"/api/v1/{resource}/").status_code == expected
    outsider, _ = client_for(org.outsider)
    own = 200 if resource == "tokens" else 403
    assert outsider.get(f"/api/v1/{resource}/").status_code == own


def test_a_proven_token_is_cached_but_a_deactivated_owner_is_refused_at_once(org):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client, _ = client_for(org.marketer)
    assert client.get("/api/v1/entities/").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/entities/").status_code == 200
    token_reads = [q for q in queries.captured_queries if "api_apitoken" in q["sql"]]
    assert token_reads == []  # proven a moment ago: no token query
    org.marketer.is_active = False
    org.marketer.save()
    assert client.get("/api/v1/entities/").status_code == 401


def test_the_throttle_counts_per_token_in_fixed_windows(org, settings):
    import time_machine
    from rest_framework.throttling import SimpleRateThrottle

    SimpleRateThrottle.THROTTLE_RATES = {"token": "3/min"}
    try:
        first, _ = client_for(org.marketer)
        second, _ = client_for(org.marketer)
        with time_machine.travel("2026-12-02 10:00:10 +0000", tick=False):
            codes = [first.get("/api/v1/entities/").status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            response = first.get("/api/v1/entities/")
            assert response["Retry-After"] == "50"  # the rest of the minute
            assert second.get("/api/v1/entities/").status_code == 200  # its own budget
        with time_machine.travel("2026-12-02 10:01:01 +0000", tick=False):
            assert first.get("/api/v1/entities/").status_code == 200  # a new window
    finally:
        from django.conf import settings as live

        SimpleRateThrottle.THROTTLE_RATES = live.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
