"""The whole collaborative story through the web, as people would live it."""

import re

from django.test import Client
from django.urls import reverse

from approvals.models import ApprovalRequest
from campaigns.models import Campaign
from packages.choices import OrderState
from packages.models import Order
from portal.models import AuditLog, Notification
from tests.factories import FieldFactory


def test_publish_order_approve_by_email_child_campaign_personalise(
    org, make_package, django_capture_on_commit_callbacks, mailoutbox
):
    from tests.factories import CampaignFactory

    # The central marketer builds a by-campaign reference campaign and publishes its package.
    parent = CampaignFactory(
        name="Welcome journey", collaborative_type="by_campaign", entity=org.hq
    )
    FieldFactory(campaign=parent, name="signature", label="Signature", required=True)
    marketer = Client()
    marketer.force_login(org.marketer)
    package = make_package(campaign=parent, audience=[org.store_a, org.store_b], publish=False)
    with django_capture_on_commit_callbacks(execute=True):
        marketer.post(reverse("admin:packages_package_run", args=[package.pk, "publish"]))
    package.refresh_from_db()
    assert package.state == "published"
    assert any("New campaign package" in m.subject for m in mailoutbox)

    # The local operator of store A orders it with its personalisation.
    local = Client()
    local.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        local.post(
            reverse("packages:order_create", args=[package.pk]),
            {"signature": "The A team", "action": "submit"},
        )
    order = Order.objects.get(package=package)
    assert order.state == OrderState.SUBMITTED

    # The approver receives an email with a personal link, opens it and approves.
    email = next(m for m in mailoutbox if m.to == [org.approver.email])
    link = re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", email.body).group(1)
    approver = Client()  # not logged in: the signed link identifies the approver
    page = approver.get(link)
    assert "The A team" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        done = approver.post(link, {"decision": "approve", "comment": "Welcome aboard"})
    assert "approved" in done.content.decode()

    # The child campaign exists for store A and appears on the parent.
    order.refresh_from_db()
    assert order.state == OrderState.APPROVED
    child = Campaign.objects.get(order=order)
    assert (child.entity, child.parent, child.personalisation_values) == (
        org.store_a,
        parent,
        {"signature": "The A team"},
    )
    admin_page = marketer.get(reverse("admin:campaigns_campaign_change", args=[parent.pk]))
    assert child.name in admin_page.content.decode()
    decided = Notification.objects.get(kind="order_decided", recipient=org.operator_a)
    assert decided.status == "sent" and "Welcome aboard" in decided.body_text

    # The local operator sees it and changes the child's personalisation.
    assert child.name in local.get(reverse("campaigns:list")).content.decode()
    local.post(reverse("campaigns:personalise", args=[child.pk]), {"signature": "Team A, Lille"})
    child.refresh_from_db()
    assert child.personalisation_values == {"signature": "Team A, Lille"}

    # Store B's operator sees none of it.
    other = Client()
    other.force_login(org.operator_b)
    assert other.get(reverse("campaigns:detail", args=[child.pk])).status_code == 404
    assert other.get(reverse("packages:order_detail", args=[order.pk])).status_code == 404

    # Every step is in the journal.
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {
        "publish",
        "create_order",
        "submit",
        "request",
        "approve",
        "create_child",
        "personalise",
    } <= actions
    assert ApprovalRequest.objects.get().decided_via == "email"
