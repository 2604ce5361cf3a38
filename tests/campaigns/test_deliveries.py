"""Deliveries (first part): typology rules with exact counts, idempotent preparation,
multi-level targets, sandboxed personalisation, and the workflow's delivery activity."""

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns import targeting
from campaigns.delivery import preparation, rendering
from campaigns.delivery.services import content_problems, sms_segments
from campaigns.delivery.typology import validate_rules
from campaigns.models import Booking, Contact, Delivery, Message, Quarantine, Typology
from campaigns.workflow import engine
from campaigns.workflow.activities import output_table
from portal import services as portal_services
from portal.exceptions import DomainError
from tests.campaigns.workflow import act, link


def person(org, external_id, **fields):
    defaults = {"entity": org.store_a, "email": f"{external_id.lower()}@example.com",
                "email_consent": True}  # fmt: skip
    return Contact.objects.create(external_id=external_id, **{**defaults, **fields})


@pytest.fixture
def crowd(org):
    """Ten contacts, each caught by at most one rule (in typology order)."""
    person(org, "OK1")
    person(org, "NOCONSENT", email_consent=False)
    person(org, "BLOCKED", blocklisted=True)
    person(org, "BOUNCED", email="bounced@example.com")
    person(org, "NOMAIL", email="")
    person(org, "TWIN", email="ok1@example.com")  # the same address as OK1
    person(org, "PRESSED")
    for n in (2, 3, 4):
        person(org, f"OK{n}")
    Quarantine.objects.create(channel="email", address="bounced@example.com", reason="5.1.1")


def target(run_key="t", dimension="contact", conditions=None):
    """Materialise a target; returns the work table's name, as ``prepare`` takes it."""
    queryset = targeting.target_queryset(dimension, conditions or {})
    targeting.materialise(queryset, dimension=dimension, run_key=run_key, name="target")
    return {"run_key": run_key, "table": "target"}


def sent_before(campaign, contact, times, days_ago=1):
    earlier = Delivery.objects.create(campaign=campaign, label="Earlier", channel="email")
    for n in range(times):
        Message.objects.create(
            delivery=earlier,
            contact=contact,
            secondary_id=n,
            channel="email",
            address=contact.email,
            status="sent",
            sent_at=timezone.now() - timedelta(days=days_ago),
        )


RULES = [{"rule": "consent"}, {"rule": "blocklist"}, {"rule": "quarantine"},
         {"rule": "missing_address"}, {"rule": "duplicates"},
         {"rule": "pressure", "max": 2, "days": 7}]  # fmt: skip


def test_each_typology_rule_excludes_exactly_its_recipients(campaign, crowd, org):
    sent_before(campaign, Contact.objects.get(external_id="PRESSED"), times=2)
    # Two old messages do not count: they are outside the 7-day window.
    sent_before(campaign, Contact.objects.get(external_id="OK2"), times=2, days_ago=30)
    typology = Typology.objects.create(name="Standard", entity=org.hq, rules=RULES)
    delivery = Delivery.objects.create(
        campaign=campaign, label="Spring", channel="email", typology=typology
    )
    delivery = preparation.prepare(delivery=delivery, **target())
    assert delivery.state == "prepared" and delivery.targeted == 10
    assert delivery.exclusions == {
        "consent": 1, "blocklist": 1, "quarantine": 1, "missing_address": 1, "duplicates": 1,
        "pressure": 1,
    }  # fmt: skip
    excluded = dict(
        Message.objects.filter(delivery=delivery, status="excluded").values_list(
            "contact__external_id", "rule"
        )
    )
    assert excluded == {
        "NOCONSENT": "consent", "BLOCKED": "blocklist", "BOUNCED": "quarantine",
        "NOMAIL": "missing_address", "TWIN": "duplicates", "PRESSED": "pressure",
    }  # fmt: skip
    pending = Message.objects.filter(delivery=delivery, status="pending")
    assert set(pending.values_list("contact__external_id", flat=True)) == {
        "OK1",
        "OK2",
        "OK3",
        "OK4",
    }


def test_capacity_keeps_the_first_and_a_control_group_is_held_out_stably(campaign, crowd, org):
    typology = Typology.objects.create(
        name="Capped", entity=org.hq,
        rules=[{"rule": "control_group", "percent": 30}, {"rule": "capacity", "max": 4}],
    )  # fmt: skip
    delivery = Delivery.objects.create(
        campaign=campaign, label="Capped", channel="email", typology=typology
    )
    delivery = preparation.prepare(delivery=delivery, **target())
    held = set(
        Message.objects.filter(delivery=delivery, rule="control_group").values_list(
            "contact_id", flat=True
        )
    )
    expected = {
        pk for pk in Contact.objects.values_list("pk", flat=True)
        if (pk * 2654435761 + delivery.pk * 40503) % 100 < 30
    }  # fmt: skip
    assert held == expected
    pending = list(
        Message.objects.filter(delivery=delivery, status="pending").values_list("id", flat=True)
    )
    assert len(pending) == min(4, 10 - len(held))
    assert delivery.exclusions["capacity"] == 10 - len(held) - len(pending)
    capped = Message.objects.filter(delivery=delivery, rule="capacity").values_list("id", flat=True)
    assert not capped or min(capped) > max(pending)  # the first ones are kept
    again = preparation.prepare(delivery=delivery, **target("t2"))  # prepared again
    assert again.exclusions == delivery.exclusions
    assert Message.objects.filter(delivery=delivery).count() == 10  # never duplicated


def test_pressure_by_category_counts_only_that_category(campaign, crowd, org):
    pressed = Contact.objects.get(external_id="PRESSED")
    sent_before(campaign, pressed, times=3)
    rules = [{"rule": "pressure", "max": 1, "days": 7, "category": "promo"}]
    typology = Typology.objects.create(name="Promo", entity=org.hq, rules=rules)
    news = Delivery.objects.create(
        campaign=campaign, label="News", channel="email", typology=typology, category="news"
    )
    assert preparation.prepare(delivery=news, **target()).exclusions == {"pressure": 0}
    Delivery.objects.filter(label="Earlier").update(category="promo")
    promo = Delivery.objects.create(
        campaign=campaign, label="Promo", channel="email", typology=typology, category="promo"
    )
    assert preparation.prepare(delivery=promo, **target("t2")).exclusions == {"pressure": 1}


def test_a_multi_level_target_gives_one_message_per_booking(campaign, org):
    ann = person(org, "ANN")
    bob = person(org, "BOB")
    for reference, contact in [("R1", ann), ("R2", ann), ("R3", bob)]:
        Booking.objects.create(
            reference=reference, contact=contact, product="Cruise", booking_date=date(2026, 5, 1)
        )
    delivery = Delivery.objects.create(
        campaign=campaign, label="Per booking", channel="email", dimension="booking"
    )
    preparation.prepare(delivery=delivery, **target(dimension="booking"))
    rows = Message.objects.filter(delivery=delivery).values_list(
        "contact__external_id", "secondary_id"
    )
    by_booking = {Booking.objects.get(pk=secondary).reference: who for who, secondary in rows}
    assert by_booking == {"R1": "ANN", "R2": "ANN", "R3": "BOB"}


def test_typology_rules_are_validated_naming_the_rule():
    problems = validate_rules([
        {"rule": "consent"}, {"rule": "pressure", "max": 0, "days": 7}, {"rule": "teleport"},
        {"rule": "capacity", "max": 5, "per": "week"},
    ])  # fmt: skip
    assert any(p.startswith("rules[1] (pressure): max") for p in problems)
    assert any(p.startswith("rules[2]: rule must be one of") for p in problems)
    assert any(p.startswith("rules[3] (capacity): per") for p in problems)
    with pytest.raises(ValidationError):
        Typology(name="Bad", rules=[{"rule": "teleport"}]).clean()


# Personalisation -----------------------------------------------------------------------------

CONTEXT = rendering.sample_context(multi_level=True, perso={"voucher": "LYON10"})


def test_html_is_escaped_and_text_is_not():
    context = {**CONTEXT, "contact": {**CONTEXT["contact"], "first_name": "<b>Zoé</b> & co"}}
    html = rendering.render("<p>Hello {{ contact.first_name }}</p>", html=True, context=context)
    assert html == "<p>Hello &lt;b&gt;Zoé&lt;/b&gt; &amp; co</p>"
    text = rendering.render("Hello {{ contact.first_name }}", html=False, context=context)
    assert text == "Hello <b>Zoé</b> & co"
    assert rendering.render("{{ data.trips }}", html=False, context=CONTEXT) == ""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello {{ contact.nickname }}", "unknown variable"),
        ("Hello {{ customer.first_name }}", "unknown variable"),
        ("{% if %}", "line 1"),
        ("{{ contact.__class__ }}", "not allowed"),
        ("{{ ''.__class__.__mro__ }}", "not allowed"),
        ("{{ cycler.__init__.__globals__ }}", "not allowed"),
        ("{{ contact.first_name.format.__globals__ }}", "not allowed"),
        ("{% for i in range(10**9) %}{% endfor %}", "over budget"),
    ],
)
def test_templates_are_validated_and_sandboxed(source, message):
    problems = rendering.validate_template(source, html=False, context=CONTEXT)
    assert problems and message in problems[0], problems


def test_content_problems_name_the_field_and_sms_segments():
    problems = content_problems(
        channel="email",
        fields={"subject": "Hi {{ contact.first_name }}", "html_body": "{{ record.nope }}"},
        multi_level=True,
        perso={},
    )
    assert list(problems) == ["html_body"]
    assert "subject" in content_problems(channel="email", fields={"text_body": "x"},
                                         multi_level=False, perso={})  # fmt: skip
    assert "record" in content_problems(
        channel="sms", fields={"text_body": "{{ record.destination }}"}, multi_level=False,
        perso={},
    )["text_body"][0]  # fmt: skip
    assert (sms_segments("x" * 160), sms_segments("x" * 161), sms_segments("x" * 307)) == (1, 2, 3)


def test_a_delivery_with_an_unknown_variable_is_refused_on_save(campaign):
    delivery = Delivery(
        campaign=campaign, label="Bad", channel="email", subject="Hi {{ contact.nickname }}",
        text_body="Body",
    )  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        delivery.clean()
    assert "subject" in caught.value.message_dict


# The workflow's delivery activity -------------------------------------------------------------


def test_a_real_run_sends_its_delivery_once_and_waits_for_it(
    campaign, crowd, org, django_capture_on_commit_callbacks, mailoutbox
):
    typology = Typology.objects.create(name="Standard", entity=org.hq, rules=RULES)
    q = act(campaign, "q", "query", conditions={})
    send = act(campaign, "send", "delivery", channel="email", typology=typology.pk,
               subject="Hello {{ contact.external_id }}", text_body="Spring is here.")  # fmt: skip
    end = act(campaign, "end", "end")
    link(campaign, q, send)
    link(campaign, send, end)
    portal_services.transition(obj=campaign, name="mark_ready")
    with django_capture_on_commit_callbacks(execute=True):
        run = engine.start_run(campaign=campaign, actor=org.marketer)
    run.refresh_from_db()
    delivery = Delivery.objects.get(run=run, activity=send)
    assert (delivery.state, delivery.targeted, run.state) == ("sent", 10, "completed")
    assert sum(delivery.exclusions.values()) == 5  # no pressure history in this test
    assert sorted(m.subject for m in mailoutbox) == [f"Hello OK{n}" for n in range(1, 5)] + [
        "Hello PRESSED"
    ]
    # The output carries the whole population; a sent delivery cannot be prepared again.
    out = output_table(send, "out")
    assert targeting.work_table(run.run_key, out).count() == 10
    with pytest.raises(DomainError, match="while it is sent"):
        preparation.prepare(delivery=delivery, run_key=run.run_key, table=out)
    assert Message.objects.filter(delivery=delivery).count() == 10
    bad = act(campaign, "bad", "delivery", channel="email", subject="{{ oops }}", text_body="x")
    link(campaign, send, bad)
    assert any("unknown variable" in p for p in engine.validate_workflow(campaign))


def test_the_admin_shows_figures_and_messages_of_visible_deliveries(campaign, crowd, org, client):
    from django.urls import reverse

    typology = Typology.objects.create(name="Standard", entity=org.hq, rules=RULES)
    delivery = Delivery.objects.create(
        campaign=campaign, label="Spring", channel="email", typology=typology
    )
    preparation.prepare(delivery=delivery, **target())
    client.force_login(org.marketer)
    page = client.get(reverse("admin:campaigns_delivery_change", args=[delivery.pk]))
    assert page.status_code == 200
    assert "pending: 5" in page.content.decode() and "excluded: 5" in page.content.decode()
    listing = client.get(
        reverse("admin:campaigns_message_changelist"),
        {"delivery__id__exact": delivery.pk, "rule__exact": "quarantine"},
    )
    assert "bounced@example.com" in listing.content.decode()
    assert client.get(reverse("admin:campaigns_typology_changelist")).status_code == 200
