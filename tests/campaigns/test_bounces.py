"""Bounces and complaints: the effects (quarantine, soft-bounce counting, complaint →
unsubscribe), matching and idempotency, each provider's signed webhook (good, bad and
missing signatures), the RFC 3464 parser and the IMAP poller."""

import base64
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from django.urls import reverse
from django.utils import timezone

from campaigns.delivery import reports
from campaigns.engagement import bounces, dsn, webhooks
from campaigns.engagement.bounces import Report
from campaigns.models import Contact, Delivery, Message, ProviderEvent, Quarantine
from portal.models import AuditLog

DOMAIN = "portal.example.com"
# One bounce recorded (the counts also say how many delivery notifications were: none).
ONE = {"recorded": 1, "replayed": 0, "delivered": 0}


@pytest.fixture
def alice(org):
    return Contact.objects.create(
        external_id="ALICE", entity=org.store_a, email="Alice@Example.com", email_consent=True
    )


@pytest.fixture
def delivery(campaign):
    return Delivery.objects.create(campaign=campaign, label="Spring", channel="email")


def sent(delivery, contact, *, days_ago=0, secondary_id=0):
    return Message.objects.create(
        delivery=delivery, contact=contact, secondary_id=secondary_id, channel="email",
        address=contact.email, status="sent", entity=contact.entity,
        sent_at=timezone.now() - timedelta(days=days_ago),
    )  # fmt: skip


def message_id(message):
    return f"<d{message.delivery_id}.m{message.pk}@{DOMAIN}>"


def report(message=None, *, kind="bounce_hard", event_id="e1", provider="ses", **fields):
    defaults = {"recipient": message.address if message else "nobody@example.com",
                "message_id": message_id(message) if message else ""}  # fmt: skip
    return Report(provider=provider, event_id=event_id, kind=kind, **{**defaults, **fields})


def audits(contact, action):
    return AuditLog.objects.filter(object_id=str(contact.pk), action=action)


# --------------------------------------------------------------------------------------------
# Effects, matching, idempotency
# --------------------------------------------------------------------------------------------


def test_a_hard_bounce_quarantines_the_address_and_shows_on_the_contacts_history(delivery, alice):
    message = sent(delivery, alice)
    outcome = bounces.record(report(message, detail="5.1.1 user unknown"))
    assert outcome.created and outcome.event.message == message and outcome.event.quarantined
    quarantine = Quarantine.objects.get()
    assert (quarantine.channel, quarantine.address) == ("email", "Alice@Example.com")
    assert "hard bounce" in quarantine.reason and "5.1.1" in quarantine.reason
    assert audits(alice, "quarantined").count() == 1


def test_bounces_and_complaints_reach_the_engagement_figures_once(delivery, alice, org):
    bob = Contact.objects.create(external_id="BOB", entity=org.store_a, email="bob@example.com")
    first, second = sent(delivery, alice), sent(delivery, bob, secondary_id=1)
    bounces.record(report(first))
    bounces.record(report(first))  # a replay counts once
    bounces.record(report(second, kind="complaint", event_id="e2"))
    bounces.record(report(None, event_id="e3"))  # unmatched: in no delivery's figures
    figures = reports.engagement(delivery)
    assert (figures.sent, figures.bounced_hard, figures.complaints) == (2, 1, 1)


def test_soft_bounces_are_counted_and_the_third_message_quarantines(delivery, alice, settings):
    settings.DELIVERY_SOFT_BOUNCE_LIMIT = 3
    first, second, third = (sent(delivery, alice, secondary_id=n) for n in range(3))
    bounces.record(report(first, kind="bounce_soft", event_id="s1"))
    bounces.record(report(first, kind="bounce_soft", event_id="s1-retry"))  # same message
    bounces.record(report(second, kind="bounce_soft", event_id="s2"))
    assert not Quarantine.objects.exists()
    assert bounces.soft_bounces(recipient=alice.email, since=timezone.now() - timedelta(1)) == 2
    outcome = bounces.record(report(third, kind="bounce_soft", event_id="s3"))
    assert outcome.event.quarantined
    assert Quarantine.objects.get().reason.startswith("3 soft bounces in 30 days")


def test_soft_bounces_older_than_the_window_do_not_count(delivery, alice, settings):
    settings.DELIVERY_SOFT_BOUNCE_LIMIT = 2
    old, new = sent(delivery, alice, secondary_id=1), sent(delivery, alice, secondary_id=2)
    long_ago = timezone.now() - timedelta(days=45)
    bounces.record(report(old, kind="bounce_soft", event_id="old", at=long_ago))
    bounces.record(report(new, kind="bounce_soft", event_id="new"))
    assert not Quarantine.objects.exists()


def test_a_complaint_unsubscribes_through_the_consent_path_and_quarantines(delivery, alice):
    message = sent(delivery, alice)
    outcome = bounces.record(report(message, kind="complaint", provider="sendgrid"))
    alice.refresh_from_db()
    assert not alice.email_consent and alice.email_consent_source == "complaint (sendgrid)"
    assert outcome.event.unsubscribed and outcome.event.quarantined
    audit = audits(alice, "consent_withdrawn").get()
    assert audit.extra["message"] == message.pk and audit.extra["source"] == "complaint (sendgrid)"
    assert Quarantine.objects.filter(address=alice.email).exists()


def test_a_replayed_event_changes_nothing_and_records_nothing(delivery, alice):
    message = sent(delivery, alice)
    first = bounces.record(report(message, kind="complaint"))
    again = bounces.record(report(message, kind="complaint"))
    assert first.created and not again.created and again.event == first.event
    assert ProviderEvent.objects.count() == 1
    assert audits(alice, "consent_withdrawn").count() == 1
    assert audits(alice, "quarantined").count() == 1


def test_a_bounce_for_an_unknown_message_is_recorded_unmatched_and_changes_nothing(delivery, alice):
    outcome = bounces.record(report(None, message_id=f"<d{delivery.pk}.m999999@{DOMAIN}>"))
    assert outcome.created and outcome.event.unmatched and outcome.event.message is None
    assert outcome.event.recipient == "nobody@example.com"
    assert not Quarantine.objects.exists()


def test_a_message_id_naming_another_delivery_does_not_match(delivery, alice, campaign):
    message = sent(delivery, alice)
    other = Delivery.objects.create(campaign=campaign, label="Other", channel="email")
    forged = f"<d{other.pk}.m{message.pk}@{DOMAIN}>"
    outcome = bounces.record(report(None, message_id=forged, recipient="x@example.org"))
    assert outcome.event.unmatched


def test_without_message_id_the_recipients_latest_sent_email_matches(delivery, alice, campaign):
    older = sent(delivery, alice, days_ago=3)
    later = Delivery.objects.create(campaign=campaign, label="Later", channel="email")
    newer = sent(later, alice, days_ago=1)
    event = bounces.record(report(None, recipient="alice@example.COM")).event
    assert event.message == newer and event.recipient == "alice@example.com"
    event = bounces.record(
        report(None, recipient="alice@example.com", delivery_id=delivery.pk, event_id="e2")
    ).event
    assert event.message == older


def test_a_bounced_address_is_left_out_of_the_next_delivery(delivery, alice, campaign, org):
    from campaigns.delivery import preparation
    from campaigns.models import Typology
    from tests.campaigns.test_deliveries import target

    bounces.record(report(sent(delivery, alice)))
    typology = Typology.objects.create(name="Std", entity=org.hq, rules=[{"rule": "quarantine"}])
    following = Delivery.objects.create(
        campaign=campaign, label="Next", channel="email", typology=typology
    )
    following = preparation.prepare(delivery=following, **target())
    assert following.exclusions == {"quarantine": 1}
    assert Message.objects.get(delivery=following, contact=alice).rule == "quarantine"


def test_a_complaint_and_its_quarantine_show_on_the_stores_contact_page(
    client, org, delivery, alice
):
    bounces.record(report(sent(delivery, alice), kind="complaint", provider="mailgun"))
    client.force_login(org.operator_a)
    page = client.get(reverse("campaigns:contact", args=[alice.pk])).text
    assert "Email consent withdrawn (complaint (mailgun))." in page
    assert "Alice@Example.com quarantined: complaint reported by Mailgun" in page
    client.force_login(org.operator_b)
    assert client.get(reverse("campaigns:contact", args=[alice.pk])).status_code == 404


def test_the_central_team_reads_provider_events_in_the_admin_and_stores_do_not(
    client, org, delivery, alice
):
    bounces.record(report(sent(delivery, alice), detail="5.1.1 user unknown"))
    url = reverse("admin:campaigns_providerevent_changelist")
    client.force_login(org.marketer)
    response = client.get(url)
    assert response.status_code == 200 and "alice@example.com" in response.text
    event = ProviderEvent.objects.get()
    detail = reverse("admin:campaigns_providerevent_change", args=[event.pk])
    assert "5.1.1 user unknown" in client.get(detail).text
    client.force_login(org.operator_a)
    assert client.get(url).status_code in (302, 403)
    client.logout()
    assert client.get(url).status_code == 302


# --------------------------------------------------------------------------------------------
# Amazon SES through SNS
# --------------------------------------------------------------------------------------------

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"


def certificate_of(key, *, days=30):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=60)).not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, certificate_of(key)


@pytest.fixture
def sns(settings, sns_key, monkeypatch):
    """SES configured; SNS URLs answered locally: the certificate, and a record of visits."""
    settings.DELIVERY_BOUNCE_SES_TOPIC_ARNS = [TOPIC]
    visited = []

    def fetch(url):
        visited.append(url)
        if url.endswith(".pem"):
            return sns_key[1]
        return b"<ConfirmSubscriptionResponse/>"

    monkeypatch.setattr(webhooks, "fetch", fetch)
    return visited


def signed_sns(key, payload, version="2"):
    payload = {"TopicArn": TOPIC, "Timestamp": "2026-12-02T03:00:00.000Z", "MessageId": "m-1",
               "SignatureVersion": version, "SigningCertURL": CERT_URL, **payload}  # fmt: skip
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(webhooks.sns_string_to_sign(payload), padding.PKCS1v15(), algorithm)
    return {**payload, "Signature": base64.b64encode(signature).decode()}


def ses_bounce(message, bounce_type="Permanent", feedback="fb-1"):
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type, "bounceSubType": "General", "feedbackId": feedback,
            "timestamp": "2026-12-02T02:59:00.000Z",
            "bouncedRecipients": [{"emailAddress": message.address, "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
        },
        "mail": {"messageId": "ses-0001", "headers": [
            {"name": "Message-ID", "value": message_id(message)},
            {"name": "X-Portal-Delivery", "value": str(message.delivery_id)},
        ]},
    }  # fmt: skip


def post_sns(client, payload):
    return client.post(
        reverse("engagement:bounces_ses"), json.dumps(payload), content_type="text/plain"
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_ses_hard_bounce_quarantines(client, sns, sns_key, delivery, alice, version):
    message = sent(delivery, alice)
    payload = signed_sns(
        sns_key[0], {"Type": "Notification", "Message": json.dumps(ses_bounce(message))}, version
    )
    response = post_sns(client, payload)
    assert response.status_code == 200 and response.json()["recorded"] == 1
    event = ProviderEvent.objects.get()
    assert (event.provider, event.kind, event.message) == ("ses", "bounce_hard", message)
    assert event.event_id == "fb-1:alice@example.com" and event.reference == message_id(message)
    assert Quarantine.objects.filter(address=alice.email).exists()
    assert sns == [CERT_URL]
    post_sns(client, payload)  # a replay, and the certificate comes from the cache
    assert sns == [CERT_URL] and ProviderEvent.objects.count() == 1


def test_a_transient_ses_bounce_is_soft_and_a_complaint_unsubscribes(
    client, sns, sns_key, delivery, alice
):
    message = sent(delivery, alice)
    soft = ses_bounce(message, bounce_type="Transient", feedback="fb-soft")
    post_sns(client, signed_sns(sns_key[0], {"Type": "Notification", "Message": json.dumps(soft)}))
    complaint = {"notificationType": "Complaint", "mail": soft["mail"], "complaint": {
        "feedbackId": "fb-c", "complaintFeedbackType": "abuse",
        "complainedRecipients": [{"emailAddress": alice.email}]}}  # fmt: skip
    body = {"Type": "Notification", "MessageId": "m-2", "Message": json.dumps(complaint),
            "Subject": "Amazon SES Email Event Notification"}  # fmt: skip
    assert post_sns(client, signed_sns(sns_key[0], body)).status_code == 200
    assert sorted(ProviderEvent.objects.values_list("kind", flat=True)) == [
        "bounce_soft", "complaint"]  # fmt: skip
    alice.refresh_from_db()
    assert not alice.email_consent


def test_a_tampered_ses_message_is_refused_and_logged(
    client, sns, sns_key, delivery, alice, caplog
):
    message = sent(delivery, alice)
    payload = signed_sns(
        sns_key[0], {"Type": "Notification", "Message": json.dumps(ses_bounce(message))}
    )
    payload["Message"] = payload["Message"].replace("Permanent", "Transient")
    with caplog.at_level(logging.WARNING, logger="campaigns.engagement.webhooks"):
        response = post_sns(client, payload)
    assert response.status_code == 403
    assert "SES bounce webhook: refused" in caplog.text
    assert not ProviderEvent.objects.exists()


def test_an_ses_message_without_signature_is_refused(client, sns, sns_key, delivery, alice):
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": "{}"})
    del payload["Signature"]
    assert post_sns(client, payload).status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
    ],
)
def test_a_certificate_off_the_sns_hosts_is_never_fetched(client, sns, sns_key, url):
    payload = signed_sns(
        sns_key[0], {"Type": "Notification", "Message": "{}", "SigningCertURL": url}
    )
    assert post_sns(client, payload).status_code == 403
    assert sns == []


def test_a_message_signed_with_an_expired_certificate_is_refused(client, sns, sns_key, monkeypatch):
    monkeypatch.setattr(webhooks, "fetch", lambda url: certificate_of(sns_key[0], days=-1))
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": "{}"})
    assert post_sns(client, payload).status_code == 403


def test_a_validly_signed_message_from_another_topic_is_refused(client, sns, sns_key):
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": "{}",
                                      "TopicArn": "arn:aws:sns:eu-west-1:666:theirs"})  # fmt: skip
    assert post_sns(client, payload).status_code == 403


def test_the_ses_webhook_is_off_without_topics(client, settings):
    settings.DELIVERY_BOUNCE_SES_TOPIC_ARNS = []
    assert post_sns(client, {"Type": "Notification"}).status_code == 404


def test_a_malformed_ses_body_is_a_400(client, sns, sns_key):
    response = client.post(reverse("engagement:bounces_ses"), "not json", content_type="text/plain")
    assert response.status_code == 400
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": "not json either"})
    assert post_sns(client, payload).status_code == 400
    bad = {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": json.dumps(bad)})
    assert post_sns(client, payload).status_code == 400


def test_the_subscription_is_confirmed_on_an_sns_host_only(client, sns, sns_key):
    subscribe = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                 f"&TopicArn={TOPIC}&Token=tok")  # fmt: skip
    payload = signed_sns(sns_key[0], {"Type": "SubscriptionConfirmation", "Token": "tok",
                                      "Message": "confirm", "SubscribeURL": subscribe})  # fmt: skip
    assert post_sns(client, payload).status_code == 200
    assert sns == [CERT_URL, subscribe]
    payload = signed_sns(sns_key[0], {"Type": "SubscriptionConfirmation", "Token": "tok",
                                      "Message": "confirm",
                                      "SubscribeURL": "https://evil.example/confirm"})  # fmt: skip
    assert post_sns(client, payload).status_code == 400
    assert sns == [CERT_URL, subscribe]


# --------------------------------------------------------------------------------------------
# SendGrid
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def sendgrid(settings, sendgrid_key):
    der = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY = base64.b64encode(der).decode()


def post_sendgrid(client, key, events, *, signature=None, timestamp="1764644400", body=None):
    body = body if body is not None else json.dumps(events).encode()
    if signature is None:
        raw = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        signature = base64.b64encode(raw).decode()
    headers = {"HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp}
    if signature:
        headers["HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE"] = signature
    return client.post(reverse("engagement:bounces_sendgrid"), body,
                       content_type="application/json", **headers)  # fmt: skip


def sendgrid_events(message):
    common = {"email": message.address, "timestamp": 1764644300, "smtp-id": message_id(message),
              "sg_message_id": "sg-1.filter"}  # fmt: skip
    return [
        {**common, "event": "delivered", "sg_event_id": "ev-0"},
        {**common, "event": "bounce", "type": "bounce", "status": "5.1.1", "sg_event_id": "ev-1",
         "reason": "550 5.1.1 unknown"},
        {**common, "event": "spamreport", "sg_event_id": "ev-2"},
    ]  # fmt: skip


def test_a_signed_sendgrid_batch_records_bounces_and_complaints(
    client, sendgrid, sendgrid_key, delivery, alice
):
    message = sent(delivery, alice)
    response = post_sendgrid(client, sendgrid_key, sendgrid_events(message))
    assert response.status_code == 200 and response.json()["recorded"] == 2
    assert set(ProviderEvent.objects.values_list("kind", "message")) == {
        ("bounce_hard", message.pk), ("complaint", message.pk)}  # fmt: skip
    alice.refresh_from_db()
    assert not alice.email_consent and Quarantine.objects.filter(address=alice.email).exists()


def test_a_blocked_sendgrid_bounce_is_soft(client, sendgrid, sendgrid_key, delivery, alice):
    message = sent(delivery, alice)
    event = {**sendgrid_events(message)[1], "type": "blocked"}
    assert post_sendgrid(client, sendgrid_key, [event]).status_code == 200
    assert ProviderEvent.objects.get().kind == "bounce_soft"
    assert not Quarantine.objects.exists()


def test_a_sendgrid_batch_with_a_bad_or_missing_signature_is_refused(
    client, sendgrid, sendgrid_key, delivery, alice, caplog
):
    message = sent(delivery, alice)
    other = ec.generate_private_key(ec.SECP256R1())
    with caplog.at_level(logging.WARNING, logger="campaigns.engagement.webhooks"):
        assert post_sendgrid(client, other, sendgrid_events(message)).status_code == 403
    assert "SendGrid bounce webhook: refused" in caplog.text
    assert post_sendgrid(client, sendgrid_key, [], signature="").status_code == 403
    assert post_sendgrid(client, sendgrid_key, [], signature="!!not base64").status_code == 403
    signed_then_changed = post_sendgrid(  # the signature of another timestamp
        client, sendgrid_key, sendgrid_events(message), timestamp="1764644401",
        signature=base64.b64encode(sendgrid_key.sign(
            b"1764644400" + json.dumps(sendgrid_events(message)).encode(),
            ec.ECDSA(hashes.SHA256()))).decode(),
    )  # fmt: skip
    assert signed_then_changed.status_code == 403
    assert not ProviderEvent.objects.exists()


def test_a_malformed_sendgrid_body_is_a_400_and_no_key_a_404(
    client, sendgrid, sendgrid_key, settings
):
    assert post_sendgrid(client, sendgrid_key, None, body=b"[{").status_code == 400
    assert post_sendgrid(client, sendgrid_key, {"event": "bounce"}).status_code == 400
    assert post_sendgrid(client, sendgrid_key, [{"event": "bounce"}]).status_code == 400
    settings.DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY = ""
    assert post_sendgrid(client, sendgrid_key, []).status_code == 404


# --------------------------------------------------------------------------------------------
# Mailgun
# --------------------------------------------------------------------------------------------

MAILGUN_KEY = "key-0123456789abcdef"


def mailgun_payload(message, *, severity="permanent", event="failed", key=MAILGUN_KEY):
    timestamp, token = "1764644400", "a" * 50
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "event": event, "severity": severity, "id": f"mg-{event}-{severity}",
            "recipient": message.address, "timestamp": 1764644300.5,
            "message": {"headers": {"message-id": message_id(message).strip("<>")}},
            "delivery-status": {"code": 550, "description": "No such user"},
        },
    }  # fmt: skip


def post_mailgun(client, payload):
    return client.post(reverse("engagement:bounces_mailgun"), json.dumps(payload),
                       content_type="application/json")  # fmt: skip


@pytest.fixture
def mailgun(settings):
    settings.DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY = MAILGUN_KEY


def test_a_signed_mailgun_permanent_failure_quarantines(client, mailgun, delivery, alice):
    message = sent(delivery, alice)
    response = post_mailgun(client, mailgun_payload(message))
    assert response.status_code == 200 and response.json()["recorded"] == 1
    event = ProviderEvent.objects.get()
    assert event.message == message and event.kind == "bounce_hard" and event.quarantined
    assert "550 No such user" in event.detail


def test_mailgun_temporary_failures_are_soft_and_complaints_unsubscribe(
    client, mailgun, delivery, alice
):
    message = sent(delivery, alice)
    post_mailgun(client, mailgun_payload(message, severity="temporary"))
    post_mailgun(client, mailgun_payload(message, event="complained", severity=""))
    assert sorted(ProviderEvent.objects.values_list("kind", flat=True)) == [
        "bounce_soft", "complaint"]  # fmt: skip
    alice.refresh_from_db()
    assert not alice.email_consent


def test_a_mailgun_event_with_a_bad_or_missing_signature_is_refused(
    client, mailgun, delivery, alice
):
    message = sent(delivery, alice)
    assert post_mailgun(client, mailgun_payload(message, key="wrong")).status_code == 403
    unsigned = mailgun_payload(message)
    del unsigned["signature"]
    assert post_mailgun(client, unsigned).status_code == 403
    tampered = mailgun_payload(message)
    tampered["signature"]["token"] = "b" * 50
    assert post_mailgun(client, tampered).status_code == 403
    assert not ProviderEvent.objects.exists()


def test_a_malformed_mailgun_body_is_a_400_and_no_key_a_404(client, mailgun, settings):
    response = client.post(reverse("engagement:bounces_mailgun"), "{", content_type="text/plain")
    assert response.status_code == 400
    signed = mailgun_payload(Message(address="x@example.com", delivery_id=1, pk=1))
    signed["event-data"] = "nope"
    assert post_mailgun(client, signed).status_code == 400
    settings.DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY = ""
    assert post_mailgun(client, signed).status_code == 404


# --------------------------------------------------------------------------------------------
# Postmark
# --------------------------------------------------------------------------------------------

POSTMARK_TOKEN = "pm-secret-token"


@pytest.fixture
def postmark(settings):
    settings.DELIVERY_BOUNCE_POSTMARK_TOKEN = POSTMARK_TOKEN


def postmark_bounce(message, kind="HardBounce", record="Bounce", bounce_id=42):
    return {"RecordType": record, "ID": bounce_id, "Type": kind, "Email": message.address,
            "MessageID": "pm-883953f4", "BouncedAt": "2026-12-02T02:59:00Z",
            "Description": "The server was unable to deliver your message",
            "Details": "smtp;550 5.1.1 unknown",
            "Content": f"Message-ID: {message_id(message)}\r\nSubject: Hi\r\n\r\nbody"}  # fmt: skip


def post_postmark(client, payload, *, auth=None, token=None):
    url = (reverse("engagement:bounces_postmark_token", args=[token]) if token
           else reverse("engagement:bounces_postmark"))  # fmt: skip
    headers = {}
    if auth:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return client.post(url, json.dumps(payload), content_type="application/json", **headers)


def test_a_postmark_bounce_with_basic_auth_quarantines(client, postmark, delivery, alice):
    message = sent(delivery, alice)
    response = post_postmark(client, postmark_bounce(message), auth=f"postmark:{POSTMARK_TOKEN}")
    assert response.status_code == 200
    event = ProviderEvent.objects.get()
    assert event.message == message and event.kind == "bounce_hard" and event.event_id == "42"
    assert Quarantine.objects.filter(address=alice.email).exists()


def test_a_postmark_complaint_with_the_url_token_unsubscribes(client, postmark, delivery, alice):
    message = sent(delivery, alice)
    payload = postmark_bounce(message, kind="SpamComplaint", record="SpamComplaint")
    del payload["Content"]  # matched by recipient
    assert post_postmark(client, payload, token=POSTMARK_TOKEN).status_code == 200
    alice.refresh_from_db()
    assert not alice.email_consent
    assert ProviderEvent.objects.get().message == message


@pytest.mark.parametrize(
    "auth,token",
    [(None, None), ("postmark:wrong", None), (f"someone:{POSTMARK_TOKEN}", None),
     (None, "wrong-token")],
)  # fmt: skip
def test_a_postmark_call_without_the_right_credentials_is_refused(
    client, postmark, delivery, alice, auth, token
):
    message = sent(delivery, alice)
    assert (
        post_postmark(client, postmark_bounce(message), auth=auth, token=token).status_code == 403
    )
    assert not ProviderEvent.objects.exists()


def test_postmark_soft_and_other_records(client, postmark, delivery, alice, settings):
    message = sent(delivery, alice)
    auth = f"postmark:{POSTMARK_TOKEN}"
    post_postmark(client, postmark_bounce(message, kind="SoftBounce", bounce_id=1), auth=auth)
    other = postmark_bounce(message, kind="AutoResponder", bounce_id=2)
    assert post_postmark(client, other, auth=auth).json() == {
        "recorded": 0, "replayed": 0, "unmatched": 0, "delivered": 0}  # fmt: skip
    assert list(ProviderEvent.objects.values_list("kind", flat=True)) == ["bounce_soft"]
    assert post_postmark(client, [1], auth=auth).status_code == 400
    settings.DELIVERY_BOUNCE_POSTMARK_TOKEN = ""
    assert post_postmark(client, other, auth=auth).status_code == 404


# --------------------------------------------------------------------------------------------
# Delivery status notifications (RFC 3464) and the bounce mailbox
# --------------------------------------------------------------------------------------------


def postfix_dsn(original_id, *, recipient="alice@example.com", status="5.1.1", action="failed",
                dsn_id="<20261202025901.1A2B3C@mx.portal.example.com>"):  # fmt: skip
    """A delivery status notification as Postfix writes it."""
    return (
        f"Return-Path: <>\r\n"
        f"Date: Wed,  2 Dec 2026 02:59:01 +0000 (UTC)\r\n"
        f"From: MAILER-DAEMON@mx.portal.example.com (Mail Delivery System)\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: bounces@portal.example.com\r\n"
        f"Message-Id: {dsn_id}\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="1A2B3C.1764644341/mx.portal.example.com"\r\n'
        f"\r\n"
        f"This is a MIME-encapsulated message.\r\n"
        f"\r\n"
        f"--1A2B3C.1764644341/mx.portal.example.com\r\n"
        f"Content-Description: Notification\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"\r\n"
        f"I'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n"
        f"\r\n"
        f"<{recipient}>: host mx.example.com said: 550 5.1.1 User unknown\r\n"
        f"\r\n"
        f"--1A2B3C.1764644341/mx.portal.example.com\r\n"
        f"Content-Description: Delivery report\r\n"
        f"Content-Type: message/delivery-status\r\n"
        f"\r\n"
        f"Reporting-MTA: dns; mx.portal.example.com\r\n"
        f"X-Postfix-Queue-ID: 1A2B3C\r\n"
        f"Original-Envelope-Id: ENV-0001\r\n"
        f"Arrival-Date: Wed,  2 Dec 2026 02:58:59 +0000 (UTC)\r\n"
        f"\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; mx.example.com\r\n"
        f"Diagnostic-Code: smtp; 550 {status} User unknown\r\n"
        f"\r\n"
        f"--1A2B3C.1764644341/mx.portal.example.com\r\n"
        f"Content-Description: Undelivered Message Headers\r\n"
        f"Content-Type: text/rfc822-headers\r\n"
        f"\r\n"
        f"From: Lyon store <lyon@stores.example>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: Spring sale\r\n"
        f"Message-ID: {original_id}\r\n"
        f"\r\n"
        f"--1A2B3C.1764644341/mx.portal.example.com--\r\n"
    ).encode()


def multi_recipient_dsn():
    """A DSN in which one recipient failed for good, one for now, and one is only delayed,
    with the original message attached whole (message/rfc822)."""
    return (
        b"From: postmaster@example.net\r\nMessage-ID: <dsn-2@example.net>\r\n"
        b"Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type="delivery-status"; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--XX\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns;mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822;gone@example.net\r\nAction: failed\r\nStatus: 5.2.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.2.1 mailbox disabled\r\n\r\n"
        b"Final-Recipient: rfc822;full@example.net\r\nAction: failed\r\nStatus: 4.2.2\r\n"
        b"Diagnostic-Code: smtp; 452 4.2.2 mailbox full\r\n\r\n"
        b"Final-Recipient: rfc822;slow@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
        b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Message-ID: <d7.m8@portal.example.com>\r\nSubject: Hi\r\n\r\nHello\r\n"
        b"--XX--\r\n"
    )


def test_the_dsn_parser_reads_a_postfix_hard_bounce():
    [found] = dsn.parse(postfix_dsn("<d3.m4@portal.example.com>"))
    assert (found.kind, found.recipient, found.status) == ("bounce_hard", "alice@example.com",
                                                           "5.1.1")  # fmt: skip
    assert found.message_id == "<d3.m4@portal.example.com>" and found.envelope_id == "ENV-0001"
    assert found.diagnostic == "smtp; 550 5.1.1 User unknown"


def test_the_dsn_parser_reads_each_recipient_and_skips_delays():
    found = dsn.parse(multi_recipient_dsn())
    assert [(f.kind, f.recipient, f.status) for f in found] == [
        ("bounce_hard", "gone@example.net", "5.2.1"),
        ("bounce_soft", "full@example.net", "4.2.2"),
    ]
    assert {f.message_id for f in found} == {"<d7.m8@portal.example.com>"}


def test_the_dsn_parser_ignores_what_is_not_a_failure_report():
    assert dsn.parse(b"From: a@example.com\r\nSubject: Out of office\r\n\r\nAway.\r\n") == []
    assert dsn.parse(postfix_dsn("<x@y>", action="delayed", status="4.4.7")) == []
    assert dsn.parse(postfix_dsn("<x@y>", action="delivered", status="2.0.0")) == []
    assert dsn.parse(b"Content-Type: multipart/report; boundary=x\r\n\r\n--x--\r\n") == []


def test_an_abuse_feedback_report_is_a_complaint():
    raw = (
        b"From: fbl@isp.example\r\nMessage-ID: <arf-1@isp.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        b"--B\r\nContent-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n"
        b"Original-Rcpt-To: <alice@example.com>\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <d1.m2@portal.example.com>\r\nSubject: Hi\r\n\r\n--B--\r\n"
    )
    [found] = dsn.parse(raw)
    assert (found.kind, found.recipient, found.message_id) == (
        "complaint", "alice@example.com", "<d1.m2@portal.example.com>")  # fmt: skip


def test_a_dsn_matched_by_message_id_quarantines_once(delivery, alice):
    message = sent(delivery, alice)
    raw = postfix_dsn(message_id(message), recipient=alice.email)
    [one] = dsn.reports(raw)
    assert one.event_id == "<20261202025901.1A2B3C@mx.portal.example.com>:alice@example.com"
    assert bounces.record_all(dsn.reports(raw)) == {**ONE, "unmatched": 0}
    assert bounces.record_all(dsn.reports(raw)) == {
        "recorded": 0,
        "replayed": 1,
        "unmatched": 0,
        "delivered": 0,
    }
    event = ProviderEvent.objects.get()
    assert event.provider == "dsn" and event.message == message and event.quarantined
    assert event.at == datetime(2026, 12, 2, 2, 59, 1, tzinfo=UTC)


def test_a_dsn_that_does_not_name_our_message_is_not_matched_by_recipient(delivery, alice):
    sent(delivery, alice)
    raw = postfix_dsn("<someone-else@example.org>", recipient=alice.email)
    assert bounces.record_all(dsn.reports(raw)) == {**ONE, "unmatched": 1}
    assert not Quarantine.objects.exists()


class FakeIMAP:
    """Enough of imaplib.IMAP4 for the poller: a mailbox of numbered mails and their flags."""

    mails: dict = {}
    flags: dict = {}
    calls: list = []

    def __init__(self, host, port, **kwargs):
        self.calls.append(("connect", host, port))

    def login(self, user, password):
        self.calls.append(("login", user, password))
        return "OK", [b"Logged in"]

    def select(self, folder):
        self.calls.append(("select", folder))
        return "OK", [str(len(self.mails)).encode()]

    def uid(self, command, *args):
        if command == "SEARCH":
            unseen = [u for u in self.mails if "\\Seen" not in self.flags.get(u, set())]
            return "OK", [b" ".join(unseen)]
        if command == "FETCH":
            uid = args[0]
            return "OK", [(uid + b" (UID " + uid + b" BODY[] {n}", self.mails[uid]), b")"]
        if command == "STORE":
            uid, _, flag = args
            self.flags.setdefault(uid, set()).add(flag.strip("()"))
            return "OK", []
        raise AssertionError(command)

    def expunge(self):
        for uid in [u for u, f in self.flags.items() if "\\Deleted" in f]:
            del self.mails[uid]
        return "OK", []

    def logout(self):
        self.calls.append(("logout",))
        return "BYE", []


@pytest.fixture
def imap(monkeypatch):
    FakeIMAP.mails, FakeIMAP.flags, FakeIMAP.calls = {}, {}, []
    monkeypatch.setattr(dsn.imaplib, "IMAP4_SSL", FakeIMAP)
    return FakeIMAP


def test_the_poller_records_the_mailbox_reports_and_marks_them_seen(imap, delivery, alice):
    message = sent(delivery, alice)
    imap.mails = {
        b"1": postfix_dsn(message_id(message), recipient=alice.email),
        b"2": b"From: someone@example.com\r\nSubject: Out of office\r\n\r\nAway.\r\n",
        b"3": multi_recipient_dsn(),
    }
    url = "imaps://bounces%40portal.example.com:s3cret@imap.example.com/Bounces"
    counts = dsn.poll_mailbox(url)
    assert counts == {"mails": 3, "reports": 3, "recorded": 3, "replayed": 0, "unmatched": 2}
    assert imap.calls[:3] == [("connect", "imap.example.com", 993),
                              ("login", "bounces@portal.example.com", "s3cret"),
                              ("select", '"Bounces"')]  # fmt: skip
    assert imap.calls[-1] == ("logout",)
    assert all(flags == {"\\Seen"} for flags in imap.flags.values()) and len(imap.flags) == 3
    assert Quarantine.objects.filter(address=alice.email).exists()
    assert dsn.poll_mailbox(url)["mails"] == 0  # nothing unseen is left


def test_the_poller_deletes_the_reports_when_asked(imap, settings, db):
    settings.DELIVERY_BOUNCE_IMAP_DELETE = True
    imap.mails = {b"7": multi_recipient_dsn(), b"8": b"Subject: hello\r\n\r\nhi\r\n"}
    dsn.poll_mailbox("imaps://u:p@imap.example.com")
    assert list(imap.mails) == [b"8"] and imap.flags[b"8"] == {"\\Seen"}
    assert ProviderEvent.objects.filter(unmatched=True).count() == 2


def test_the_poller_is_off_by_default(imap, settings):
    from campaigns import tasks

    assert settings.DELIVERY_BOUNCE_IMAP_URL == ""
    assert "poll-bounce-mailbox" not in settings.CELERY_BEAT_SCHEDULE
    assert tasks.poll_bounce_mailbox()["mails"] == 0
    assert imap.calls == []


def test_a_bad_mailbox_url_names_the_setting():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="DELIVERY_BOUNCE_IMAP_URL"):
        dsn.mailbox("https://imap.example.com")


# --------------------------------------------------------------------------------------------
# Delivery notifications: the "delivered" figure
# --------------------------------------------------------------------------------------------


def delivered_events(message=None):
    from campaigns.models import Event

    events = Event.objects.filter(kind=1)  # EventKind.DELIVERED
    return events.filter(message=message) if message else events


def ses_delivery(message, *, mail_id="ses-0001", recipient=None, headers=True):
    return {
        "notificationType": "Delivery",
        "mail": {"messageId": mail_id, "headers": [
            {"name": "Message-ID", "value": message_id(message)},
            {"name": "X-Portal-Delivery", "value": str(message.delivery_id)},
        ] if headers else []},
        "delivery": {"timestamp": "2026-12-02T03:00:01.000Z", "processingTimeMillis": 512,
                     "recipients": [recipient or message.address],
                     "smtpResponse": "250 2.6.0 Message received"},
    }  # fmt: skip


def test_a_signed_ses_delivery_records_one_delivered_event(client, sns, sns_key, delivery, alice):
    message = sent(delivery, alice)
    payload = signed_sns(
        sns_key[0], {"Type": "Notification", "Message": json.dumps(ses_delivery(message))}
    )
    response = post_sns(client, payload)
    assert response.status_code == 200
    assert response.json() == {"recorded": 0, "replayed": 0, "unmatched": 0, "delivered": 1}
    event = delivered_events().get()
    assert (event.message_id, event.delivery_id, event.entity_id) == (
        message.pk, delivery.pk, alice.entity_id)  # fmt: skip
    assert event.ref == "ses:ses-0001:delivered:alice@example.com"
    assert event.at == datetime(2026, 12, 2, 3, 0, 1, tzinfo=UTC)
    # A replay (SNS retries) records nothing more; a delivery is no bounce: no quarantine.
    assert post_sns(client, payload).json()["delivered"] == 0
    assert delivered_events().count() == 1
    assert not ProviderEvent.objects.exists() and not Quarantine.objects.exists()


def test_an_ses_delivery_of_a_strangers_message_is_ignored(client, sns, sns_key, delivery, alice):
    sent(delivery, alice)
    notification = ses_delivery(sent(delivery, alice, secondary_id=1), headers=False,
                                recipient="stranger@example.org")  # fmt: skip
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": json.dumps(notification)})
    response = post_sns(client, payload)
    assert response.status_code == 200 and response.json()["delivered"] == 0
    assert not delivered_events().exists() and not ProviderEvent.objects.exists()


def test_an_ses_delivery_without_recipients_is_a_400(client, sns, sns_key, delivery, alice):
    notification = {**ses_delivery(sent(delivery, alice)), "delivery": {"timestamp": "x"}}
    payload = signed_sns(sns_key[0], {"Type": "Notification", "Message": json.dumps(notification)})
    assert post_sns(client, payload).status_code == 400
    assert not delivered_events().exists()


def test_a_sendgrid_delivered_event_records_delivered_beside_the_bounce(
    client, sendgrid, sendgrid_key, delivery, alice
):
    message = sent(delivery, alice)
    events = sendgrid_events(message)
    response = post_sendgrid(client, sendgrid_key, events)
    assert response.json() == {"recorded": 2, "replayed": 0, "unmatched": 0, "delivered": 1}
    assert delivered_events(message).get().ref == "sendgrid:ev-0"
    assert post_sendgrid(client, sendgrid_key, events[:1]).json()["delivered"] == 0  # replay
    stranger = {**events[0], "email": "nobody@example.org", "smtp-id": "<x@elsewhere>",
                "sg_event_id": "ev-9"}  # fmt: skip
    response = post_sendgrid(client, sendgrid_key, [stranger])
    assert response.status_code == 200 and response.json()["delivered"] == 0
    assert delivered_events().count() == 1


def test_a_forged_delivery_notification_records_nothing(client, sendgrid, sendgrid_key, delivery,
                                                        alice):  # fmt: skip
    message = sent(delivery, alice)
    forged = ec.generate_private_key(ec.SECP256R1())
    assert post_sendgrid(client, forged, sendgrid_events(message)[:1]).status_code == 403
    assert not delivered_events().exists()


def test_a_mailgun_delivered_event_records_delivered_once(client, mailgun, delivery, alice):
    message = sent(delivery, alice)
    payload = mailgun_payload(message, event="delivered", severity="")
    assert post_mailgun(client, payload).json()["delivered"] == 1
    assert post_mailgun(client, payload).json()["delivered"] == 0
    assert delivered_events(message).get().ref == "mailgun:mg-delivered-"
    assert not ProviderEvent.objects.exists() and not Quarantine.objects.exists()


def postmark_delivery(message, *, recipient=None, postmark_id="pm-883953f4"):
    return {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
            "MessageID": postmark_id, "Recipient": recipient or message.address, "Tag": "",
            "DeliveredAt": "2026-12-02T03:00:02.9070259Z", "Details": "smtp;250 2.0.0 OK",
            "Metadata": {"portal_delivery": str(message.delivery_id)}}  # fmt: skip


def test_a_postmark_delivery_webhook_records_delivered_once(client, postmark, delivery, alice):
    message = sent(delivery, alice)
    auth = f"postmark:{POSTMARK_TOKEN}"
    payload = postmark_delivery(message)
    assert post_postmark(client, payload, auth=auth).json()["delivered"] == 1
    assert post_postmark(client, payload, token=POSTMARK_TOKEN).json()["delivered"] == 0
    event = delivered_events(message).get()
    assert event.ref == "postmark:pm-883953f4:delivered:alice@example.com"
    stranger = postmark_delivery(message, recipient="nobody@example.org", postmark_id="pm-2")
    assert post_postmark(client, stranger, auth=auth).status_code == 200
    assert delivered_events().count() == 1
    assert post_postmark(client, {"RecordType": "Delivery"}, auth=auth).status_code == 400


def test_the_delivered_figure_adds_up_across_providers(
    client, sns, sns_key, sendgrid, sendgrid_key, mailgun, postmark, delivery, alice, org
):
    people = [alice] + [
        Contact.objects.create(external_id=f"C{i}", entity=org.store_a,
                               email=f"c{i}@example.com", email_consent=True)
        for i in range(4)
    ]  # fmt: skip
    messages = [sent(delivery, person, secondary_id=i) for i, person in enumerate(people)]
    ses = signed_sns(sns_key[0], {"Type": "Notification", "MessageId": "sns-1",
                                  "Message": json.dumps(ses_delivery(messages[0]))})  # fmt: skip
    post_sns(client, ses)
    post_sns(client, ses)
    post_sendgrid(client, sendgrid_key, sendgrid_events(messages[1])[:1])
    # Two providers reporting the same message delivered: one delivered message.
    post_mailgun(client, mailgun_payload(messages[2], event="delivered", severity=""))
    post_postmark(client, postmark_delivery(messages[2]), auth=f"postmark:{POSTMARK_TOKEN}")
    post_postmark(client, postmark_delivery(messages[3], postmark_id="pm-3"),
                  token=POSTMARK_TOKEN)  # fmt: skip
    # messages[4] was accepted by the SMTP server only: not delivered.
    figures = reports.engagement(delivery)
    assert (figures.sent, figures.delivered) == (5, 4)
    assert delivered_events().count() == 5
