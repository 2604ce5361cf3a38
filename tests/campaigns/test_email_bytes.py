"""The email provider writes each message's bytes itself: they must be Django's bytes."""

import re
from unittest import mock

import pytest
from django.core.mail import EmailMultiAlternatives

from campaigns.delivery import providers
from campaigns.delivery.providers import EmailProvider, Rendered

ID = {"Message-ID": "<d1.m1@x>"}
CASES = [
    Rendered(1, "a@b.com", "Hello Fay", "Dear Fay,\nbye\n",
             headers={**ID, "X-Portal-Delivery": "1"}),
    Rendered(1, "a@b.com", "Héllo Fäy", "Dèar\r\nline2", reply_to="r@x.com",
             sender="Märketing <m@x.com>", headers=ID),
    Rendered(1, "a@b.com", "", "", headers=ID),
    Rendered(1, "a@b.com", "S" * 120, "x",
             headers={**ID, "List-Unsubscribe": "<https://example.com/u/" + "a" * 100 + ">"}),
    Rendered(1, "a@b.com", "Hi", "text é\n\n", html="<p>é</p>\n<b>x</b>", headers=ID),
    Rendered(1, "Fäy <fay@b.com>", "Hi\tthere", "t\u2028u\x0bv", headers=ID),
]  # fmt: skip


def django_bytes(m):
    email = EmailMultiAlternatives(
        subject=m.subject, body=m.text, from_email=m.sender or "Marketing <marketing@localhost>",
        to=[m.address], reply_to=[m.reply_to] if m.reply_to else None, headers=m.headers,
    )  # fmt: skip
    if m.html:
        email.attach_alternative(m.html, "text/html")
    return email.message().as_bytes(linesep="\r\n")


@pytest.mark.parametrize("message", CASES)
def test_the_bytes_written_are_djangos(message, settings):
    settings.DELIVERY_SENDER = "Marketing <marketing@localhost>"
    expected = django_bytes(message)
    date = re.search(rb"Date: (.*)\r\n", expected).group(1).decode()
    boundary = re.search(rb'boundary="([^"]+)"', expected)
    with (
        mock.patch.object(providers, "_date", lambda: date),
        mock.patch.object(providers, "_boundary", lambda content: boundary.group(1)),
    ):
        assert EmailProvider().build(message) == expected


def test_a_body_with_a_line_over_998_bytes_is_left_to_django():
    assert EmailProvider().build(Rendered(1, "a@b.com", "Hi", "x" * 1200, headers=ID)) is None
