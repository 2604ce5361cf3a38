"""Outgoing webhooks: outbox rows in the change's transaction, signed POSTs verified by a real
HTTP receiver, retries with backoff, the SSRF guard, the admin (secret shown once, log)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from api import webhooks
from api.choices import WebhookEvent, WebhookStatus
from api.models import WebhookDelivery, WebhookEndpoint
from approvals import services as approvals
from approvals.models import ApprovalRequest
from packages import services as package_services
from portal.exceptions import DomainError
from portal.models import AuditLog

pytestmark = pytest.mark.django_db


class Receiver:
    """A small HTTP server in a thread that records each POST and answers the next status
    of ``statuses`` (then 200)."""

    def __init__(self, statuses=()):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"busy")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?source=portal"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def verify_like_the_readme(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check as the README documents it (independent of api.webhooks)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def allow_localhost(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30


def endpoint_for(admin_user, url, events=tuple(WebhookEvent.values), **kwargs):
    return webhooks.create_endpoint(actor=admin_user, name="DAM", url=url, events=events, **kwargs)


def test_a_receiver_verifies_the_signature_of_each_delivered_event(
    org, admin_user, allow_localhost, make_package, valid_values, form_campaign,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    with Receiver() as receiver:
        endpoint = endpoint_for(admin_user, receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            package = make_package(campaign=form_campaign, audience=[org.store_a])
        with django_capture_on_commit_callbacks(execute=True):
            order = package_services.place_order(
                package=package, entity=org.store_a, actor=org.operator_a, data=valid_values,
                submit=True,
            ).order  # fmt: skip
        with django_capture_on_commit_callbacks(execute=True):
            approvals.decide(
                request=ApprovalRequest.objects.get(), actor=org.approver, approve=True
            )

    events = [r["headers"]["X-Portal-Event"] for r in receiver.requests]
    assert events == ["package.published", "order.submitted", "order.approved"]
    for request in receiver.requests:
        assert request["path"] == "/hooks?source=portal"
        assert request["headers"]["Content-Type"] == "application/json"
        header = request["headers"]["X-Portal-Signature"]
        assert verify_like_the_readme(endpoint.secret, header, request["body"])
        assert not verify_like_the_readme("whsec_other", header, request["body"])
        assert not verify_like_the_readme(endpoint.secret, header, request["body"] + b" ")
        payload = json.loads(request["body"])
        assert payload["event"] == request["headers"]["X-Portal-Event"]
        assert payload["id"] == request["headers"]["X-Portal-Delivery"]
    approved = json.loads(receiver.requests[2]["body"])["data"]["order"]
    assert approved == {
        "id": order.pk,
        "package": package.pk,
        "entity": "STORE_A",
        "state": "approved",
        "values": json.loads(json.dumps(order.values)),
    }
    log = WebhookDelivery.objects.order_by("id")
    assert [d.status for d in log] == [WebhookStatus.DELIVERED] * 3
    assert all(d.response_status == 200 and d.attempts == 1 for d in log)


def test_a_replayed_or_tampered_delivery_is_refused_by_verification():
    body = b'{"event":"order.submitted"}'
    fresh = webhooks.signature_header("whsec_s", body)
    assert webhooks.verify("whsec_s", fresh, body)
    old = webhooks.signature_header("whsec_s", body, timestamp=int(time.time()) - 3600)
    assert not webhooks.verify("whsec_s", old, body)
    assert not verify_like_the_readme("whsec_s", old, body)
    assert not webhooks.verify("whsec_s", fresh, body.replace(b"submitted", b"approved"))
    assert not webhooks.verify("whsec_s", "garbage", body)


def test_approval_of_a_by_campaign_order_emits_child_created_and_cancel_emits_cancelled(
    org, admin_user, allow_localhost, make_package
):
    events = [WebhookEvent.CHILD_CAMPAIGN_CREATED, WebhookEvent.ORDER_CANCELLED]
    endpoint_for(admin_user, "http://127.0.0.1:9/", events=events, active=True)
    package = make_package("by_campaign", audience=[org.store_a])
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    approvals.decide(request=ApprovalRequest.objects.get(), actor=org.approver, approve=True)
    package_services.cancel_order(order=order, actor=org.operator_a)
    rows = list(WebhookDelivery.objects.order_by("id"))
    assert [r.event for r in rows] == ["campaign.child_created", "order.cancelled"]
    child = json.loads(rows[0].body)["data"]["campaign"]
    assert child["order"] == order.pk and child["entity"] == "STORE_A" and child["kind"] == "child"


def test_only_active_subscribed_endpoints_get_a_row(org, admin_user, allow_localhost, make_package):
    endpoint_for(admin_user, "http://127.0.0.1:9/a", events=[WebhookEvent.PACKAGE_PUBLISHED])
    endpoint_for(admin_user, "http://127.0.0.1:9/b", events=[WebhookEvent.ORDER_SUBMITTED])
    endpoint_for(
        admin_user, "http://127.0.0.1:9/c", events=[WebhookEvent.PACKAGE_PUBLISHED], active=False
    )
    make_package(audience=[org.store_a])
    assert list(WebhookDelivery.objects.values_list("endpoint__url", flat=True)) == [
        "http://127.0.0.1:9/a"
    ]


def test_a_refused_change_writes_no_outbox_row(org, admin_user, allow_localhost, make_package):
    endpoint_for(admin_user, "http://127.0.0.1:9/", events=[WebhookEvent.PACKAGE_PUBLISHED])
    package = make_package(audience=[], publish=False)
    with pytest.raises(DomainError):
        package_services.publish_package(package=package, actor=org.marketer)
    assert not WebhookDelivery.objects.exists()


def test_failed_posts_are_retried_with_backoff_then_failed(
    org, admin_user, allow_localhost, django_capture_on_commit_callbacks
):
    with Receiver(statuses=[500, 503, 500]) as receiver:
        endpoint = endpoint_for(admin_user, receiver.url, events=[WebhookEvent.ORDER_SUBMITTED])
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event=WebhookEvent.ORDER_SUBMITTED, body='{"x":1}'
        )
        before = timezone.now()
        first = webhooks.deliver(delivery_id=delivery.pk)
        assert first.status == "retry" and first.retry_in == 30
        delivery.refresh_from_db()
        assert delivery.status == WebhookStatus.PENDING and delivery.response_status == 500
        assert delivery.next_attempt_at >= before + timezone.timedelta(seconds=30)
        assert webhooks.deliver(delivery_id=delivery.pk).retry_in == 60
        assert webhooks.deliver(delivery_id=delivery.pk).status == "failed"
        assert webhooks.deliver(delivery_id=delivery.pk).status == "skipped"
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.FAILED and delivery.attempts == 3
    assert "HTTP 500" in delivery.last_error
    assert len(receiver.requests) == 3
    assert [r["headers"]["X-Portal-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert {r["headers"]["X-Portal-Delivery"] for r in receiver.requests} == {
        str(delivery.event_id)
    }
    actions = AuditLog.objects.for_object(delivery).values_list("action", flat=True)
    assert "mark_failed" in actions

    with Receiver() as receiver:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url)
        with django_capture_on_commit_callbacks(execute=True):
            webhooks.resend(delivery=delivery, actor=admin_user)
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.DELIVERED and len(receiver.requests) == 1


def test_an_unreachable_endpoint_is_retried(org, admin_user, allow_localhost):
    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="order.submitted", body="{}")
    outcome = webhooks.deliver(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert outcome.status == "retry" and delivery.response_status is None
    assert delivery.last_error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "ftp://93.184.216.34/",
        "http://user:pw@93.184.216.34/",
    ],
)
def test_private_and_odd_urls_are_refused(admin_user, url):
    with pytest.raises(ValidationError) as error:
        endpoint_for(admin_user, url)
    assert "url" in error.value.message_dict


def test_a_public_address_is_accepted(admin_user):
    endpoint = endpoint_for(admin_user, "https://93.184.216.34/hooks")
    assert endpoint.secret.startswith("whsec_") and len(endpoint.secret) > 40


def test_sending_checks_the_address_again(org, admin_user, allow_localhost, settings):
    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="order.submitted", body="{}")
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = False
    assert webhooks.deliver(delivery_id=delivery.pk).status == "failed"
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Refused:")


def test_unknown_events_and_local_users_are_refused(org, admin_user):
    with pytest.raises(ValidationError) as error:
        endpoint_for(admin_user, "https://93.184.216.34/", events=["order.eaten"])
    assert "events" in error.value.message_dict
    with pytest.raises(PermissionDenied):
        endpoint_for(org.operator_a, "https://93.184.216.34/")
    assert not WebhookEndpoint.objects.exists()


def test_the_sweep_resends_what_a_dead_worker_left(org, admin_user, allow_localhost):
    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event="order.submitted",
        body="{}",
        next_attempt_at=timezone.now() - timezone.timedelta(minutes=5),
    )
    with Receiver() as receiver:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=receiver.url)
        assert webhooks.resend_stuck() == {"released": 0, "enqueued": 1}
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.DELIVERED and len(receiver.requests) == 1


def test_admin_shows_the_secret_once_and_lists_the_log(admin_client, admin_user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = False
    response = admin_client.post(
        "/admin/api/webhookendpoint/add/",
        {"name": "Print", "url": "http://127.0.0.1/x", "events": ["order.approved"]},
    )
    assert response.status_code == 200 and not WebhookEndpoint.objects.exists()
    assert "private, loopback or reserved" in response.content.decode()
    response = admin_client.post(
        "/admin/api/webhookendpoint/add/",
        {"name": "Print", "url": "https://93.184.216.34/x", "events": ["order.approved"]},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in response.content.decode()
    assert endpoint.created_by == admin_user
    page = admin_client.get(f"/admin/api/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert endpoint.secret not in page
    WebhookDelivery.objects.create(endpoint=endpoint, event="order.approved", body="{}")
    assert admin_client.get("/admin/api/webhookdelivery/").status_code == 200


# Secrets at rest (Fernet) ------------------------------------------------------------------


def _stored_secret(endpoint) -> str:
    from django.db import connection

    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote('secret')} FROM {quote(WebhookEndpoint._meta.db_table)} "
            f"WHERE {quote('id')} = %s",
            [endpoint.pk],
        )
        return cursor.fetchone()[0]


def _store_raw(endpoint, value: str) -> None:
    from django.db import connection

    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(WebhookEndpoint._meta.db_table)} SET {quote('secret')} = %s "
            f"WHERE {quote('id')} = %s",
            [value, endpoint.pk],
        )


def test_the_secret_is_encrypted_at_rest_and_read_back_to_sign(admin_user, allow_localhost):
    from cryptography.fernet import Fernet

    from api.fields import derived_key

    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    stored = _stored_secret(endpoint)
    assert endpoint.secret.startswith("whsec_") and endpoint.secret not in stored
    assert stored.startswith("gAAAA")
    from django.conf import settings

    assert Fernet(derived_key(settings.SECRET_KEY)).decrypt(stored.encode()).decode() == (
        endpoint.secret
    )
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret


def test_key_rotation_reads_old_secrets_and_reencrypts_them(admin_user, allow_localhost, settings):
    from cryptography.fernet import Fernet, InvalidToken
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_SECRET_KEYS = [old]
    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    settings.WEBHOOK_SECRET_KEYS = [new, old]  # a new key first: old rows still read
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret
    call_command("reencrypt_webhook_secrets", stdout=__import__("io").StringIO())
    stored = _stored_secret(endpoint)
    assert Fernet(new.encode()).decrypt(stored.encode()).decode() == endpoint.secret
    with pytest.raises(InvalidToken):
        Fernet(old.encode()).decrypt(stored.encode())
    settings.WEBHOOK_SECRET_KEYS = [new]  # the old key removed: still readable
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret


def test_a_secret_no_key_opens_fails_its_deliveries_saying_why(
    admin_user, allow_localhost, settings
):
    from cryptography.fernet import Fernet

    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    settings.WEBHOOK_SECRET_KEYS = [Fernet.generate_key().decode()]  # the key was lost
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event="order.submitted", body="{}")
    outcome = webhooks.deliver(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert outcome.status == delivery.status == WebhookStatus.FAILED
    assert "WEBHOOK_SECRET_KEYS" in delivery.last_error


def test_the_data_migration_encrypts_plain_secrets(admin_user, allow_localhost):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("api.migrations.0004_webhook_secrets_encrypted")
    endpoint = endpoint_for(admin_user, "http://127.0.0.1:9/", events=["order.submitted"])
    _store_raw(endpoint, "whsec_plain-before-the-migration")
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == "whsec_plain-before-the-migration"
    migration.encrypt_existing(apps, None)
    assert _stored_secret(endpoint).startswith("gAAAA")
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == "whsec_plain-before-the-migration"
