"""Engagement tracking: events, signed click redirects, the open pixel, machine flagging."""

import re

import pytest

from campaigns.engagement import tracking
from campaigns.engagement.events import record_event
from campaigns.models import AgentClass, Delivery, Event, EventKind, Message
from tests.campaigns.test_deliveries import person
from tests.campaigns.test_engagement import prepared
from tests.campaigns.test_sending import send


@pytest.fixture
def people(org):
    return [person(org, f"T{n}", first_name=f"Tess{n}") for n in range(3)]


def test_record_event_copies_the_message_delivery_and_entity_and_reads_kind_names(
    campaign, people, settings
):
    delivery = prepared(campaign)
    message = Message.objects.filter(delivery=delivery).first()
    event = record_event(message, "bounce_hard", detail="550 5.1.1 no such user", ip="192.0.2.1")
    event.refresh_from_db()
    assert (event.kind, event.delivery_id, event.entity_id) == (
        EventKind.BOUNCE_HARD,
        delivery.pk,
        message.entity_id,
    )
    assert event.ip is None  # no IP unless ENGAGEMENT_STORE_IP
    settings.ENGAGEMENT_STORE_IP = True
    assert record_event(message, EventKind.OPEN, ip="192.0.2.1").ip == "192.0.2.1"


def test_a_provider_event_is_recorded_once(campaign, people):
    message = Message.objects.filter(delivery=prepared(campaign)).first()
    assert record_event(message, "complaint", ref="sns-1") is not None
    assert record_event(message, "complaint", ref="sns-1") is None
    assert Event.objects.filter(kind=EventKind.COMPLAINT).count() == 1


def test_an_unknown_kind_is_refused(campaign, people):
    message = Message.objects.filter(delivery=prepared(campaign)).first()
    with pytest.raises(ValueError):
        record_event(message, "opened-twice")


def test_deleting_a_delivery_deletes_its_events(campaign, people):
    delivery = prepared(campaign)
    record_event(Message.objects.filter(delivery=delivery).first(), "delivered")
    Delivery.objects.filter(pk=delivery.pk).delete()
    assert not Event.objects.exists()


# --------------------------------------------------------------------------------------------
# Links and pixel in the sent email; the endpoints
# --------------------------------------------------------------------------------------------

HTML = (
    "<html><body><p>Dear {{ contact.first_name }}</p>"
    '<a href="https://shop.example/spring">Shop</a> '
    '<a href="https://shop.example/p?id={{ contact.first_name }}">Yours</a> '
    "<a href='https://blog.example/post'>Blog</a> "
    '<a href="mailto:help@example.com">Help</a></body></html>'
)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


@pytest.fixture(autouse=True)
def _unbuffered(settings):
    settings.ENGAGEMENT_BUFFER_MS = 0
    settings.ENGAGEMENT_MACHINE_CLICK_SECONDS = 0
    tracking._LINKS.clear()


def html_of(email):
    return email.alternatives[0][0]


def emails_of(campaign, org, capture, mailoutbox, **fields):
    delivery = prepared(campaign, html_body=HTML, **fields)
    send(delivery, org, capture)
    return Delivery.objects.get(pk=delivery.pk), sorted(mailoutbox, key=lambda m: m.to)


def click_urls(html):
    return re.findall(r"""href=["'](https?://[^"']+/t/c/[^"']+)["']""", html)


def pixel_url(html):
    return re.search(r'<img src="(https?://[^"]+/t/o/[^"]+)"', html).group(1)


def test_links_present_in_the_template_become_signed_redirects_and_a_pixel_is_added(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    delivery, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    assert delivery.tracked_links == ["https://shop.example/spring", "https://blog.example/post"]
    html = html_of(emails[0])
    assert len(click_urls(html)) == 2
    assert "https://shop.example/p?id=Tess0" in html  # built by the template: not tracked
    assert "mailto:help@example.com" in html
    assert "https://shop.example/spring" not in html
    assert "/unsubscribe/" in html  # the compliance footer's links stay direct
    assert pixel_url(html).endswith(".gif")
    assert html.index(pixel_url(html)) < html.index("</body>")


def test_a_click_redirects_to_its_link_and_records_a_human_click(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client
):
    delivery, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    url = click_urls(html_of(emails[0]))[1]
    response = client.get(url.split("://", 1)[1].partition("/")[2].join(["/", ""]),
                          HTTP_USER_AGENT=BROWSER)  # fmt: skip
    assert response.status_code == 302
    assert response["Location"] == "https://blog.example/post"
    event = Event.objects.get()
    message = Message.objects.get(delivery=delivery, address=emails[0].to[0])
    assert (event.kind, event.message_id, event.delivery_id, event.link, event.machine) == (
        EventKind.CLICK,
        message.pk,
        delivery.pk,
        1,
        False,
    )
    assert event.agent == AgentClass.BROWSER and event.entity_id == message.contact.entity_id
    assert event.ip is None


def path(url):
    return "/" + url.split("://", 1)[1].partition("/")[2]


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("-", "-9", 1),  # another message id, same signature
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the signature
        lambda t: t.rsplit("-", 2)[0] + "-7-" + t.rsplit("-", 1)[1],  # another link index
        lambda t: "1-1-1-0-" + "0" * 24,
        lambda t: "https://evil.example/",
    ],
)
def test_a_tampered_click_token_answers_404_and_records_nothing(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client, change
):
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    url = path(click_urls(html_of(emails[0]))[0])
    token = url.rpartition("/")[2]
    response = client.get(f"/t/c/{change(token)}", HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 404
    assert "Location" not in response
    assert not Event.objects.exists()


def test_a_link_index_beyond_the_frozen_list_answers_404_even_when_signed(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client
):
    delivery, _ = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    message = Message.objects.filter(delivery=delivery).first()
    token = tracking.click_token(message.pk, delivery.pk, 5, 0)
    assert client.get(f"/t/c/{token}").status_code == 404


@pytest.mark.parametrize(
    ("agent", "method", "klass"),
    [
        ("Mozilla/5.0", "get", AgentClass.APPLE_PROXY),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "get", AgentClass.SCANNER),
        ("python-requests/2.32", "get", AgentClass.BOT),
        ("", "get", AgentClass.BOT),
        (BROWSER, "head", AgentClass.BROWSER),
    ],
)
def test_machine_opens_and_clicks_are_flagged(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client, agent,
    method, klass,
):  # fmt: skip
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    html = html_of(emails[0])
    call = getattr(client, method)
    assert call(path(click_urls(html)[0]), HTTP_USER_AGENT=agent).status_code == 302
    assert call(path(pixel_url(html)), HTTP_USER_AGENT=agent).status_code == 200
    events = list(Event.objects.order_by("kind"))
    assert [(e.kind, e.machine, e.agent) for e in events] == [
        (EventKind.OPEN, True, klass),
        (EventKind.CLICK, True, klass),
    ]


def test_a_click_within_seconds_of_the_send_is_a_machines(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client, settings
):
    settings.ENGAGEMENT_MACHINE_CLICK_SECONDS = 30
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    html = html_of(emails[0])
    client.get(path(click_urls(html)[0]), HTTP_USER_AGENT=BROWSER)
    client.get(path(pixel_url(html)), HTTP_USER_AGENT=BROWSER)  # opens are not timed
    assert dict(Event.objects.values_list("kind", "machine")) == {
        EventKind.CLICK: True,
        EventKind.OPEN: False,
    }


def test_the_pixel_is_a_gif_recording_a_human_open_from_a_mail_client(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client
):
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    response = client.get(path(pixel_url(html_of(emails[0]))),
                          HTTP_USER_AGENT="Mozilla/5.0 (Windows) Thunderbird/128.0")  # fmt: skip
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response.content.startswith(b"GIF89a") and "no-store" in response["Cache-Control"]
    event = Event.objects.get()
    assert (event.kind, event.machine, event.agent) == (
        EventKind.OPEN,
        False,
        AgentClass.MAIL_CLIENT,
    )
    assert client.get("/t/o/1-1-1-AAAAAAAAAAAAAAAA.gif").status_code == 404


def test_each_kind_of_tracking_can_be_switched_off(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox,
                                 track_opens=False, track_clicks=False)  # fmt: skip
    html = html_of(emails[0])
    assert "/t/o/" not in html and "/t/c/" not in html
    assert 'href="https://shop.example/spring"' in html


def test_the_ip_address_is_stored_only_when_the_setting_is_on(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, client, settings
):
    settings.ENGAGEMENT_STORE_IP = True
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    client.get(path(pixel_url(html_of(emails[0]))), HTTP_USER_AGENT=BROWSER,
               REMOTE_ADDR="198.51.100.7")  # fmt: skip
    assert Event.objects.get().ip == "198.51.100.7"


def test_the_wsgi_layer_answers_before_django_and_the_buffer_writes_on_flush(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.ENGAGEMENT_BUFFER_MS = 60_000
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox)
    inner = []
    app = tracking.TrackingMiddleware(lambda environ, start: inner.append(environ) or [b""])
    statuses = []

    def call(url, method="GET"):
        environ = {"PATH_INFO": path(url), "REQUEST_METHOD": method,
                   "HTTP_USER_AGENT": BROWSER, "REMOTE_ADDR": "198.51.100.7"}  # fmt: skip
        body = b"".join(app(environ, lambda status, headers: statuses.append((status, headers))))
        return statuses[-1], body

    (status, headers), _ = call(click_urls(html_of(emails[0]))[0])
    assert status == "302 Found" and ("Location", "https://shop.example/spring") in headers
    (status, _), body = call(pixel_url(html_of(emails[1])))
    assert status == "200 OK" and body.startswith(b"GIF89a")
    (status, _), _ = call("https://x/t/c/1-2-3-4-nope")
    assert status == "404 Not Found"
    call("https://x/admin/")
    assert len(inner) == 1  # everything else goes to Django
    assert not Event.objects.exists()  # buffered
    assert tracking.flush() == 2
    assert Event.objects.count() == 2 and tracking.flush() == 0


def test_a_workflow_delivery_activity_refuses_a_switch_that_is_not_a_boolean():
    from campaigns.delivery.services import activity_problems

    settings = {"channel": "sms", "text_body": "Hi", "track_clicks": "no"}
    assert activity_problems(settings, None) == ["track_clicks must be true or false"]
    assert activity_problems({**settings, "track_clicks": False}, None) == []


def test_transactional_emails_are_not_tracked(
    campaign, people, org, django_capture_on_commit_callbacks, mailoutbox
):
    from campaigns.models import Typology

    typology = Typology.objects.create(name="Orders", entity=org.hq, purpose="transactional")
    _, emails = emails_of(campaign, org, django_capture_on_commit_callbacks, mailoutbox,
                          typology=typology)  # fmt: skip
    html = html_of(emails[0])
    assert "/t/o/" not in html and "/t/c/" not in html


# --------------------------------------------------------------------------------------------
# The buffer: bounded, and no flush cut off at exit
# --------------------------------------------------------------------------------------------


class Recording(tracking.Buffer):
    """A buffer whose writes are recorded (slowly: a flush takes ``pause`` seconds)."""

    def __init__(self, pause=0.0):
        super().__init__()
        self.written, self.pause = [], pause

    def write(self, hits):
        import time

        time.sleep(self.pause)
        self.written.extend(hits)
        return len(hits)


def a_hit(n):
    return (n, 1, 2, None, 1_700_000_000.0 + n, 1, False, None)


def test_the_buffer_is_written_as_soon_as_its_maximum_waits(settings):
    import time

    settings.ENGAGEMENT_BUFFER_MS = 60_000  # the timer alone would wait a minute
    settings.ENGAGEMENT_BUFFER_MAX = 3
    buffer = Recording()
    for n in range(2):
        buffer.add(a_hit(n))
    time.sleep(0.2)
    assert buffer.written == []
    buffer.add(a_hit(2))
    deadline = time.time() + 5
    while len(buffer.written) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert [hit[0] for hit in buffer.written] == [0, 1, 2]


def test_a_flush_at_exit_waits_for_the_flush_under_way(settings):
    import threading
    import time

    settings.ENGAGEMENT_BUFFER_MS = 60_000
    buffer = Recording(pause=0.3)
    buffer.add(a_hit(1))
    under_way = threading.Thread(target=buffer.flush)  # the background flush, writing
    under_way.start()
    time.sleep(0.05)
    buffer.add(a_hit(2))  # answered meanwhile
    assert buffer.flush() == 1  # at exit: returns once both are written
    assert sorted(hit[0] for hit in buffer.written) == [1, 2]
    under_way.join()


def test_a_forked_worker_starts_with_an_empty_buffer_and_no_thread(settings):
    settings.ENGAGEMENT_BUFFER_MS = 60_000
    buffer = Recording()
    buffer.add(a_hit(1))
    assert buffer.thread is not None
    buffer.forked()
    assert (buffer.hits, buffer.thread) == ([], None)
