"""Finding 7: log-ins (portal and admin) and password resets are throttled.

Log-ins: LOGIN_FAILURE_LIMIT failures for one username, or from one client address, lock that
username or address, even for the right password, until the cool-off has passed or an admin
unlocks it. Password resets: a limit per email address asked for and per client address.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from portal.models import Notification
from tests.factories import PASSWORD, UserFactory

LOCKED = "Logging in is paused"
ATTACKER = "203.0.113.7"
ELSEWHERE = "198.51.100.20"


def log_in(client, username, password, *, address=ATTACKER, url="login"):
    return client.post(
        reverse(url), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def fail(client, username, times, *, address=ATTACKER, url="login"):
    responses = [
        log_in(client, username, "wrong password", address=address, url=url) for _ in range(times)
    ]
    return responses[-1] if responses else None


def is_logged_in(client):
    return "_auth_user_id" in client.session


@pytest.fixture
def limit():
    return settings.AXES_FAILURE_LIMIT


def test_wrong_passwords_below_the_limit_answer_normally(org, client, limit):
    response = fail(client, "operator_a", limit - 1)
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert log_in(client, "operator_a", PASSWORD).status_code == 302
    assert is_logged_in(client)


def test_the_right_password_is_refused_after_too_many_wrong_ones(org, client, limit):
    last = fail(client, "operator_a", limit)
    assert last.status_code == 429
    assert LOCKED in last.content.decode()

    response = log_in(client, "operator_a", PASSWORD)

    assert response.status_code == 429
    page = response.content.decode()
    assert LOCKED in page
    assert "You can try again in 15 minutes" in page
    assert not is_logged_in(client)


def test_the_lock_page_says_when_to_retry(org, client, limit):
    start = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0)
    with time_machine.travel(start, tick=False):
        fail(client, "operator_a", limit)
    with time_machine.travel(start + timedelta(minutes=6), tick=False):
        page = log_in(client, "operator_a", PASSWORD).content.decode()
    assert "try again in 9 minutes, after" in page
    assert "10:15" in page


def test_the_account_is_locked_whatever_the_address(org, client, limit):
    for number in range(limit):
        log_in(client, "operator_a", "wrong password", address=f"192.0.2.{number + 1}")

    response = log_in(client, "operator_a", PASSWORD, address=ELSEWHERE)

    assert response.status_code == 429
    assert not is_logged_in(client)


def test_an_address_is_locked_whatever_the_usernames_it_tries(org, client, limit):
    for number in range(limit):
        log_in(client, f"guess{number}", "wrong password")

    refused = log_in(client, "operator_a", PASSWORD)
    assert refused.status_code == 429
    assert LOCKED in refused.content.decode()
    assert not is_logged_in(client)

    # The same account from another address is not locked: the lock is on the address.
    assert log_in(client, "operator_a", PASSWORD, address=ELSEWHERE).status_code == 302
    assert is_logged_in(client)


def test_the_admin_login_is_throttled_too(org, client, limit):
    last = fail(client, "marketer", limit, url="admin:login")
    assert last.status_code == 429

    response = log_in(client, "marketer", PASSWORD, url="admin:login")

    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert not is_logged_in(client)
    # One counter for both doors: the portal's log-in is locked as well.
    assert log_in(client, "marketer", PASSWORD).status_code == 429


def test_failures_on_the_portal_count_at_the_admin_login(org, client, limit):
    fail(client, "marketer", limit)
    assert log_in(client, "marketer", PASSWORD, url="admin:login").status_code == 429


def test_the_lock_ends_after_the_cool_off(org, client, limit):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fail(client, "operator_a", limit)
    with time_machine.travel(start + settings.AXES_COOLOFF_TIME - timedelta(minutes=1)):
        assert log_in(client, "operator_a", PASSWORD).status_code == 429
    with time_machine.travel(start + settings.AXES_COOLOFF_TIME + timedelta(seconds=5)):
        response = log_in(client, "operator_a", PASSWORD)
    assert response.status_code == 302
    assert is_logged_in(client)


def test_attempts_during_the_lock_do_not_extend_it(org, client, limit):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fail(client, "operator_a", limit)
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        fail(client, "operator_a", 3)
    with time_machine.travel(start + settings.AXES_COOLOFF_TIME + timedelta(seconds=5)):
        assert log_in(client, "operator_a", PASSWORD).status_code == 302


def test_an_admin_unlocks_the_account_in_the_admin(org, client, limit):
    fail(client, "operator_a", limit)
    assert log_in(client, "operator_a", PASSWORD).status_code == 429

    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    admin_client = client.__class__()
    admin_client.force_login(admin)
    attempts = list(AccessAttempt.objects.filter(username="operator_a"))
    assert attempts
    response = admin_client.post(
        reverse("admin:axes_accessattempt_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [attempt.pk for attempt in attempts],
            "post": "yes",
        },
    )
    assert response.status_code == 302

    assert log_in(client, "operator_a", PASSWORD).status_code == 302
    assert is_logged_in(client)


def test_an_admin_unlocks_the_account_with_the_command(org, client, limit):
    fail(client, "operator_a", limit)
    assert log_in(client, "operator_a", PASSWORD, address=ELSEWHERE).status_code == 429

    call_command("axes_reset_username", "operator_a")

    assert log_in(client, "operator_a", PASSWORD, address=ELSEWHERE).status_code == 302


# Password reset ---------------------------------------------------------------------------


def ask_reset(client, email, *, address=ATTACKER):
    return client.post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)


def reset_emails():
    return Notification.objects.filter(kind="password_reset").count()


def test_password_resets_for_one_address_are_throttled(org, client):
    limit = settings.PASSWORD_RESET_LIMIT_PER_ADDRESS
    for number in range(limit):
        # From several client addresses and in any letter case: the email address counts.
        email = org.operator_a.email.upper() if number % 2 else org.operator_a.email
        assert ask_reset(client, email, address=f"192.0.2.{number + 1}").status_code == 302
    assert reset_emails() == limit

    response = ask_reset(client, org.operator_a.email, address=ELSEWHERE)

    assert response.status_code == 429
    assert "Too many reset requests" in response.content.decode()
    assert "You can ask again in" in response.content.decode()
    assert reset_emails() == limit


def test_password_resets_from_one_client_address_are_throttled(org, client):
    limit = settings.PASSWORD_RESET_LIMIT_PER_CLIENT
    for number in range(limit):
        assert ask_reset(client, f"someone{number}@example.com").status_code == 302

    assert ask_reset(client, org.operator_a.email).status_code == 429
    assert reset_emails() == 0
    # Another client may still ask for the same account.
    assert ask_reset(client, org.operator_a.email, address=ELSEWHERE).status_code == 302
    assert reset_emails() == 1


def test_password_resets_are_allowed_again_after_the_window(org, client):
    limit = settings.PASSWORD_RESET_LIMIT_PER_ADDRESS
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(limit):
            ask_reset(client, org.operator_a.email)
        assert ask_reset(client, org.operator_a.email).status_code == 429
    with time_machine.travel(start + timedelta(hours=1, minutes=1), tick=False):
        assert ask_reset(client, org.operator_a.email).status_code == 302
    assert reset_emails() == limit + 1


@pytest.mark.parametrize(
    ("forwarded", "proxies", "expected"),
    [
        ("", 0, "10.0.0.1"),
        ("203.0.113.9", 0, "10.0.0.1"),
        ("203.0.113.9", 1, "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9, 10.0.0.2", 2, "203.0.113.9"),
        ("", 1, "10.0.0.1"),
    ],
)
def test_the_client_address_is_read_behind_trusted_proxies_only(
    rf, settings, forwarded, proxies, expected
):
    from portal.throttling import client_ip

    settings.TRUSTED_PROXY_COUNT = proxies
    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected
