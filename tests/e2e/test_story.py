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


def test_by_campaign_order_to_local_approval_to_messages_in_an_smtp_sink(
    org, make_package, django_capture_on_commit_callbacks, mailoutbox, settings
):
    """Package by campaign → order → approval by emailed link → child campaign (with the
    parent's workflow) → run → the store reviews its list by the emailed link to the review
    page → delivery → personalised messages in a real SMTP server."""

    from campaigns.models import Activity, Contact, Delivery, Transition
    from tests.factories import CampaignFactory
    from tests.integration.faults import Sink

    parent = CampaignFactory(name="Winter", collaborative_type="by_campaign", entity=org.hq)
    FieldFactory(campaign=parent, name="signature", label="Signature", required=True)
    steps = {
        key: Activity.objects.create(campaign=parent, key=key, type=kind, settings=options)
        for key, kind, options in [
            ("who", "query", {"conditions": {"field": "email_consent", "op": "eq", "value": True}}),
            ("review", "local_approval", {"deadline_hours": 24, "on_deadline": "send_none"}),
            ("mail", "delivery", {"channel": "email", "subject": "Hello {{ contact.first_name }}",
                                  "text_body": "Winter deals. {{ perso.signature }}",
                                  "html_body": "<p>{{ contact.first_name }}</p>"}),
            ("end", "end", {}),
        ]
    }  # fmt: skip
    for source, target in [("who", "review"), ("review", "mail"), ("mail", "end")]:
        Transition.objects.create(campaign=parent, source=steps[source], target=steps[target])
    for n, name in enumerate(["Ada", "Ben", "Cy"]):
        Contact.objects.create(external_id=f"W{n}", first_name=name, email=f"{name}@example.com",
                               email_consent=True, entity=org.store_a)  # fmt: skip
    Contact.objects.create(external_id="WB", first_name="Bea", email="bea@example.com",
                           email_consent=True, entity=org.store_b)  # fmt: skip

    marketer = Client()
    marketer.force_login(org.marketer)
    # No execution date: the child may run as soon as it is approved (execution window).
    package = make_package(
        campaign=parent, audience=[org.store_a], publish=False, execution_at=None
    )
    with django_capture_on_commit_callbacks(execute=True):
        marketer.post(reverse("admin:packages_package_run", args=[package.pk, "publish"]))
    local = Client()
    local.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        local.post(reverse("packages:order_create", args=[package.pk]),
                   {"signature": "Team A", "action": "submit"})  # fmt: skip
    email = next(m for m in mailoutbox if m.to == [org.approver.email])
    link = re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", email.body).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        Client().post(link, {"decision": "approve", "comment": "Go"})
    child = Campaign.objects.get(order__package=package)
    assert child.activities.count() == 4  # the parent's workflow, copied

    # The store marks its child ready; the central team runs it.
    local.post(reverse("campaigns:action", args=[child.pk, "mark_ready"]))
    with django_capture_on_commit_callbacks(execute=True):
        marketer.post(reverse("admin:campaigns_campaign_run", args=[child.pk, "run"]))
    child.refresh_from_db()
    assert child.state == "running"

    # The store's operator gets a request whose email links to the review page of its list.
    request_mail = next(
        m
        for m in reversed(mailoutbox)
        if m.to == [org.operator_a.email] and "/campaigns/lists/" in m.body
    )
    review = re.search(r"https?://[^/\s]+(/campaigns/lists/\d+/)", request_mail.body).group(1)
    page = local.get(review).content.decode()
    assert "Ada" in page and "Bea" not in page  # its own contacts only
    ben = Contact.objects.get(external_id="W1")
    local.post(review, {"action": "remove", "contact": [ben.pk], "reason": "Asked not to"})

    # Messages go to a real SMTP server once the list is approved.
    sink = Sink().start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        with django_capture_on_commit_callbacks(execute=True):
            local.post(review, {"action": "approve", "comment": "Fine"})
    finally:
        sink.stop()
    delivery = Delivery.objects.get(campaign=child)
    child.refresh_from_db()
    assert (delivery.state, child.state) == ("sent", "completed")
    assert len(sink.received) == 2
    assert set(delivery.messages.values_list("contact__first_name", flat=True)) == {"Ada", "Cy"}
    bodies = sink.bodies
    assert any("Hello Ada" in body and "Winter deals. Team A" in body for body in bodies)


def test_by_form_order_with_local_conditions_to_the_scheduled_run_and_its_messages(
    org, make_package, django_capture_on_commit_callbacks, mailoutbox
):
    """Package by form with local conditions → the store orders through the web with its
    offer and its conditions → approval by emailed link → at the package's execution date the
    beat task runs the reference campaign for the store alone → personalised messages to the
    store's contacts that match its conditions; the central team follows it in the admin."""
    from datetime import timedelta

    import time_machine

    from campaigns import tasks
    from campaigns.models import Activity, ScheduledRun, Transition
    from tests.local_conditions import reference_campaign, travellers

    parent = reference_campaign(org, kind="by_form", name="Summer by form")
    FieldFactory(campaign=parent, name="offer", label="Offer", required=True)
    target, end = parent.activities.get(key="target"), parent.activities.get(key="end")
    Transition.objects.filter(campaign=parent).delete()
    mail = Activity.objects.create(
        campaign=parent, key="mail", type="delivery",
        settings={"channel": "email", "subject": "Hello {{ contact.first_name }}",
                  "text_body": "This summer: {{ perso.offer }}"},
    )  # fmt: skip
    Transition.objects.create(campaign=parent, source=target, target=mail)
    Transition.objects.create(campaign=parent, source=mail, target=end)
    contacts = travellers(org)

    marketer = Client()
    marketer.force_login(org.marketer)
    package = make_package(campaign=parent, audience=[org.store_a, org.store_b], publish=False)
    with django_capture_on_commit_callbacks(execute=True):
        marketer.post(reverse("admin:packages_package_run", args=[package.pk, "publish"]))
    local = Client()
    local.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        local.post(
            reverse("packages:order_create", args=[package.pk]),
            {"offer": "a free cabin upgrade", "local-product": "Cruise",
             "local-window_0": "2026-06-01", "local-window_1": "2026-06-30",
             "local-min_bookings": "2", "local-language": "", "action": "submit"},
        )  # fmt: skip
    order = Order.objects.get(package=package)
    email = next(m for m in mailoutbox if m.to == [org.approver.email])
    link = re.search(r"https?://[^/\s]+(/approvals/link/\S+/)", email.body).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        Client().post(link, {"decision": "approve", "comment": "Go"})
    run = ScheduledRun.objects.get(order=order)
    assert run.state == "scheduled" and not Campaign.objects.filter(order=order).exists()

    # At the package's execution date, the beat task runs it for store A alone.
    mailoutbox.clear()
    with (
        time_machine.travel(package.execution_at + timedelta(minutes=1)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        tasks.execute_scheduled_runs.delay()
    run.refresh_from_db()
    campaign = run.execution_campaign
    assert run.state == "done" and campaign.entity == org.store_a
    # Store A's consenting contacts with two June cruises: A00 and A15 (A15 speaks English).
    sent = [m for m in mailoutbox if m.subject.startswith("Hello")]
    assert {m.to[0] for m in sent} == {contacts["A00"].email, contacts["A15"].email}
    assert all("This summer: a free cabin upgrade" in m.body for m in sent)

    # The store follows it from its order; the central team from the runs list.
    page = local.get(reverse("packages:order_detail", args=[order.pk])).content.decode()
    assert reverse("campaigns:detail", args=[campaign.pk]) in page and "(done)" in page
    runs = marketer.get(reverse("admin:campaigns_scheduledrun_changelist")).content.decode()
    assert reverse("admin:campaigns_campaign_change", args=[campaign.pk]) in runs
    assert {"schedule_run", "create_run_campaign", "mark_done"} <= set(
        AuditLog.objects.values_list("action", flat=True)
    )
