"""API-triggered messages: the definition's checks and life cycle, POST /api/v1/triggers/<key>/
for central, store A, store B and anonymous callers, every bad input, typology refusals,
idempotency (also under concurrent duplicate POSTs, on PostgreSQL), the status endpoint and
the priority queue."""

from __future__ import annotations

import threading

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection, connections
from rest_framework.test import APIClient

from api.services import create_token
from campaigns import triggers
from campaigns.delivery import reports
from campaigns.delivery.reports import delivery_figures
from campaigns.models import (
    CategoryOptOut,
    Contact,
    DeliveryState,
    Message,
    MessageStatus,
    Quarantine,
    TriggerDefinition,
    TriggeredMessage,
    TriggerState,
    Typology,
)
from portal.celery import app as celery_app
from portal.models import AuditLog

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "required": ["order_id", "total"],
    "properties": {
        "order_id": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}},
            },
        },
    },
}
PAYLOAD = {"order_id": "A-42", "total": 59.9, "items": [{"sku": "<b>X1</b>"}]}


def client_for(user, scopes=("trigger",)):
    key = create_token(user=user, name="shop", scopes=list(scopes)).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def contact(entity, external_id, **fields):
    values = {"email": f"{external_id.lower()}@example.com", "email_consent": True, **fields}
    return Contact.objects.create(entity=entity, external_id=external_id, **values)


@pytest.fixture
def make_trigger(org):
    def make(publish=True, **fields):
        values = {
            "name": "Order confirmation",
            "entity": org.hq,
            "channel": "email",
            "kind": "transactional",
            "subject": "Order {{ payload.order_id }} confirmed",
            "html_body": "<p>Hello {{ contact.first_name }}, {{ payload.total }} €"
            "{% for item in payload['items'] %} {{ item.sku }}{% endfor %}</p>",
            "text_body": "Order {{ payload.order_id }}",
            "payload_schema": SCHEMA,
            **fields,
        }
        definition = TriggerDefinition(**values)
        definition.full_clean(exclude=["state"])
        definition.save()
        if publish:
            definition = triggers.publish(definition=definition, actor=org.marketer)
        return definition

    return make


@pytest.fixture
def shop(org, make_trigger):
    definition = make_trigger()
    alice = contact(org.store_a, "C-A1", first_name="Alice")
    bob = contact(org.store_b, "C-B1", first_name="Bob")
    return definition, alice, bob


def post(client, definition, recipient, payload=PAYLOAD, key=None, **headers):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(
        f"/api/v1/triggers/{definition.key}/",
        {"recipient": recipient, "payload": payload},
        format="json",
        **headers,
    )


# The definition --------------------------------------------------------------------------


def test_an_invalid_json_schema_is_refused_at_save(org, make_trigger):
    with pytest.raises(ValidationError) as error:
        make_trigger(publish=False, payload_schema={"type": "object", "required": "order_id"})
    assert "Not a valid JSON Schema at $.required" in str(
        error.value.message_dict["payload_schema"]
    )


def test_a_schema_of_something_else_than_an_object_is_refused(org, make_trigger):
    with pytest.raises(ValidationError) as error:
        make_trigger(publish=False, payload_schema={"type": "array"})
    assert '"type" must be "object"' in str(error.value.message_dict["payload_schema"])


def test_content_reading_an_unknown_variable_is_refused(org, make_trigger):
    with pytest.raises(ValidationError) as error:
        make_trigger(publish=False, text_body="{{ order.id }}")
    assert "unknown variable" in str(error.value.message_dict["text_body"])


def test_publishing_gives_a_key_a_hidden_sending_delivery_and_an_audit_entry(org, make_trigger):
    definition = make_trigger()
    assert definition.state == TriggerState.PUBLISHED and len(definition.key) >= 32
    delivery = definition.delivery
    assert delivery.triggered and delivery.state == DeliveryState.SENDING
    assert delivery.typology.purpose == "transactional"
    assert [r["rule"] for r in delivery.typology.rules] == ["blocklist", "quarantine"]
    assert AuditLog.objects.filter(object_id=definition.pk, to_state="published").exists()


def test_a_local_operator_cannot_publish(org, make_trigger):
    definition = make_trigger(publish=False)
    with pytest.raises(Exception, match="role does not allow"):
        triggers.publish(definition=definition, actor=org.operator_a)
    definition.refresh_from_db()
    assert definition.state == TriggerState.DRAFT and definition.key is None


def test_a_paused_trigger_answers_409_and_an_archived_one_404(org, shop):
    definition, alice, _ = shop
    client = client_for(org.marketer)
    triggers.pause(definition=definition, actor=org.marketer)
    response = post(client, definition, {"contact_id": alice.pk})
    assert response.status_code == 409 and "paused" in response.json()["detail"]
    triggers.resume(definition=definition, actor=org.marketer)
    assert post(client, definition, {"contact_id": alice.pk}).status_code == 202
    triggers.archive(definition=definition, actor=org.marketer)
    assert post(client, definition, {"contact_id": alice.pk}).status_code == 404


# Sending -----------------------------------------------------------------------------------


def test_a_trigger_is_sent_with_its_payload_and_counted(
    org, shop, django_capture_on_commit_callbacks
):
    definition, alice, _ = shop
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(org.operator_a), definition, {"external_id": "C-A1"}, key="o-42")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["replayed"] is False
    message = Message.objects.get(pk=body["message_id"])
    assert message.status == MessageStatus.SENT and message.contact == alice
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.subject == "Order A-42 confirmed" and sent.to == ["c-a1@example.com"]
    html = sent.alternatives[0][0]
    assert "Hello Alice, 59.9 €" in html and "&lt;b&gt;X1&lt;/b&gt;" in html  # autoescaped
    # the contact's history, the delivery's report
    assert [m.pk for m in reports.history(alice.pk)] == [message.pk]
    assert delivery_figures(definition.delivery).sent == 1
    [(code, _name, figures)] = reports.by_entity(Message.objects.all())
    assert code == "STORE_A" and figures.sent == 1
    assert (
        type(definition.delivery).objects.get(pk=message.delivery_id).state == DeliveryState.SENDING
    )
    status = client_for(org.operator_a).get(body["status_url"])
    assert status.status_code == 200
    assert status.json()["status"] == "sent" and status.json()["idempotency_key"] == "o-42"


def test_a_second_trigger_for_the_same_contact_is_a_second_message(
    org, shop, django_capture_on_commit_callbacks
):
    definition, alice, _ = shop
    client = client_for(org.marketer)
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, definition, {"contact_id": alice.pk}, key="1").json()["message_id"]
        second = post(client, definition, {"contact_id": alice.pk}, key="2").json()["message_id"]
    assert first != second and len(mail.outbox) == 2


def test_transactional_to_an_address_that_is_not_a_contact(
    org, shop, django_capture_on_commit_callbacks
):
    definition, _, _ = shop
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(org.marketer), definition, {"email": "guest@example.org"})
    assert response.status_code == 202
    message = Message.objects.get(pk=response.json()["message_id"])
    assert message.contact_id is None and message.status == MessageStatus.SENT
    assert mail.outbox[0].to == ["guest@example.org"]
    assert "Hello , 59.9" in mail.outbox[0].alternatives[0][0]  # no contact: empty, not None


def test_the_send_goes_to_the_priority_queue(org, shop, django_capture_on_commit_callbacks):
    route = celery_app.amqp.router.route({}, "campaigns.tasks.send_triggered", (), {})
    assert route["queue"].name == "priority"
    batch = celery_app.amqp.router.route({}, "campaigns.tasks.send_chunk", (), {})
    assert batch["queue"].name != "priority"


def test_the_send_is_enqueued_only_after_commit(org, shop, django_capture_on_commit_callbacks):
    definition, alice, _ = shop
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client_for(org.marketer), definition, {"contact_id": alice.pk})
    assert response.status_code == 202 and len(callbacks) == 1 and not mail.outbox
    assert Message.objects.get().status == MessageStatus.PENDING


# Bad input ---------------------------------------------------------------------------------


def test_a_payload_breaking_the_schema_lists_each_problem_with_its_path(org, shop):
    definition, alice, _ = shop
    bad = {"total": -1, "items": [{"sku": 5}]}
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, bad)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    errors = response.json()["errors"]
    by_path = {e["json_path"]: e["message"] for e in errors}
    assert set(by_path) == {"$", "$.total", "$.items[0].sku"}
    assert "'order_id' is a required property" in by_path["$"]
    assert {e["path"] for e in errors} == {"payload", "payload/total", "payload/items/0/sku"}
    assert not Message.objects.exists() and not TriggeredMessage.objects.exists()


def test_a_payload_that_is_not_an_object_is_400(org, shop):
    definition, alice, _ = shop
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, [1, 2])
    assert response.status_code == 400


@pytest.mark.parametrize(
    "recipient, path",
    [
        ({}, "recipient"),
        ({"contact_id": 1, "email": "x@example.com"}, "recipient"),
        ({"email": "not an address"}, "recipient/email"),
        ({"phone": "+33 6 12 34 56 78"}, "recipient/phone"),  # an email trigger
        ({"contact_id": "abc"}, "recipient/contact_id"),
    ],
)
def test_a_bad_recipient_is_400_naming_it(org, shop, recipient, path):
    definition, _, _ = shop
    response = post(client_for(org.marketer), definition, recipient)
    assert response.status_code == 400, response.json()
    assert path in [e["path"] for e in response.json()["errors"]]


def test_unknown_key_and_unknown_recipient_are_404(org, shop):
    definition, _, _ = shop
    client = client_for(org.marketer)
    assert (
        client.post(
            "/api/v1/triggers/nope/", {"recipient": {"contact_id": 1}}, format="json"
        ).status_code
        == 404
    )
    assert post(client, definition, {"external_id": "nobody"}).status_code == 404
    assert post(client, definition, {"contact_id": 10**9}).status_code == 404


def test_an_oversized_body_is_413(org, shop, settings):
    definition, alice, _ = shop
    settings.API_MAX_BODY_BYTES = 1000
    response = post(
        client_for(org.marketer),
        definition,
        {"contact_id": alice.pk},
        {**PAYLOAD, "pad": "x" * 2000},
    )
    assert response.status_code == 413


def test_a_template_failing_on_this_payload_is_400_and_writes_nothing(org, make_trigger):
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "count": {"type": "integer"}}}
    definition = make_trigger(
        text_body="{{ payload.total // payload.count }}", payload_schema=schema
    )
    alice = contact(org.store_a, "C-A1")
    payload = {**PAYLOAD, "count": 0}
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, payload)
    assert (
        response.status_code == 400 and "Cannot render" in response.json()["errors"][0]["message"]
    )
    assert not Message.objects.exists()


# Scoping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who, recipient, expected",
    [
        ("marketer", "C-A1", 202),
        ("marketer", "C-B1", 202),
        ("operator_a", "C-A1", 202),
        ("operator_a", "C-B1", 404),
        ("operator_b", "C-A1", 404),
        ("operator_b", "C-B1", 202),
        ("regional", "C-A1", 202),  # North sees Store A
        ("regional", "C-B1", 404),
    ],
)
def test_a_token_triggers_only_for_the_contacts_its_owner_sees(org, shop, who, recipient, expected):
    definition, _, _ = shop
    response = post(client_for(getattr(org, who)), definition, {"external_id": recipient})
    assert response.status_code == expected


def test_anonymous_is_401_and_a_token_without_the_trigger_scope_403(org, shop):
    definition, alice, _ = shop
    assert post(APIClient(), definition, {"contact_id": alice.pk}).status_code == 401
    read_write = client_for(org.marketer, scopes=("read", "write"))
    assert post(read_write, definition, {"contact_id": alice.pk}).status_code == 403
    assert not Message.objects.exists()


def test_the_status_of_a_message_is_its_owner_s_or_central(
    org, shop, django_capture_on_commit_callbacks
):
    definition, alice, _ = shop
    with django_capture_on_commit_callbacks(execute=True):
        body = post(client_for(org.operator_a), definition, {"contact_id": alice.pk}).json()
    url = f"/api/v1/triggers/messages/{body['message_id']}/"
    assert client_for(org.operator_a).get(url).status_code == 200
    assert client_for(org.marketer).get(url).status_code == 200
    assert client_for(org.operator_b).get(url).status_code == 404
    assert APIClient().get(url).status_code == 401
    assert client_for(org.operator_a, scopes=("read",)).get(url).status_code == 403


# Typology ----------------------------------------------------------------------------------


def test_a_marketing_trigger_without_consent_is_422_and_sends_nothing(org, make_trigger):
    definition = make_trigger(kind="marketing")
    alice = contact(org.store_a, "C-A1", email_consent=False)
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, key="k")
    assert response.status_code == 422
    assert response.json()["rule"] == "consent" and "consented" in response.json()["detail"]
    assert not Message.objects.exists() and not TriggeredMessage.objects.exists()
    assert not mail.outbox


def test_a_marketing_trigger_respects_category_opt_out(org, make_trigger):
    definition = make_trigger(kind="marketing", category="offers")
    alice = contact(org.store_a, "C-A1")
    CategoryOptOut.objects.create(contact=alice, category="offers")
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk})
    assert response.status_code == 422 and "offers" in response.json()["reason"]


def test_a_marketing_trigger_needs_a_contact(org, make_trigger):
    definition = make_trigger(kind="marketing")
    response = post(client_for(org.marketer), definition, {"email": "guest@example.org"})
    assert response.status_code == 400


def test_transactional_ignores_consent_but_not_blocklist_or_quarantine(
    org, shop, django_capture_on_commit_callbacks
):
    definition, _, _ = shop
    client = client_for(org.marketer)
    no_consent = contact(org.store_a, "C-A2", email_consent=False)
    blocked = contact(org.store_a, "C-A3", blocklisted=True)
    bounced = contact(org.store_a, "C-A4")
    Quarantine.objects.create(channel="email", address=bounced.email, reason="550")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, definition, {"contact_id": no_consent.pk}).status_code == 202
    refused = post(client, definition, {"contact_id": blocked.pk})
    assert refused.status_code == 422 and refused.json()["rule"] == "blocklist"
    refused = post(client, definition, {"contact_id": bounced.pk})
    assert refused.status_code == 422 and refused.json()["rule"] == "quarantine"
    quarantined_guest = post(client, definition, {"email": bounced.email})
    assert quarantined_guest.status_code == 422


def test_a_contact_without_an_address_is_422(org, shop):
    definition, _, _ = shop
    mute = contact(org.store_a, "C-A5", email="")
    response = post(client_for(org.marketer), definition, {"contact_id": mute.pk})
    assert response.status_code == 422 and response.json()["rule"] == "missing_address"


def test_triggered_messages_count_for_pressure(
    org, make_trigger, django_capture_on_commit_callbacks
):
    typology = Typology.objects.create(
        name="Weekly", entity=org.hq, rules=[{"rule": "pressure", "max": 2, "days": 7}]
    )
    definition = make_trigger(kind="marketing", pressure_typology=typology)
    assert [r["rule"] for r in definition.delivery.typology.rules][-1] == "pressure"
    alice = contact(org.store_a, "C-A1")
    client = client_for(org.marketer)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, definition, {"contact_id": alice.pk}, key="1").status_code == 202
        assert post(client, definition, {"contact_id": alice.pk}, key="2").status_code == 202
    third = post(client, definition, {"contact_id": alice.pk}, key="3")
    assert third.status_code == 422 and third.json()["rule"] == "pressure"
    assert Message.objects.filter(contact=alice).count() == 2


# Idempotency -------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_returns_the_same_message_and_sends_once(
    org, shop, django_capture_on_commit_callbacks
):
    definition, alice, _ = shop
    client = client_for(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, definition, {"contact_id": alice.pk}, key="order-42")
        again = post(client, definition, {"contact_id": alice.pk}, {"other": 1}, key="order-42")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["replayed"] is True and again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1 and len(mail.outbox) == 1


def test_the_same_key_from_another_owner_is_another_message(
    org, shop, django_capture_on_commit_callbacks
):
    definition, alice, _ = shop
    with django_capture_on_commit_callbacks(execute=True):
        one = post(client_for(org.operator_a), definition, {"contact_id": alice.pk}, key="k1")
        two = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, key="k1")
    assert one.json()["message_id"] != two.json()["message_id"]


def test_an_overlong_idempotency_key_is_400(org, shop):
    definition, alice, _ = shop
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk}, key="k" * 300)
    assert response.status_code == 400 and response.json()["errors"][0]["path"] == "Idempotency-Key"


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_posts_make_one_message(org, make_trigger):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    definition = make_trigger()
    alice = contact(org.store_a, "C-A1")
    key = create_token(user=org.operator_a, name="shop", scopes=["trigger"]).key
    barrier = threading.Barrier(8)
    answers: list[tuple[int, int]] = []

    def call() -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
            barrier.wait()
            response = post(client, definition, {"contact_id": alice.pk}, key="same")
            answers.append((response.status_code, response.json()["message_id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 8
    assert sorted(code for code, _ in answers) == [200] * 7 + [202]
    assert len({message_id for _, message_id in answers}) == 1
    assert Message.objects.count() == 1 and TriggeredMessage.objects.count() == 1
    assert len(mail.outbox) == 1  # (eager: sent once, by the one that created it)


def test_the_trigger_endpoints_are_in_the_openapi_schema(org):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    post_op = schema["paths"]["/api/v1/triggers/{key}/"]["post"]
    assert post_op["operationId"] == "trigger_message"
    assert {"202", "200", "400", "404", "409", "422"} <= set(post_op["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post_op["parameters"])
    assert "get" in schema["paths"]["/api/v1/triggers/messages/{message_id}/"]


# Admin -------------------------------------------------------------------------------------


def test_the_marketer_publishes_from_the_admin_and_sees_the_key(org, make_trigger, client):
    from django.urls import reverse

    definition = make_trigger(publish=False)
    client.force_login(org.marketer)
    change = reverse("admin:campaigns_triggerdefinition_change", args=[definition.pk])
    assert "Given when it is published" in client.get(change).content.decode()
    run = reverse("admin:campaigns_triggerdefinition_run", args=[definition.pk, "publish"])
    assert client.post(run).status_code == 302
    definition.refresh_from_db()
    assert definition.state == TriggerState.PUBLISHED
    assert f"/api/v1/triggers/{definition.key}/" in client.get(change).content.decode()
    assert client.get(reverse("admin:campaigns_triggeredmessage_changelist")).status_code == 200


def test_a_local_operator_has_no_trigger_admin(org, make_trigger, client):
    from django.urls import reverse

    definition = make_trigger()
    client.force_login(org.operator_a)
    change = reverse("admin:campaigns_triggerdefinition_change", args=[definition.pk])
    assert client.get(change).status_code in (302, 403, 404)


# Speed guarantees and recovery (issue 18's loose ends) ------------------------------------


def test_a_trigger_costs_a_bounded_number_of_queries(
    org, shop, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    """Token proven (cached after the first call), definition + idempotency key in one read,
    the contact with its quarantine flag in one, two inserts: the hot path stays small."""
    definition, alice, _ = shop
    client = client_for(org.marketer)
    assert post(client, definition, {"contact_id": alice.pk}, key="warm").status_code == 202
    # (the transaction is a SAVEPOINT/RELEASE pair inside the test's own)
    with django_capture_on_commit_callbacks(execute=False), django_assert_max_num_queries(6):
        response = post(client, definition, {"contact_id": alice.pk}, key="k-2")
    assert response.status_code == 202
    with django_assert_max_num_queries(2):  # a replay: one read, then the earlier message
        replay = post(client, definition, {"contact_id": alice.pk}, key="k-2")
    assert replay.status_code == 200
    assert replay.json()["message_id"] == response.json()["message_id"]


def test_a_revoked_token_is_refused_at_once_despite_the_cache(org, shop):
    from api.models import ApiToken
    from api.services import revoke_token

    definition, alice, _ = shop
    client = client_for(org.marketer)
    assert post(client, definition, {"contact_id": alice.pk}).status_code == 202
    revoke_token(token=ApiToken.objects.get(), actor=org.marketer)
    assert post(client, definition, {"contact_id": alice.pk}).status_code == 401


def test_a_store_token_still_sees_only_its_contacts_through_the_fast_read(org, shop):
    definition, _, bob = shop
    client = client_for(org.operator_a)
    assert post(client, definition, {"external_id": "C-B1"}).status_code == 404
    assert post(client, definition, {"contact_id": bob.pk}).status_code == 404
    assert post(client, definition, {"contact_id": 2**70}).status_code == 404


def test_a_quarantined_address_is_refused_through_the_fast_read(org, shop):
    definition, alice, _ = shop
    Quarantine.objects.create(channel="email", address=alice.email, reason="bounce")
    response = post(client_for(org.marketer), definition, {"contact_id": alice.pk})
    assert response.status_code == 422 and response.json()["rule"] == "quarantine"
    assert not Message.objects.exists()


def test_stalled_or_in_doubt_triggered_messages_are_recovered_on_the_priority_queue(
    org, shop, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from campaigns import tasks
    from campaigns.delivery import sending

    definition, alice, _ = shop
    with django_capture_on_commit_callbacks(execute=False):
        response = post(client_for(org.marketer), definition, {"contact_id": alice.pk})
    message = Message.objects.get(pk=response.json()["message_id"])
    priority, batch = [], []
    monkeypatch.setattr(
        tasks.send_triggered, "apply_async", lambda args, kwargs=None, **kw: priority.append(args)
    )
    monkeypatch.setattr(tasks.send_chunk, "delay", lambda *args: batch.append(args))
    monkeypatch.setattr(sending, "_send_queue_is_empty", lambda queue="": True)
    # The task was lost: beat finds the pending message of the quiet hidden delivery.
    later = timezone.now() + timedelta(hours=2)
    assert sending.recover_stalled(now=later) == 1
    assert priority == [(definition.delivery_id, message.pk)] and batch == []
    # A worker died with it in flight: in doubt; a central user sends it again.
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.IN_DOUBT)
    priority.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert sending.resend_in_doubt(delivery=definition.delivery, actor=org.marketer) == 1
    assert priority == [(definition.delivery_id, message.pk)] and batch == []


def test_the_hidden_trigger_delivery_is_never_shown_as_stalled(org, shop):
    from datetime import timedelta

    from django.utils import timezone

    from campaigns.admin import StalledFilter
    from campaigns.delivery import sending
    from campaigns.models import Delivery

    definition, _, _ = shop
    delivery = Delivery.objects.get(pk=definition.delivery_id)
    Delivery.objects.filter(pk=delivery.pk).update(progress_at=timezone.now() - timedelta(days=3))
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.SENDING
    assert sending.stalled_since(delivery) is None
    stalled = StalledFilter(None, {"stalled": ["yes"]}, Delivery, None)
    assert not stalled.queryset(None, Delivery.objects.all()).filter(pk=delivery.pk).exists()


def test_the_priority_worker_takes_one_task_at_a_time_and_acks_after_the_send(settings):
    """A priority worker process reserves one trigger at a time (a long batch chunk can never
    sit prefetched ahead of it: chunks go to another queue) and a killed worker's task is
    delivered again (acks_late, rejected on worker loss)."""
    from campaigns import tasks

    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert tasks.send_triggered.acks_late is True
    routes = settings.CELERY_TASK_ROUTES
    assert routes["campaigns.tasks.send_triggered"]["queue"] == "priority"
    assert "campaigns.tasks.send_chunk" not in routes  # batch chunks: the default queue
    assert settings.CELERY_TASK_DEFAULT_QUEUE != "priority"
