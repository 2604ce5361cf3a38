"""Pressure and capacity at send: a rule counts what other deliveries sent or are sending,
and runs again when a send starts, so two deliveries prepared before either is sent never
give a contact more than the rule allows; the contacts excluded then are on the report."""

from collections import Counter

import pytest

from campaigns.delivery import preparation, reports, sending
from campaigns.models import Contact, Delivery, Message, Typology
from portal.models import AuditLog
from tests.campaigns.test_deliveries import target
from tests.support import confirm_at_the_same_moment

ONE_A_WEEK = [{"rule": "pressure", "max": 1, "days": 7}]


@pytest.fixture
def overlap(org):
    """Two audiences of 150 that share 100 contacts: French and English speakers (C0-C149),
    English and German speakers (C50-C199)."""
    return Contact.objects.bulk_create(
        [Contact(external_id=f"C{n}", email=f"c{n}@example.com", email_consent=True,
                 entity=org.store_a, language="fr" if n < 50 else "en" if n < 150 else "de")
         for n in range(200)]
    )  # fmt: skip


def make(campaign, label, conditions, rules, run_key, **fields):
    rule_set = Typology.objects.create(name=label, entity=campaign.entity, rules=rules)
    delivery = Delivery.objects.create(
        campaign=campaign, label=label, channel="email", typology=rule_set,
        subject=label + " {{ contact.external_id }}", text_body="Hello", **fields,
    )  # fmt: skip
    return preparation.prepare(delivery=delivery, **target(run_key, conditions=conditions))


FIRST_AUDIENCE = {"field": "language", "op": "in", "value": ["fr", "en"]}
SECOND_AUDIENCE = {"field": "language", "op": "in", "value": ["en", "de"]}


def per_address(outbox):
    return Counter(address for m in outbox for address in m.to)


def test_two_deliveries_prepared_before_either_is_sent_give_each_contact_one_message(
    campaign, org, overlap, django_capture_on_commit_callbacks, mailoutbox
):
    first = make(campaign, "First", FIRST_AUDIENCE, ONE_A_WEEK, "a")
    second = make(campaign, "Second", SECOND_AUDIENCE, ONE_A_WEEK, "b")
    # Prepared side by side, neither excludes anyone: only a send start counts.
    assert (first.exclusions, second.exclusions) == ({"pressure": 0}, {"pressure": 0})
    for delivery in (first, second):
        with django_capture_on_commit_callbacks(execute=True):
            sending.confirm(delivery=delivery, actor=org.marketer)
    counts = per_address(mailoutbox)
    assert len(counts) == 200 and set(counts.values()) == {1}
    second.refresh_from_db()
    assert second.state == "sent" and second.exclusions == {"pressure": 100}
    figures = reports.delivery_figures(second)
    assert (figures.targeted, figures.sent, figures.by_rule) == (150, 50, {"pressure": 100})
    shared = {c.pk for c in overlap[50:150]}
    excluded = set(Message.objects.filter(delivery=second, rule="pressure")
                   .values_list("contact_id", flat=True))  # fmt: skip
    assert excluded == shared
    entry = AuditLog.objects.for_object(second).get(action="excluded_at_send")
    assert entry.extra == {"exclusions": {"pressure": 100}}


def test_a_send_start_counts_the_messages_another_send_has_not_sent_yet(
    campaign, org, overlap, django_capture_on_commit_callbacks, mailoutbox
):
    first = make(campaign, "First", FIRST_AUDIENCE, ONE_A_WEEK, "a")
    second = make(campaign, "Second", SECOND_AUDIENCE, ONE_A_WEEK, "b")
    with django_capture_on_commit_callbacks() as first_chunks:  # started, nothing sent yet
        sending.confirm(delivery=first, actor=org.marketer)
    with django_capture_on_commit_callbacks(execute=True):
        sending.confirm(delivery=second, actor=org.marketer)
    for task in first_chunks:
        task()
    counts = per_address(mailoutbox)
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert Message.objects.filter(delivery=second, rule="pressure").count() == 100


def test_a_pressure_rule_of_two_lets_the_second_message_through(
    campaign, org, overlap, django_capture_on_commit_callbacks, mailoutbox
):
    two = [{"rule": "pressure", "max": 2, "days": 7}]
    first = make(campaign, "First", FIRST_AUDIENCE, two, "a")
    second = make(campaign, "Second", SECOND_AUDIENCE, two, "b")
    for delivery in (first, second):
        with django_capture_on_commit_callbacks(execute=True):
            sending.confirm(delivery=delivery, actor=org.marketer)
    assert Counter(per_address(mailoutbox).values()) == {1: 100, 2: 100}


def test_capacity_per_day_counts_what_another_send_is_sending(
    campaign, org, overlap, django_capture_on_commit_callbacks, mailoutbox
):
    cap = [{"rule": "capacity", "max": 200, "per": "day"}]
    first = make(campaign, "First", FIRST_AUDIENCE, cap, "a")
    second = make(campaign, "Second", SECOND_AUDIENCE, cap, "b")
    assert second.exclusions == {"capacity": 0}  # 150 each: within 200 at preparation
    with django_capture_on_commit_callbacks() as first_chunks:
        sending.confirm(delivery=first, actor=org.marketer)
    with django_capture_on_commit_callbacks(execute=True):
        sending.confirm(delivery=second, actor=org.marketer)
    for task in first_chunks:
        task()
    assert len(mailoutbox) == 200
    second.refresh_from_db()
    assert second.exclusions == {"capacity": 100}
    assert reports.delivery_figures(second).by_rule == {"capacity": 100}


@pytest.mark.django_db(transaction=True)
def test_two_sends_starting_at_the_same_moment_see_each_other(campaign, org, overlap, monkeypatch):
    """Each start is held inside its transaction for a while after counting; without the
    lock both would count nothing of the other and send to the 100 shared contacts."""
    first = make(campaign, "First", FIRST_AUDIENCE, ONE_A_WEEK, "a")
    second = make(campaign, "Second", SECOND_AUDIENCE, ONE_A_WEEK, "b")
    monkeypatch.setattr(sending, "enqueue_chunks", lambda delivery_id: 0)  # count only
    # each start held 0.5 s after counting: a long UPDATE on a big delivery
    errors = confirm_at_the_same_moment([first, second], monkeypatch, timeout=30)
    assert errors == []
    assert set(Delivery.objects.values_list("state", flat=True)) == {"sending"}
    excluded = Message.objects.filter(rule="pressure").values_list("delivery_id", flat=True)
    # Whichever started second excluded the 100 shared contacts; the first none.
    assert sorted(Counter(excluded).values()) == [100]
    on_their_way = Message.objects.filter(status="pending").values_list("contact_id", flat=True)
    assert set(Counter(on_their_way).values()) == {1} and len(on_their_way) == 200
