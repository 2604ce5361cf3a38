"""Engagement reports: the figures add up to the events, at every level, and a local entity
sees only its own contacts' figures."""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.delivery import reports
from campaigns.engagement import services
from campaigns.engagement.events import record_event
from campaigns.models import Delivery, Message
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_engagement import prepared
from tests.campaigns.test_sending import send

HTML = '<html><body><a href="https://shop.example/a">A</a><a href="https://shop.example/b">B</a></body></html>'


@pytest.fixture
def package(make_package, org):
    return make_package("simple", audience=[org.store_a, org.store_b])


@pytest.fixture
def sent_delivery(package, org, django_capture_on_commit_callbacks, mailoutbox):
    """Four messages sent: A1, A2 (Store A), B1, B2 (Store B), and their events."""
    for code, entity in (("A1", org.store_a), ("A2", org.store_a), ("B1", org.store_b),
                         ("B2", org.store_b)):  # fmt: skip
        person(org, code, entity=entity)
    delivery = send(prepared(package.reference_campaign, html_body=HTML), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    m = {msg.contact.external_id: msg for msg in
         Message.objects.filter(delivery=delivery).select_related("contact")}  # fmt: skip
    soon = timezone.now() + timedelta(minutes=5)
    later = soon + timedelta(hours=3)
    record_event(m["A1"], "delivered")
    record_event(m["A1"], "open", at=soon, agent_class="browser")
    record_event(m["A1"], "open", at=later, agent_class="browser")
    record_event(m["A1"], "click", link=0, at=later, agent_class="browser")
    record_event(m["A1"], "click", link=0, at=soon, agent_class="scanner", machine=True)
    record_event(m["A2"], "delivered")
    record_event(m["A2"], "open", at=soon, agent_class="apple_proxy", machine=True)
    record_event(m["A2"], "bounce_soft", detail="452 mailbox full")
    record_event(m["B1"], "bounce_hard", detail="550 no such user")
    record_event(m["B1"], "complaint")
    record_event(m["B2"], "click", link=1, at=soon, agent_class="mobile")  # images off
    services.unsubscribe(message=m["B2"], source="unsubscribe link")
    services.unsubscribe(message=m["B2"], source="unsubscribe link")  # replayed: once
    return Delivery.objects.get(pk=delivery.pk)


def test_delivery_figures_add_up_to_the_events(sent_delivery):
    figures = reports.engagement(sent_delivery)
    assert (figures.sent, figures.delivered, figures.bounced_hard, figures.bounced_soft) == (
        4,
        2,
        1,
        1,
    )
    # A1 opened; B2 clicked without a recorded open; A2's open was Apple's proxy.
    assert (figures.opened, figures.clicked, figures.click_to_open) == (2, 2, 100.0)
    assert (figures.unsubscribed, figures.complaints) == (1, 1)
    assert (figures.machine_opens, figures.machine_clicks) == (1, 1)
    assert figures.open_rate == 50.0 and figures.click_rate == 50.0


def test_entity_rows_add_up_to_the_total(sent_delivery):
    rows = reports.engagement_by_entity(sent_delivery)
    assert [code for code, _name, _row in rows] == ["STORE_A", "STORE_B"]
    total = reports.engagement(sent_delivery)
    for column in reports.ENGAGEMENT_COLUMNS:
        assert sum(getattr(row, column) for *_, row in rows) == getattr(total, column), column
    store_a = rows[0][2]
    assert (store_a.sent, store_a.opened, store_a.clicked, store_a.bounced_soft) == (2, 1, 1, 1)


def test_link_table_and_timeline_count_the_events(sent_delivery):
    links = reports.link_clicks(sent_delivery)
    assert [(r["url"], r["human"], r["clicks"], r["machine"]) for r in links] == [
        ("https://shop.example/a", 1, 2, 1),
        ("https://shop.example/b", 1, 1, 0),
    ]
    timeline = reports.timeline(sent_delivery)
    assert len(timeline["labels"]) == reports.HOURS
    assert (sum(timeline["opens"]), sum(timeline["clicks"]), sum(timeline["machine"])) == (2, 2, 2)
    assert max(range(reports.HOURS), key=lambda n: timeline["opens"][n]) >= 0


def test_campaign_and_package_levels_include_the_delivery(sent_delivery, package):
    campaign = package.reference_campaign
    for deliveries in (reports.campaign_deliveries(campaign), reports.package_deliveries(package)):
        assert reports.engagement(deliveries).opened == 2


def test_csv_has_a_line_per_entity_a_total_and_the_links(sent_delivery):
    rows = list(csv.reader(io.StringIO(reports.engagement_csv(sent_delivery).decode())))
    header = rows[0]
    lines = {row[0]: dict(zip(header, row, strict=False)) for row in rows[1:4]}
    assert lines["TOTAL"]["opened"] == "2" and lines["STORE_B"]["complaints"] == "1"
    assert ["https://shop.example/a", "2", "1", "1"] in rows


# --------------------------------------------------------------------------------------------
# The report page
# --------------------------------------------------------------------------------------------


def url(level, pk):
    return f"/reports/engagement/{level}/{pk}/"


def test_the_central_team_sees_every_entity_of_a_package(client, org, sent_delivery, package):
    client.force_login(org.marketer)
    response = client.get(url("package", package.pk))
    assert response.status_code == 200
    assert [code for code, *_ in response.context["by_entity"]] == ["STORE_A", "STORE_B"]
    assert response.context["figures"].sent == 4
    assert b"engagement-timeline-data" in response.content
    assert b"chart.umd.js" in response.content


def test_a_store_sees_only_its_own_contacts_figures(client, org, sent_delivery, package):
    client.force_login(org.operator_a)
    response = client.get(url("package", package.pk))
    assert response.status_code == 200
    figures = response.context["figures"]
    assert (figures.sent, figures.opened, figures.complaints, figures.unsubscribed) == (2, 1, 0, 0)
    assert [code for code, *_ in response.context["by_entity"]] == ["STORE_A"]
    assert [r["url"] for r in response.context["links"]] == ["https://shop.example/a"]
    exported = client.get(url("package", package.pk) + "?export=csv").content.decode()
    assert "STORE_A" in exported and "STORE_B" not in exported


def test_a_store_cannot_read_another_entity_or_a_central_delivery(client, org, sent_delivery):
    client.force_login(org.operator_a)
    assert client.get(url("entity", org.store_b.pk)).status_code == 404
    assert client.get(url("delivery", sent_delivery.pk)).status_code == 404
    assert client.get(url("nonsense", 1)).status_code == 404
    assert client.get(url("entity", org.store_a.pk)).context["figures"].sent == 2


def test_the_report_page_needs_a_login(client, sent_delivery):
    response = client.get(url("delivery", sent_delivery.pk))
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_delivery_report_is_readable_centrally(client, org, sent_delivery):
    client.force_login(org.marketer)
    response = client.get(url("delivery", sent_delivery.pk))
    assert response.status_code == 200 and response.context["figures"].clicked == 2


def test_the_admin_shows_the_engagement_of_a_delivery_and_of_a_package(
    client, org, sent_delivery, package
):
    from django.urls import reverse

    client.force_login(org.marketer)
    page = client.get(reverse("admin:campaigns_delivery_change", args=[sent_delivery.pk]))
    assert b"opened 2 \xc2\xb7 clicked 2" in page.content
    assert url("delivery", sent_delivery.pk).encode() in page.content
    page = client.get(reverse("admin:packages_package_change", args=[package.pk]))
    assert url("package", package.pk).encode() in page.content


def test_only_the_central_team_reads_events_in_the_admin(client, org, sent_delivery):
    from django.urls import reverse

    changelist = reverse("admin:campaigns_event_changelist")
    client.force_login(org.marketer)
    assert client.get(changelist).status_code == 200
    client.force_login(org.operator_a)
    assert client.get(changelist).status_code in (302, 403)


def test_the_summaries_kept_by_each_write_equal_a_rebuild_from_the_events(sent_delivery):
    from campaigns.engagement.events import rebuild
    from campaigns.models import EngagementHour, MessageEngagement

    def snapshot():
        return (
            sorted(MessageEngagement.objects.values_list("message_id", "entity_id", "seen")),
            sorted(EngagementHour.objects.values_list("entity_id", "hour", "kind", "machine",
                                                      "events")),
        )  # fmt: skip

    kept = snapshot()
    assert rebuild(sent_delivery.pk) == 4
    assert snapshot() == kept


def test_the_entity_rows_added_up_are_the_delivery_figures(sent_delivery):
    added = reports.added_up(reports.engagement_by_entity(sent_delivery))
    assert added.as_dict() == reports.engagement(sent_delivery).as_dict()


# --------------------------------------------------------------------------------------------
# Sent counts kept at send time, click implies open, the chart from the send
# --------------------------------------------------------------------------------------------


def _figures(delivery):
    return [(code, row.as_dict()) for code, _name, row in reports.engagement_by_entity(delivery)]


def test_reports_read_the_sent_counts_kept_by_the_sending_not_the_messages(sent_delivery):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.models import SentBlock

    blocks = SentBlock.objects.filter(delivery_id=sent_delivery.pk)
    assert sum(blocks.values_list("sent", flat=True)) == 4
    with CaptureQueriesContext(connection) as queries:
        figures = reports.engagement(sent_delivery)
        rows = reports.engagement_by_entity(sent_delivery)
    table = Message._meta.db_table
    assert not [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"]]
    assert figures.sent == 4 and [row.sent for *_, row in rows] == [2, 2]
    kept = _figures(sent_delivery)
    blocks.delete()  # a delivery sent before the counts existed: counted from its messages
    assert _figures(sent_delivery) == kept


def test_sent_counts_follow_each_chunk_and_a_chunk_sent_again_counts_once(
    package, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    from campaigns.delivery import sending
    from campaigns.models import SentBlock

    settings.DELIVERY_CHUNK_SIZE = 1
    for n in range(3):
        person(org, f"C{n}", entity=org.store_a if n else org.store_b)
    delivery = send(prepared(package.reference_campaign, html_body=HTML), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    ids = sorted(delivery.messages.values_list("pk", flat=True))
    assert delivery.state == "sent" and len(ids) == 3
    SentBlock.objects.all().delete()
    sending.send_chunk(delivery.pk, ids[0], ids[1])  # a redelivered chunk: counts its blocks
    counted = reports.engagement_by_entity(delivery)
    assert {code: row.sent for code, _name, row in counted} == {"STORE_A": 2, "STORE_B": 1}
    sending.send_chunk(delivery.pk, ids[0], ids[-1])  # again: counted, not added
    assert reports.engagement(delivery).sent == 3 and len(mailoutbox) == 3


def test_a_human_click_counts_as_an_open_and_a_machine_click_does_not(
    package, org, django_capture_on_commit_callbacks, mailoutbox
):
    for code in ("H1", "H2", "M1"):
        person(org, code, entity=org.store_a)
    delivery = send(prepared(package.reference_campaign, html_body=HTML), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    m = {msg.contact.external_id: msg for msg in delivery.messages.select_related("contact")}
    later = timezone.now() + timedelta(hours=1)
    record_event(m["H1"], "click", link=0, at=later, agent_class="browser")  # images blocked
    record_event(m["H1"], "click", link=1, at=later, agent_class="browser")
    record_event(m["H2"], "open", at=later, agent_class="browser")
    record_event(m["M1"], "click", link=0, at=later, agent_class="scanner", machine=True)
    figures = reports.engagement(delivery)
    assert (figures.opened, figures.clicked, figures.machine_clicks) == (2, 1, 1)
    assert figures.click_to_open == 50.0
    assert figures.click_to_open <= 100 and figures.clicked <= figures.opened


def test_the_hourly_chart_starts_at_the_send_hour(
    package, org, django_capture_on_commit_callbacks, mailoutbox
):
    for code in ("A1", "B1"):
        person(org, code, entity=org.store_a if code == "A1" else org.store_b)
    delivery = send(prepared(package.reference_campaign, html_body=HTML), org,
                    django_capture_on_commit_callbacks)  # fmt: skip
    m = {msg.contact.external_id: msg for msg in delivery.messages.select_related("contact")}
    first = min(delivery.messages.values_list("sent_at", flat=True))
    start = first.replace(minute=0, second=0, microsecond=0)
    # Nobody engaged on the first day: the chart still starts at the send.
    record_event(m["A1"], "open", at=start + timedelta(hours=30, minutes=10), agent_class="browser")
    record_event(m["B1"], "click", link=0, at=start + timedelta(hours=50), agent_class="mobile")
    chart = reports.timeline(delivery)
    assert chart["labels"][0] == start.strftime("%m-%d %H:00")
    assert len(chart["labels"]) == reports.HOURS == 72
    assert chart["opens"][30] == 1 and sum(chart["opens"]) == 1
    assert chart["clicks"][50] == 1 and sum(chart["clicks"]) == 1
    store_b = reports.timeline(delivery, entities=[org.store_b])
    assert store_b["labels"][0] == chart["labels"][0]
    assert (sum(store_b["opens"]), store_b["clicks"][50]) == (0, 1)
