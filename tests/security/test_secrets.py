"""Issue 14, findings 1 and 2: no bearer secret (reset link, approval link) is readable by
anyone but its recipient — not in the outbox row, not in the admin — while the email that is
actually sent carries a working link."""

import re
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from approvals.choices import RequestState
from approvals.models import ApprovalRequest
from packages import services as package_services
from portal import services
from portal.choices import NotificationStatus
from portal.models import Notification
from tests.factories import UserFactory

RESET_LINK = re.compile(r"/accounts/reset/([^/\s\"'<>]+)/([^/\s\"'<>]+)/")
APPROVAL_LINK = re.compile(r"/approvals/link/([^/\s\"'<>]+)/")
FAILING = "tests.support.FailingEmailBackend"


@pytest.fixture
def boss(db):
    return UserFactory(username="boss", is_superuser=True, is_staff=True)


@pytest.fixture
def submitted_order(make_package, form_campaign, org, valid_values):
    package = make_package(campaign=form_campaign)
    order = package_services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    ).order
    return order, ApprovalRequest.objects.for_object(order).get()


def stored_text(notification: Notification) -> str:
    """Every value the outbox row holds, as the database returns it."""
    row = Notification.objects.filter(pk=notification.pk).values().get()
    return " ".join(str(value) for value in row.values())


def what_the_admin_shows(user, notification: Notification) -> str:
    client = Client()
    client.force_login(user)
    pages = [
        client.get(reverse("admin:portal_notification_changelist")),
        client.get(reverse("admin:portal_notification_change", args=[notification.pk])),
    ]
    assert all(page.status_code == 200 for page in pages)
    return " ".join(page.content.decode() for page in pages)


def reset_password_by_link(path: str, password: str) -> None:
    client = Client()
    form_page = client.get(path, follow=True)
    assert form_page.redirect_chain, "a valid reset link redirects to its set-password form"
    set_password_url = form_page.redirect_chain[-1][0]
    response = client.post(set_password_url, {"new_password1": password, "new_password2": password})
    assert response.status_code == 302 and "/reset/done/" in response["Location"]


def test_no_one_but_the_recipient_can_read_a_password_reset_link(
    org, boss, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("password_reset"), {"email": boss.email})
    notification = Notification.objects.get(kind="password_reset")
    readable = stored_text(notification)
    for reader in (org.approver, org.marketer):
        readable += what_the_admin_shows(reader, notification)
    assert "/accounts/reset/" in readable  # the row and the admin show the email's shape…
    for _uid, token in RESET_LINK.findall(readable):
        # …but nothing in them is a token that would let the reader take the account over
        assert not default_token_generator.check_token(boss, token)
    (sent,) = mail.outbox
    _uid, sent_token = RESET_LINK.search(sent.body).groups()
    assert default_token_generator.check_token(boss, sent_token)
    assert sent_token not in readable


def test_the_reset_email_actually_sent_works(boss, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("password_reset"), {"email": boss.email})
    (sent,) = mail.outbox
    assert sent.to == [boss.email]
    reset_password_by_link(RESET_LINK.search(sent.body).group(0), "A-new-Passw0rd!")
    boss.refresh_from_db()
    assert boss.check_password("A-new-Passw0rd!")


def test_a_failed_reset_email_resent_from_the_admin_carries_a_fresh_working_link(
    org, boss, client, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = FAILING
    settings.NOTIFICATION_MAX_ATTEMPTS = 1
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("password_reset"), {"email": boss.email})
    notification = Notification.objects.get(kind="password_reset")
    assert notification.status == NotificationStatus.FAILED
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    admin = Client()
    admin.force_login(org.marketer)
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(
            reverse("admin:portal_notification_changelist"),
            {"action": "resend", "_selected_action": [notification.pk]},
        )
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT
    (sent,) = mail.outbox
    reset_password_by_link(RESET_LINK.search(sent.body).group(0), "Res3nt-and-working")
    boss.refresh_from_db()
    assert boss.check_password("Res3nt-and-working")


def test_a_reset_email_is_not_sent_once_the_account_changed_its_address(
    boss, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("password_reset"), {"email": boss.email})
    notification = Notification.objects.get(kind="password_reset")
    get_user_model().objects.filter(pk=boss.pk).update(email="boss-new@example.com")
    outcome = services.deliver_notification(notification_id=notification.pk)
    notification.refresh_from_db()
    assert outcome.status == "failed" and notification.status == NotificationStatus.FAILED
    assert mail.outbox == []


def test_a_marketer_cannot_take_the_approvers_link_from_the_admin(submitted_order, org):
    _order, request = submitted_order
    notification = Notification.objects.get(kind="approval_request", recipient=org.approver)
    readable = stored_text(notification) + what_the_admin_shows(org.marketer, notification)
    assert "/approvals/link/" in readable
    marketer = Client()
    marketer.force_login(org.marketer)
    for token in set(APPROVAL_LINK.findall(readable)):
        marketer.post(reverse("approvals:link", args=[token]), {"decision": "approve"})
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_the_approvers_email_actually_sent_carries_a_working_link(submitted_order, org):
    _order, request = submitted_order
    notification = Notification.objects.get(kind="approval_request", recipient=org.approver)
    assert services.deliver_notification(notification_id=notification.pk).status == "sent"
    (sent,) = mail.outbox
    assert sent.to == [org.approver.email]
    (html, _mimetype) = sent.alternatives[0]
    token = APPROVAL_LINK.search(sent.body).group(1)
    assert f"/approvals/link/{token}/" in html
    assert token not in stored_text(notification)
    response = Client().post(
        reverse("approvals:link", args=[token]), {"decision": "approve", "comment": "OK"}
    )
    assert response.status_code == 200
    request.refresh_from_db()
    assert (request.state, request.decided_by) == (RequestState.APPROVED, org.approver)


def test_links_stored_before_sealing_are_sealed_by_the_migrations(submitted_order, org, boss):
    """Rows written by the old code (a live token in the text) lose it on migrate, and are
    still sent with a working link."""
    from approvals import services as approvals
    from approvals.models import ApprovalLink

    _order, request = submitted_order
    link = ApprovalLink.objects.get(request=request, approver=org.approver)
    approval_token = approvals.link_token(link)
    approval_url = approvals.link_url(approval_token)
    reset_token = default_token_generator.make_token(boss)
    reset_url = f"http://127.0.0.1:8000/accounts/reset/{uid_of(boss)}/{reset_token}/"
    legacy = [
        services.queue_email(
            to=org.approver.email,
            recipient=org.approver,
            subject="Decide",
            kind="approval_request",
            body_text=f"Open {approval_url}",
            body_html=f'<a href="{approval_url}">Open</a>',
        ),
        services.queue_email(
            to=boss.email,
            recipient=boss,
            subject="Reset",
            kind="password_reset",
            body_text=f"Choose a new password: {reset_url}",
        ),
    ]
    import_module("portal.migrations.0003_seal_legacy_reset_links").seal_reset_links(apps, None)
    import_module("approvals.migrations.0003_seal_legacy_link_notifications").seal_approval_links(
        apps, None
    )
    for notification in legacy:
        readable = stored_text(notification)
        assert approval_token not in readable and reset_token not in readable
        assert services.deliver_notification(notification_id=notification.pk).status == "sent"
    approval_mail, reset_mail = mail.outbox
    sent_token = APPROVAL_LINK.search(approval_mail.body).group(1)
    assert approvals.resolve_link(sent_token) == link
    reset_password_by_link(RESET_LINK.search(reset_mail.body).group(0), "Migrated-and-w0rking")
    boss.refresh_from_db()
    assert boss.check_password("Migrated-and-w0rking")


def uid_of(user) -> str:
    return urlsafe_base64_encode(force_bytes(user.pk))
