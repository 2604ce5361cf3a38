"""SMS and push through an HTTP gateway (a real local HTTP server): one JSON POST per
message with its idempotency key and the bearer token; 5xx answers are retried, 4xx fail,
404/410 and ``"bounce": true`` put the number in quarantine. A misconfigured provider is a
system-check error."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from campaigns.models import Contact, Message, Quarantine
from tests.campaigns.test_sending import people, prepared, send  # noqa: F401 (a fixture)

HTTP = "campaigns.delivery.providers.HttpProvider"
pytestmark = pytest.mark.usefixtures("people")


class Gateway(ThreadingHTTPServer):
    """Answers by the number: …01 gone (410), …02 refused with a bounce, …03 busy once."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[tuple[dict, dict]] = []
        self.busy_once = True

    def answer(self, body: dict) -> tuple[int, dict]:
        if body["to"].endswith("01"):
            return 410, {"error": "number no longer assigned"}
        if body["to"].endswith("02"):
            return 400, {"error": "not a mobile number", "bounce": True}
        if body["to"].endswith("03") and self.busy_once:
            self.busy_once = False
            return 503, {"error": "try later"}
        return 202, {"queued": True}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per chunk

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((dict(self.headers), body))
        status, answer = self.server.answer(body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway(settings):
    server = Gateway()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.DELIVERY_PROVIDERS = {"sms": HTTP, "push": HTTP}
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/messages?account=shop"
    settings.DELIVERY_HTTP_GATEWAYS = {
        "sms": {"url": url, "token": "s3cret"},
        "push": {"url": url, "token": ""},
    }
    yield server
    server.shutdown()
    server.server_close()


def test_sms_go_to_the_gateway_once_each_with_retries_and_bounces(
    campaign, org, gateway, django_capture_on_commit_callbacks, monkeypatch
):
    for n, contact in enumerate(Contact.objects.order_by("external_id")):
        contact.phone, contact.sms_consent = f"+336000000{n:02d}", True
        contact.save()
    from campaigns.delivery import sending

    monkeypatch.setattr(sending.time, "sleep", lambda seconds: None)
    delivery = prepared(campaign, channel="sms", text_body="Hi {{ contact.first_name }}")
    delivery = send(delivery, org, django_capture_on_commit_callbacks)

    assert delivery.state == "sent"
    statuses = dict(Message.objects.values_list("address", "status"))
    assert statuses == {f"+336000000{n:02d}": "failed" if n in (1, 2) else "sent"
                        for n in range(6)}  # fmt: skip
    assert set(Quarantine.objects.values_list("address", flat=True)) == {
        "+33600000001", "+33600000002"
    }  # fmt: skip
    accepted = [body for headers, body in gateway.received if not body["to"].endswith(("1", "2"))]
    # Each accepted once (…03 was busy the first time and accepted on the retry).
    assert sorted(body["text"] for body in accepted) == sorted(
        ["Hi Pat0", "Hi Pat3", "Hi Pat3", "Hi Pat4", "Hi Pat5"]
    )
    headers = gateway.received[0][0]
    assert headers["Authorization"] == "Bearer s3cret"
    keys = [h["Idempotency-Key"] for h, body in gateway.received if body["to"].endswith("03")]
    assert len(keys) == 2 and keys[0] == keys[1]  # the retry carries the same key
    gone = Message.objects.get(address="+33600000001")
    assert gone.error.startswith("Gateway answered 410")


def test_push_carries_title_and_data(campaign, org, gateway, django_capture_on_commit_callbacks):
    Contact.objects.update(push_token="tok-9", push_consent=True)
    delivery = prepared(campaign, channel="push", push_title="Sale for {{ contact.first_name }}",
                        text_body="Open the app", push_data={"screen": "offers"})  # fmt: skip
    delivery = send(delivery, org, django_capture_on_commit_callbacks)
    assert delivery.state == "sent"
    bodies = [body for _, body in gateway.received]
    assert len(bodies) == 6 and "Authorization" not in gateway.received[0][0]
    assert {(b["title"], b["text"], b["data"]["screen"]) for b in bodies} >= {
        ("Sale for Pat0", "Open the app", "offers")
    }


def test_a_provider_without_its_gateway_url_fails_the_system_check(settings):
    settings.DELIVERY_PROVIDERS = {"sms": HTTP, "push": "campaigns.delivery.providers.Nope"}
    settings.DELIVERY_HTTP_GATEWAYS = {"sms": {"url": "", "token": ""}}
    with pytest.raises(SystemCheckError) as problem:
        call_command("check")
    text = str(problem.value)
    assert "The sms provider cannot be used: Set DELIVERY_SMS_URL" in text
    assert "The push provider cannot be used" in text


def test_a_token_sent_over_plain_http_is_warned_about(settings):
    from campaigns.delivery.providers import check_providers

    settings.DELIVERY_PROVIDERS = {"sms": HTTP}
    settings.DELIVERY_HTTP_GATEWAYS = {"sms": {"url": "http://sms.example/send", "token": "t"}}
    assert [problem.id for problem in check_providers()] == ["campaigns.W001"]
    settings.DELIVERY_HTTP_GATEWAYS = {"sms": {"url": "https://sms.example/send", "token": "t"}}
    assert check_providers() == []
