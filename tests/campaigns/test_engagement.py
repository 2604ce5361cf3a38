"""Compliance: unsubscribe links and RFC 8058 headers, the preference page and the consent
rule, SMS STOP replies, sender identity per entity, and the mirror page."""

import json
import re

import pytest
from django.core import signing
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from campaigns.delivery import preparation, sending
from campaigns.engagement import services, tokens
from campaigns.models import CategoryOptOut, Contact, Delivery, Message, Typology
from portal.models import AuditLog
from tests.campaigns.test_deliveries import person, target
from tests.campaigns.test_sending import before_footer, send

SITE = "https://portal.example.com"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = SITE
    settings.DELIVERY_SENDER_DOMAINS = ["localhost", "stores.example"]


@pytest.fixture
def people(org):
    return [person(org, f"P{n}", first_name=f"Pat{n}", phone=f"+3361234567{n}", sms_consent=True)
            for n in range(3)]  # fmt: skip


def prepared(campaign, **fields):
    defaults = {"label": "Spring", "channel": "email", "subject": "Hello {{ contact.first_name }}",
                "html_body": "<html><body><p>Dear {{ contact.first_name }}</p></body></html>",
                "text_body": "Dear {{ contact.first_name }}"}  # fmt: skip
    delivery = Delivery.objects.create(campaign=campaign, **{**defaults, **fields})
    return preparation.prepare(delivery=delivery, **target())


def unsubscribe_url(email):
    """The https URL of an email's List-Unsubscribe header."""
    return re.search(r"<(https://[^>]+)>", email.extra_headers["List-Unsubscribe"]).group(1)


def path_of(url):
    return url.removeprefix(SITE)


def token_of(email):
    return path_of(unsubscribe_url(email)).rstrip("/").rpartition("/")[2]


def sent_email(campaign, org, capture, mailoutbox, **fields):
    send(prepared(campaign, **fields), org, capture)
    return sorted(mailoutbox, key=lambda m: m.to)


# --------------------------------------------------------------------------------------------
# Headers, footer and links
# --------------------------------------------------------------------------------------------


def test_every_marketing_email_carries_one_click_unsubscribe_headers_bound_to_its_message(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    emails = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    assert len(emails) == 3
    for email in emails:
        assert email.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = unsubscribe_url(email)
        assert url.startswith(f"{SITE}/unsubscribe/")
        message = Message.objects.get(pk=tokens.read(token_of(email)))
        assert message.address == email.to[0]
        assert "mailto:" not in email.extra_headers["List-Unsubscribe"]


def test_the_mailto_unsubscribe_is_offered_when_configured(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.DELIVERY_UNSUBSCRIBE_MAILTO = "unsubscribe@stores.example"
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]
    header = email.extra_headers["List-Unsubscribe"]
    assert header.startswith(f"<{SITE}/unsubscribe/")
    assert f", <mailto:unsubscribe@stores.example?subject=unsubscribe%20{token_of(email)}>" in (
        header
    )


def test_a_marketing_template_without_the_link_gets_the_footer_with_link_and_address(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    org.hq.postal_address = "1 Main Street\n75001 Paris"
    org.hq.save()
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]
    html = email.alternatives[0][0]
    url = unsubscribe_url(email)
    assert html.startswith("<html><body><p>Dear Pat0</p><p ")
    assert html.endswith("</body></html>")  # the footer goes inside the body
    assert f'<a href="{url}">Unsubscribe</a>' in html
    assert f'href="{url.replace("/unsubscribe/", "/preferences/")}"' in html
    assert "1 Main Street, 75001 Paris" in html
    assert before_footer(email.body) == "Dear Pat0"
    assert f"Unsubscribe: {url}" in email.body and "1 Main Street, 75001 Paris" in email.body


def test_a_template_with_its_own_link_gets_no_second_one(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    email = sent_email(
        campaign, org, django_capture_on_commit_callbacks, mailoutbox,
        html_body='<p>Hi</p><a href="{{ unsubscribe_url }}">Stop these</a> {{ postal_address }}',
        text_body="Hi. Stop: {{ unsubscribe_url }}",
    )[0]  # fmt: skip
    html = email.alternatives[0][0]
    assert html.count("/unsubscribe/") == 1 and "Stop these" in html
    assert email.body.count("/unsubscribe/") == 1  # the address line alone is added


def test_a_transactional_typology_carries_neither_headers_nor_footer(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    typology = Typology.objects.create(name="Orders", entity=org.hq, purpose="transactional")
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox,
                       typology=typology)[0]  # fmt: skip
    assert "List-Unsubscribe" not in email.extra_headers
    assert email.body == "Dear Pat0"
    assert email.alternatives[0][0] == "<html><body><p>Dear Pat0</p></body></html>"


def test_proofs_and_previews_carry_sample_links_that_change_nothing(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client
):
    delivery = prepared(campaign)
    rendered = sending.preview(delivery=delivery, contact=people[0])
    assert f"{SITE}/unsubscribe/{tokens.SAMPLE}/" in rendered.html
    assert client.post(f"/unsubscribe/{tokens.SAMPLE}/").status_code == 200
    assert Contact.objects.get(pk=people[0].pk).email_consent is True


# --------------------------------------------------------------------------------------------
# Unsubscribing
# --------------------------------------------------------------------------------------------


@pytest.fixture
def email(campaign, people, org, django_capture_on_commit_callbacks, mailoutbox):
    return sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]


def test_opening_the_unsubscribe_link_changes_nothing(email, people):
    response = Client().get(path_of(unsubscribe_url(email)))
    assert response.status_code == 200
    assert b"Nothing changes until you confirm" in response.content
    assert "p•••@example.com" in response.content.decode()
    assert Contact.objects.get(pk=people[0].pk).email_consent is True
    assert not AuditLog.objects.filter(action="consent_withdrawn").exists()


def test_the_one_click_post_without_cookie_or_csrf_token_unsubscribes(email, people):
    mailbox_provider = Client(enforce_csrf_checks=True)  # no cookie, no CSRF token
    response = mailbox_provider.post(
        path_of(unsubscribe_url(email)), {"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200
    contact = Contact.objects.get(pk=people[0].pk)
    assert (
        contact.email_consent is False and contact.email_consent_source == "one-click unsubscribe"
    )
    assert contact.email_consent_at is not None
    entry = AuditLog.objects.for_object(contact).get(action="consent_withdrawn")
    assert entry.extra["channel"] == "email" and entry.extra["source"] == "one-click unsubscribe"
    assert Contact.objects.get(pk=people[1].pk).email_consent is True  # only that recipient


def test_a_replayed_unsubscribe_is_harmless(email, people):
    url = path_of(unsubscribe_url(email))
    for _ in range(3):
        assert Client().post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert AuditLog.objects.filter(action="consent_withdrawn").count() == 1


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature altered
    lambda t: str(int(t.partition(":")[0]) + 1) + ":" + t.partition(":")[2],  # another id
    lambda t: signing.Signer(salt="approvals.link").sign(t.partition(":")[0]),  # other salt
    lambda t: "12345",
])  # fmt: skip
def test_a_tampered_token_answers_404_and_changes_nothing(email, people, mangle):
    token = mangle(token_of(email))
    for url in (f"/unsubscribe/{token}/", f"/preferences/{token}/", f"/view/{token}/"):
        for method in ("get", "post"):
            response = getattr(Client(), method)(url, {"List-Unsubscribe": "One-Click"})
            assert response.status_code in (404, 405)
            assert b"example.com" not in response.content
    assert Contact.objects.filter(email_consent=False).count() == 0


def test_unsubscribing_excludes_the_contacts_waiting_messages_at_once(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    consent = Typology.objects.create(name="Marketing", entity=org.hq, rules=[{"rule": "consent"}])
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]
    waiting = prepared(campaign, label="Next", typology=consent)
    assert waiting.messages.filter(status="pending").count() == 3
    Client().post(path_of(unsubscribe_url(email)), {"List-Unsubscribe": "One-Click"})
    mine = waiting.messages.get(contact=people[0])
    assert (mine.status, mine.rule) == ("excluded", "consent")
    assert waiting.messages.filter(status="pending").count() == 2


# --------------------------------------------------------------------------------------------
# Preferences
# --------------------------------------------------------------------------------------------


def test_preference_changes_reach_the_consent_rule(email, people, campaign, org):
    news_rule = {"rule": "pressure", "max": 2, "days": 7, "category": "news"}
    Typology.objects.create(name="News", entity=org.hq, rules=[news_rule])
    consent = Typology.objects.create(name="Consent", entity=org.hq, rules=[{"rule": "consent"}])
    url = path_of(unsubscribe_url(email)).replace("/unsubscribe/", "/preferences/")
    client = Client()
    page = client.get(url)
    assert page.status_code == 200 and b"news" in page.content
    # Keep emails, stop SMS, and no "news" any more.
    response = client.post(url, {"email": "on", "push": ""})
    assert response.status_code == 200 and b"Your choices are saved" in response.content
    contact = Contact.objects.get(pk=people[0].pk)
    assert (contact.email_consent, contact.sms_consent) == (True, False)
    assert list(contact.opt_outs.values_list("category", flat=True)) == ["news"]
    actions = set(AuditLog.objects.for_object(contact).values_list("action", flat=True))
    assert actions == {"consent_withdrawn", "category_opt_out"}
    news = prepared(campaign, label="News", category="news", typology=consent)
    assert news.messages.get(contact=contact).rule == "consent"
    other = prepared(campaign, label="Other", typology=consent)
    assert other.messages.get(contact=contact).status == "pending"
    sms = prepared(campaign, label="SMS", channel="sms", text_body="Hi", typology=consent)
    assert sms.messages.get(contact=contact).rule == "consent"


def test_the_preference_form_is_csrf_protected(email, people):
    url = path_of(unsubscribe_url(email)).replace("/unsubscribe/", "/preferences/")
    response = Client(enforce_csrf_checks=True).post(url, {"email": ""})
    assert response.status_code == 403
    assert Contact.objects.get(pk=people[0].pk).email_consent is True


def test_consent_changes_show_on_the_contacts_history(email, people, org, client):
    Client().post(path_of(unsubscribe_url(email)), {"List-Unsubscribe": "One-Click"})
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:contact", args=[people[0].pk]))
    assert b"Consent history" in page.content and b"Email consent withdrawn" in page.content
    org.marketer.is_staff = True
    org.marketer.save()
    admin = client.get(reverse("admin:campaigns_contact_change", args=[people[0].pk]))
    assert admin.status_code == 200 and b"Email consent withdrawn" in admin.content


# --------------------------------------------------------------------------------------------
# SMS STOP
# --------------------------------------------------------------------------------------------


def inbound(payload, token="gateway-secret", content_type="application/json"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    body = json.dumps(payload) if content_type == "application/json" else payload
    return Client().post("/webhooks/sms/inbound/", body, content_type=content_type, **headers)


@pytest.fixture
def gateway(settings):
    settings.DELIVERY_SMS_INBOUND_TOKEN = "gateway-secret"


@pytest.mark.parametrize("text", ["STOP", "stop", " Stop.", "STOP SMS", "Arrêt", "unsubscribe"])
def test_a_stop_reply_removes_sms_consent(gateway, people, text):
    response = inbound({"from": "+33612345670", "text": text, "id": "SM1"})
    assert response.status_code == 200 and response.json() == {"stop": True, "stopped": 1}
    contact = Contact.objects.get(pk=people[0].pk)
    assert contact.sms_consent is False and contact.email_consent is True
    entry = AuditLog.objects.for_object(contact).get(action="consent_withdrawn")
    assert entry.extra["channel"] == "sms" and entry.extra["gateway_id"] == "SM1"


def test_the_stop_webhook_matches_the_number_however_it_is_written(gateway, people):
    assert inbound({"from": "0033612345671", "text": "STOP"}).json()["stopped"] == 1
    assert Contact.objects.get(pk=people[1].pk).sms_consent is False


def test_other_replies_change_nothing(gateway, people):
    assert inbound({"from": "+33612345670", "text": "Stopover in Lisbon?"}).json() == {
        "stop": False, "stopped": 0,
    }  # fmt: skip
    assert Contact.objects.get(pk=people[0].pk).sms_consent is True


def test_the_stop_webhook_refuses_a_bad_token_and_a_malformed_body(gateway, people, caplog):
    assert inbound({"from": "+33612345670", "text": "STOP"}, token="wrong").status_code == 403
    assert inbound({"from": "+33612345670", "text": "STOP"}, token="").status_code == 403
    assert "bad token" in caplog.text
    assert inbound("{not json", content_type="application/json").status_code == 400
    assert inbound(["STOP"]).status_code == 400
    assert inbound({"text": "STOP"}).status_code == 400
    assert Contact.objects.get(pk=people[0].pk).sms_consent is True


def test_the_stop_webhook_is_off_without_its_token(people):
    assert inbound({"from": "+33612345670", "text": "STOP"}).status_code == 404


# --------------------------------------------------------------------------------------------
# Sender identity
# --------------------------------------------------------------------------------------------


def test_a_delivery_whose_sender_is_outside_the_verified_domains_is_refused_at_save(campaign):
    delivery = Delivery(campaign=campaign, label="X", channel="email", subject="Hi",
                        text_body="Hi", sender="Promo <promo@elsewhere.example>")  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        delivery.clean()
    assert "not at a verified sender domain" in refused.value.message_dict["sender"][0]
    delivery.sender = "Lyon <lyon@stores.example>"
    delivery.clean()


def test_the_admin_refuses_a_delivery_with_an_unverified_sender(campaign, org, client):
    org.marketer.is_staff = True
    org.marketer.save()
    client.force_login(org.marketer)
    response = client.post(reverse("admin:campaigns_delivery_add"), {
        "campaign": campaign.pk, "label": "Promo", "channel": "email", "dimension": "contact",
        "subject": "Hi", "text_body": "Hi", "sender": "promo@elsewhere.example",
        "push_data": "{}", "columns": "[]", "export_format": "csv",
        "history-portal-auditlog-content_type-object_id-TOTAL_FORMS": "0",
        "history-portal-auditlog-content_type-object_id-INITIAL_FORMS": "0",
    })  # fmt: skip
    assert response.status_code == 200
    assert "not at a verified sender domain" in response.content.decode()
    assert not Delivery.objects.filter(label="Promo").exists()


def test_an_entity_sender_address_outside_the_verified_domains_is_refused(org):
    org.store_a.sender_address = "store@gmail.example"
    with pytest.raises(ValidationError) as refused:
        org.store_a.full_clean()
    assert "sender_address" in refused.value.message_dict


def test_messages_on_behalf_of_a_local_entity_come_from_it(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    store = org.store_a
    store.sender_name, store.sender_address = "Lyon store", "lyon@stores.example"
    store.contact_email, store.postal_address = "manager@lyon.example", "2 Quai, 69002 Lyon"
    store.save()
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]
    assert email.from_email == "Lyon store <lyon@stores.example>"
    assert email.reply_to == ["manager@lyon.example"]
    assert "2 Quai, 69002 Lyon" in email.alternatives[0][0]


def test_an_entity_sender_no_longer_verified_falls_back_to_the_default_sender(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    org.store_a.sender_address = "lyon@stores.example"
    org.store_a.save()
    settings.DELIVERY_SENDER_DOMAINS = ["localhost"]
    email = sent_email(campaign, org, django_capture_on_commit_callbacks, mailoutbox)[0]
    assert email.from_email == settings.DELIVERY_SENDER


# --------------------------------------------------------------------------------------------
# Mirror
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_second(monkeypatch):
    """Sending and the mirror in the same second: tracking tokens carry the time they were
    signed, so a mirror opened later carries fresh tokens (to the same message and links)."""
    from campaigns.engagement import tracking

    monkeypatch.setattr(tracking, "signing_time", lambda: 1_800_000_000)


def test_the_mirror_page_shows_exactly_what_was_sent(one_second, email):
    html = email.alternatives[0][0]
    mirror = re.search(r'href="(https://[^"]+/view/[^"]+)"', html).group(1)
    response = Client().get(path_of(mirror))
    assert response.status_code == 200
    assert response.content.decode() == html
    assert "sandbox" in response["Content-Security-Policy"]


def test_the_mirror_of_a_message_not_sent_is_not_found(campaign, people):
    delivery = prepared(campaign)
    message = delivery.messages.first()
    assert Client().get(f"/view/{tokens.make(message.pk)}/").status_code == 404


def test_services_consent_changes_are_idempotent(people):
    contact = people[0]
    assert services.set_consent(contact=contact, channel="sms", receiving=False, source="t")
    assert not services.set_consent(contact=contact, channel="sms", receiving=False, source="t")
    assert services.set_category(contact=contact, category="news", receiving=False, source="t")
    assert not services.set_category(contact=contact, category="news", receiving=False,
                                     source="t")  # fmt: skip
    assert CategoryOptOut.objects.filter(contact=contact).count() == 1


def test_withdrawing_email_consent_on_the_preference_page_is_the_messages_unsubscribe(
    email, people
):
    from campaigns.delivery import reports
    from campaigns.models import Event, EventKind

    url = path_of(unsubscribe_url(email)).replace("/unsubscribe/", "/preferences/")
    message = Message.objects.get(pk=tokens.read(token_of(email)))
    for _ in range(2):  # the second post changes nothing and records nothing
        response = Client().post(url, {"sms": "on", "push": ""})
        assert response.status_code == 200
    contact = Contact.objects.get(pk=people[0].pk)
    assert contact.email_consent is False and contact.email_consent_source == "preference page"
    entry = AuditLog.objects.for_object(contact).get(action="consent_withdrawn")
    assert entry.extra == {**entry.extra, "channel": "email", "message": message.pk}
    event = Event.objects.get(kind=EventKind.UNSUBSCRIBE)
    assert (event.message_id, event.delivery_id) == (message.pk, message.delivery_id)
    assert event.detail == "preference page"
    assert reports.engagement(message.delivery).unsubscribed == 1


def test_withdrawing_another_channel_on_the_preference_page_is_no_unsubscribe_event(email, people):
    from campaigns.models import Event

    url = path_of(unsubscribe_url(email)).replace("/unsubscribe/", "/preferences/")
    Client().post(url, {"email": "on", "push": ""})  # SMS withdrawn from an email's page
    assert Contact.objects.get(pk=people[0].pk).sms_consent is False
    assert AuditLog.objects.filter(action="consent_withdrawn").count() == 1
    assert not Event.objects.exists()
