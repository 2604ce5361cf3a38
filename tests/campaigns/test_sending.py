"""Sending: chunks, claims, idempotent re-runs, retries, bounces, approval, proofs, rights,
other channels and reports."""

import json
import smtplib
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns.delivery import preparation, reports, sending
from campaigns.delivery.providers import EmailProvider, PermanentError, TemporaryError
from campaigns.models import Contact, Delivery, Message, Proof, Quarantine
from portal.exceptions import DomainError
from tests.campaigns.test_deliveries import person, target
from tests.factories import CampaignFactory


@pytest.fixture
def people(org):
    for n in range(6):
        person(org, f"P{n}", first_name=f"Pat{n}", entity=org.store_a if n < 4 else org.store_b)


def prepared(campaign, **fields):
    defaults = {"label": "Spring", "channel": "email",
                "subject": "Hello {{ contact.first_name }}",
                "html_body": "<p>Dear {{ contact.first_name }} from {{ entity.code }}</p>",
                "text_body": "Dear {{ contact.first_name }}"}  # fmt: skip
    delivery = Delivery.objects.create(campaign=campaign, **{**defaults, **fields})
    return preparation.prepare(delivery=delivery, **target())


def before_footer(body):
    """A marketing email's text without the unsubscribe footer the portal adds."""
    return body.split("\n\n-- \n")[0]


def sent(outbox):
    """The delivery's emails (not the approval notifications)."""
    return [m for m in outbox if m.subject.startswith("Hello")]


def send(delivery, org, capture, actor=None):
    with capture(execute=True):
        sending.confirm(delivery=delivery, actor=actor or org.marketer)
    delivery.refresh_from_db()
    return delivery


def test_a_delivery_is_sent_in_chunks_with_personalised_content(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.DELIVERY_CHUNK_SIZE = 4
    delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
    assert delivery.state == "sent" and delivery.sent_at is not None
    assert sorted(m.subject for m in mailoutbox) == [f"Hello Pat{n}" for n in range(6)]
    first = next(m for m in mailoutbox if m.subject == "Hello Pat0")
    assert first.to == ["p0@example.com"] and before_footer(first.body) == "Dear Pat0"
    assert first.alternatives[0][0].startswith("<p>Dear Pat0 from STORE_A</p><p ")
    assert first.extra_headers["Message-ID"].startswith(f"<d{delivery.pk}.m")
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    with pytest.raises(DomainError, match="Only a prepared delivery"):  # never sent twice
        sending.confirm(delivery=delivery, actor=org.marketer)


def test_a_redelivered_chunk_sends_nothing_again(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
    ids = list(Message.objects.values_list("id", flat=True))
    assert sending.send_chunk(delivery.pk, min(ids), max(ids)) == {
        "sent": 0, "failed": 0, "in_doubt": 0, "retry_in": None,
    }  # fmt: skip
    assert len(mailoutbox) == 6


def test_a_chunk_claimed_by_a_dead_worker_is_sent_once_after_the_lease(
    campaign, people, org, mailoutbox, settings
):
    delivery = prepared(campaign)
    sending.confirm(delivery=delivery, actor=org.marketer)  # chunks not run (no commit)
    ids = sorted(Message.objects.values_list("id", flat=True))
    # A worker claimed the chunk, sent two messages and died.
    token = sending.claim(delivery.pk, ids[0], ids[-1])
    Message.objects.filter(id__in=ids[:2]).update(status="sent", sent_at=timezone.now())
    assert sending.send_chunk(delivery.pk, ids[0], ids[-1])["sent"] == 0  # still leased
    assert sending.recover_stalled() == 0
    later = timezone.now() + timedelta(seconds=settings.DELIVERY_CLAIM_LEASE_SECONDS + 1)
    with time_machine.travel(later):
        assert sending.recover_stalled() == 1  # its chunk is sent again (eager task)
    assert token is not None
    assert len(mailoutbox) == 4  # only the four it had not sent
    delivery.refresh_from_db()
    assert delivery.state == "sent"


class FlakyProvider(EmailProvider):
    """Refuses the first attempt with a 4xx, then bounces one address."""

    calls = 0

    def send(self, message):
        FlakyProvider.calls += 1
        if FlakyProvider.calls == 1:
            raise TemporaryError("421 try later")
        if message.address == "p1@example.com":
            raise PermanentError("550 5.1.1 no such user", bounce=True)
        super().send(message)


def test_temporary_errors_retry_and_bounces_go_to_quarantine(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, monkeypatch, settings
):
    monkeypatch.setattr(sending, "provider_for", lambda channel: FlakyProvider())
    delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
    assert delivery.state == "sent"
    assert len(mailoutbox) == 5
    bounced = Message.objects.get(address="p1@example.com")
    assert (bounced.status, bounced.error) == ("failed", "550 5.1.1 no such user")
    assert Quarantine.objects.filter(channel="email", address="p1@example.com").exists()
    assert Message.objects.filter(status="sent", attempts=1).count() == 5  # retried once
    # The next delivery's quarantine rule excludes the bounced address.
    from campaigns.models import Typology

    typology = Typology.objects.create(name="Q", entity=org.hq, rules=[{"rule": "quarantine"}])
    assert prepared(campaign, typology=typology).exclusions == {"quarantine": 1}


def test_messages_fail_after_the_maximum_attempts(
    campaign, people, org, django_capture_on_commit_callbacks, monkeypatch, settings
):
    settings.DELIVERY_MAX_ATTEMPTS = 2

    class Down(EmailProvider):
        def open(self):
            raise TemporaryError("Cannot reach the mail server")

    monkeypatch.setattr(sending, "provider_for", lambda channel: Down())
    delivery = send(prepared(campaign), org, django_capture_on_commit_callbacks)
    assert delivery.state == "sent"  # finished: nothing left to send
    assert set(Message.objects.values_list("status", flat=True)) == {"failed"}
    assert Message.objects.first().error.startswith("Gave up after 2 attempts")


def test_smtp_answers_map_to_temporary_and_permanent_errors():
    from campaigns.delivery.providers import _smtp_error

    assert isinstance(_smtp_error(451, b"4.3.0 busy"), TemporaryError)
    hard = _smtp_error(550, b"5.1.1 unknown user")
    assert isinstance(hard, PermanentError) and hard.bounce
    soft = _smtp_error(552, b"5.2.2 mailbox full")
    assert isinstance(soft, PermanentError) and not soft.bounce
    assert issubclass(smtplib.SMTPRecipientsRefused, smtplib.SMTPException)


def test_a_delivery_needing_approval_is_sent_once_approved(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    delivery = send(prepared(campaign, requires_approval=True), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    assert delivery.state == "awaiting_approval" and not sent(mailoutbox)
    request = ApprovalRequest.objects.for_object(delivery).get()
    assert set(request.approvers.values_list("username", flat=True)) == {"approver"}
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(request=request, actor=org.approver, approve=True)
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(sent(mailoutbox)) == 6


def test_a_rejected_delivery_is_cancelled(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    delivery = send(prepared(campaign, requires_approval=True), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    request = ApprovalRequest.objects.for_object(delivery).get()
    approvals.decide(request=request, actor=org.approver, approve=False, comment="Wrong season")
    delivery.refresh_from_db()
    assert delivery.state == "cancelled" and not sent(mailoutbox)


def test_proofs_go_to_test_addresses_only(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.DELIVERY_PROOF_DOMAINS = ["example.com"]
    delivery = prepared(campaign)
    pat3 = Contact.objects.get(external_id="P3")
    with django_capture_on_commit_callbacks(execute=True):
        sending.request_proofs(
            delivery=delivery, addresses=["qa@example.com", " boss@example.com "],
            actor=org.marketer, contact_ids=[pat3.pk],
        )  # fmt: skip
    assert sorted(m.to[0] for m in mailoutbox) == ["boss@example.com", "qa@example.com"]
    assert {m.subject for m in mailoutbox} == {"[Proof] Hello Pat3"}
    assert Proof.objects.filter(sent_at__isnull=False).count() == 2
    assert set(Message.objects.values_list("status", flat=True)) == {"pending"}
    with pytest.raises(DomainError, match="test address"):
        sending.request_proofs(delivery=delivery, addresses=[" "], actor=org.marketer)


def test_local_operators_send_only_their_own_child_campaigns_deliveries(
    campaign, people, org, django_capture_on_commit_callbacks
):
    child = CampaignFactory(name="Child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=campaign)  # fmt: skip
    delivery = prepared(child, label="Local")
    with pytest.raises(PermissionDenied):
        sending.confirm(delivery=delivery, actor=org.operator_b)
    with pytest.raises(PermissionDenied):
        sending.confirm(delivery=prepared(campaign, label="HQ's"), actor=org.operator_a)
    assert send(delivery, org, django_capture_on_commit_callbacks, org.operator_a).state == "sent"


def test_sms_go_through_the_file_provider_and_direct_mail_becomes_a_file(
    campaign, people, org, django_capture_on_commit_callbacks, settings, tmp_path
):
    settings.DELIVERY_OUTBOX_DIR = tmp_path / "outbox"
    Contact.objects.update(sms_consent=True, phone="+33600000000")
    sms = send(prepared(campaign, channel="sms", text_body="Hi {{ contact.first_name }}"), org,
               django_capture_on_commit_callbacks)  # fmt: skip
    lines = [
        json.loads(line)
        for line in (tmp_path / "outbox" / "sms.jsonl").read_text().split("\n")
        if line
    ]
    assert sms.state == "sent" and sorted(line["text"] for line in lines) == [
        f"Hi Pat{n}" for n in range(6)
    ]
    paper = send(prepared(campaign, channel="direct_mail", columns=["first_name", "email"]), org,
                 django_capture_on_commit_callbacks)  # fmt: skip
    assert paper.state == "sent"
    content = paper.export_file.read().decode()
    assert (
        content.splitlines()[0] == "message,first_name,email" and "Pat5,p5@example.com" in content
    )


def test_reports_match_the_message_rows_and_show_each_entity_its_own(
    campaign, people, org, client, django_capture_on_commit_callbacks
):
    from campaigns.models import Typology

    typology = Typology.objects.create(name="T", entity=org.hq, rules=[{"rule": "blocklist"}])
    Contact.objects.filter(external_id="P5").update(blocklisted=True)
    child = CampaignFactory(name="Child", kind="child", collaborative_type="by_campaign",
                            entity=org.store_a, parent=campaign)  # fmt: skip
    delivery = send(prepared(child, typology=typology), org, django_capture_on_commit_callbacks)
    figures = reports.delivery_figures(delivery)
    assert (figures.targeted, figures.excluded, figures.sent, figures.by_rule) == (
        6, 1, 5, {"blocklist": 1},
    )  # fmt: skip
    assert reports.totals(reports.campaign_deliveries(campaign)).sent == 5  # parent sees child
    rows = {code: f.sent for code, _name, f in reports.by_entity(delivery.messages.all())}
    assert rows == {"STORE_A": 4, "STORE_B": 1}
    client.force_login(org.operator_a)
    page = client.get(reverse("campaigns:delivery", args=[delivery.pk])).content.decode()
    assert "STORE_A" in page and "STORE_B" not in page
    export = client.get(reverse("campaigns:delivery", args=[delivery.pk]), {"export": "csv"})
    assert export.content.decode().splitlines()[1].startswith("STORE_A,")
    history = client.get(
        reverse("campaigns:contact", args=[Contact.objects.get(external_id="P0").pk])
    )
    assert "Spring" in history.content.decode() and "Sent" in history.content.decode()
    client.force_login(org.operator_b)
    assert client.get(reverse("campaigns:delivery", args=[delivery.pk])).status_code == 404


NO_HISTORY = {f"portal-auditlog-content_type-object_id-{name}": "0"
              for name in ("TOTAL_FORMS", "INITIAL_FORMS")}  # fmt: skip


def test_a_one_off_delivery_is_written_prepared_and_sent_from_the_admin(
    campaign, people, org, client, django_capture_on_commit_callbacks, mailoutbox
):
    from campaigns.models import SavedQuery

    query = SavedQuery.objects.create(name="Store A", entity=org.hq, conditions={
        "field": "entity.code", "op": "eq", "value": "STORE_A"})  # fmt: skip
    client.force_login(org.marketer)
    add = reverse("admin:campaigns_delivery_add")
    bad = client.post(add, {"campaign": campaign.pk, "label": "Flash", "channel": "email",
                            "dimension": "contact", "saved_query": query.pk,
                            "subject": "Hi {{ contact.nickname }}", "text_body": "x",
                            "push_data": "{}", "columns": "[]", "export_format": "csv",
                            **NO_HISTORY})  # fmt: skip
    assert bad.status_code == 200 and "unknown variable" in bad.content.decode()
    client.post(add, {"campaign": campaign.pk, "label": "Flash", "channel": "email",
                      "dimension": "contact", "saved_query": query.pk,
                      "subject": "Hi {{ contact.first_name }}", "text_body": "Flash sale",
                      "push_data": "{}", "columns": "[]", "export_format": "csv",
                      **NO_HISTORY})  # fmt: skip
    delivery = Delivery.objects.get(label="Flash")
    run = "admin:campaigns_delivery_run"
    with django_capture_on_commit_callbacks() as preparation_tasks:
        started = client.post(reverse(run, args=[delivery.pk, "start_preparation"]), follow=True)
    assert "Preparation started" in started.content.decode()
    delivery.refresh_from_db()
    assert delivery.state == "preparing"  # in the background, with its progress shown
    page = client.get(reverse("admin:campaigns_delivery_change", args=[delivery.pk]))
    assert "0% · 0 of 1 chunks, 0 of 4 rows" in page.content.decode()
    for task in preparation_tasks:
        task()
    delivery.refresh_from_db()
    assert (delivery.state, delivery.targeted) == ("prepared", 4)
    page = client.get(reverse("admin:campaigns_delivery_change", args=[delivery.pk]))
    assert "100% · 1 of 1 chunks, 4 of 4 rows" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse(run, args=[delivery.pk, "send"]), {"reason": "Flash sale today"})
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(sent(mailoutbox)) == 0
    assert sorted(m.subject for m in mailoutbox) == [f"Hi Pat{n}" for n in range(4)]


def test_a_scheduled_delivery_waits_for_its_moment(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    later = timezone.now() + timedelta(hours=2)
    delivery = send(prepared(campaign, scheduled_at=later), org, django_capture_on_commit_callbacks)
    assert delivery.state == "ready" and not mailoutbox
    assert sending.start_scheduled() == 0
    with (
        time_machine.travel(later + timedelta(minutes=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert sending.start_scheduled() == 1
    delivery.refresh_from_db()
    assert delivery.state == "sent" and len(mailoutbox) == 6


def test_the_package_report_adds_up_its_child_campaigns(
    people, org, make_package, client, django_capture_on_commit_callbacks
):
    package = make_package("by_campaign")
    from packages import services as package_services

    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, submit=True
    ).order
    package_services.apply_order_decision(order=order, approved=True, actor=org.approver,
                                          comment="")  # fmt: skip
    child = package.reference_campaign.children.get()
    send(prepared(child), org, django_capture_on_commit_callbacks)
    totals = reports.totals(reports.package_deliveries(package))
    assert (totals.targeted, totals.sent) == (6, 6)
    client.force_login(org.marketer)
    page = client.get(reverse("admin:packages_package_change", args=[package.pk]))
    assert "1 deliveries · targeted 6 · excluded 0 · sent 6 · failed 0" in page.content.decode()


def test_the_delivery_page_previews_the_message_for_a_chosen_contact(campaign, people, org, client):
    delivery = prepared(campaign, html_body="<p>Hi {{ contact.first_name }} <script>x</script></p>")
    Contact.objects.filter(external_id="P2").update(first_name="<b>Pat</b>")
    client.force_login(org.marketer)
    url = reverse("campaigns:delivery", args=[delivery.pk])
    page = client.get(url, {"preview": "P2"}).content.decode()
    assert "Hello &lt;b&gt;Pat&lt;/b&gt;" in page  # the subject, escaped on the page
    assert 'sandbox srcdoc="&lt;p&gt;Hi &amp;lt;b&amp;gt;Pat' in page  # escaped twice in srcdoc
    assert "No contact “nobody”" in client.get(url, {"preview": "nobody"}).content.decode()


def test_a_multi_level_send_writes_one_email_per_booking_with_its_fields(
    campaign, org, django_capture_on_commit_callbacks, mailoutbox
):
    from datetime import date

    from campaigns.models import Booking

    ann = person(org, "ANN", first_name="Ann")
    for reference, destination in [("R1", "Lisbon"), ("R2", "Oslo")]:
        Booking.objects.create(reference=reference, contact=ann, product="Cruise",
                               destination=destination, booking_date=date(2026, 5, 1))  # fmt: skip
    delivery = Delivery.objects.create(
        campaign=campaign, label="Trips", channel="email", dimension="booking",
        subject="{{ contact.first_name }}, your trip to {{ record.destination }}",
        text_body="Booking {{ record.reference }}",
    )  # fmt: skip
    preparation.prepare(delivery=delivery, **target(dimension="booking"))
    send(delivery, org, django_capture_on_commit_callbacks)
    assert sorted((m.subject, before_footer(m.body)) for m in mailoutbox) == [
        ("Ann, your trip to Lisbon", "Booking R1"),
        ("Ann, your trip to Oslo", "Booking R2"),
    ]


def test_the_admin_runs_only_the_actions_its_buttons_offer(campaign, people, org, client):
    delivery = prepared(campaign)
    client.force_login(org.marketer)
    run = "admin:campaigns_delivery_run"
    client.post(reverse(run, args=[delivery.pk, "cancel"]), {"reason": "Wrong audience"})
    delivery.refresh_from_db()
    response = client.post(reverse(run, args=[delivery.pk, "send"]), {"reason": "x"}, follow=True)
    assert "is not available now" in response.content.decode()
    delivery.refresh_from_db()
    assert delivery.state == "cancelled"


def test_direct_mail_exports_the_chosen_columns_as_xlsx_and_refuses_unknown_ones(
    campaign, people, org, django_capture_on_commit_callbacks
):
    from io import BytesIO

    from django.core.exceptions import ValidationError
    from openpyxl import load_workbook

    bad = Delivery(campaign=campaign, label="Paper", channel="direct_mail",
                   columns=["first_name", "shoe_size"], export_format="pdf")  # fmt: skip
    with pytest.raises(ValidationError) as problems:
        bad.clean()
    assert problems.value.message_dict["columns"][0].startswith("Unknown column: shoe_size.")
    assert "export_format" in problems.value.message_dict
    from campaigns.delivery.services import activity_problems

    found = activity_problems({"channel": "direct_mail", "columns": ["nope"]}, None)
    assert len(found) == 1 and found[0].startswith("columns: Unknown column: nope.")

    paper = prepared(campaign, channel="direct_mail", columns=["last_name", "email"],
                     export_format="xlsx")  # fmt: skip
    paper = send(paper, org, django_capture_on_commit_callbacks)
    assert paper.state == "sent" and paper.export_file.name.endswith(".xlsx")
    sheet = load_workbook(BytesIO(paper.export_file.read())).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("message", "last_name", "email")
    assert sorted(row[2] for row in rows[1:]) == [f"p{n}@example.com" for n in range(6)]
    assert Message.objects.filter(delivery=paper, status="sent").count() == 6


def test_a_chunk_reads_its_recipients_and_their_entities_in_two_queries(
    campaign, people, org, django_assert_num_queries
):
    delivery = prepared(campaign)
    renderer = sending.Renderer(delivery)
    with django_assert_num_queries(2):  # the rows, then every entity they need at once
        recipients = renderer.rows(Message.objects.filter(delivery=delivery).order_by("id"))
    assert {r["entity"]["code"] for r in recipients} == {"STORE_A", "STORE_B"}
