"""Each channel renders, validates and shows its own fields only: a push title is an error on
a push delivery and nothing at all on an email."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from campaigns.delivery import sending
from campaigns.models import Contact, Delivery
from tests.campaigns.test_sending import people, prepared, send  # noqa: F401 (fixture)

BROKEN = "{% if %}"
UNSAFE = "{{ ''.__class__.__mro__ }}"


@pytest.mark.usefixtures("people")
def test_an_email_with_a_broken_push_title_is_accepted_and_nothing_renders_it(
    campaign, org, django_capture_on_commit_callbacks, mailoutbox
):
    Delivery(campaign=campaign, label="Mail", channel="email", subject="Hi",
             text_body="Body", push_title=BROKEN).clean()  # fmt: skip
    delivery = send(prepared(campaign, push_title=BROKEN), org, django_capture_on_commit_callbacks)
    assert delivery.state == "sent" and len(mailoutbox) == 6
    assert not delivery.messages.exclude(status="sent").exists()
    rendered = sending.preview(delivery=delivery, contact=Contact.objects.first())
    assert rendered.title == "" and rendered.data == {}


@pytest.mark.usefixtures("people")
def test_an_unsafe_push_title_on_an_email_is_never_evaluated(campaign):
    delivery = prepared(campaign, push_title=UNSAFE)
    renderer = sending.Renderer(delivery)  # would raise at render if the title were a part
    first = delivery.messages.order_by("contact_id").first()  # Pat0, whatever the write order
    rendered = renderer.render(renderer.recipient_of(first))
    assert (rendered.subject, rendered.title) == ("Hello Pat0", "")


def test_a_push_with_a_broken_title_is_refused_at_save_naming_the_field(campaign):
    delivery = Delivery(campaign=campaign, label="Push", channel="push", text_body="Hi",
                        push_title=BROKEN, subject=BROKEN)  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        delivery.clean()
    # The title is checked; the subject, which a push does not send, is not.
    assert caught.value.message_dict == {
        "push_title": ["line 1: Expected an expression, got 'end of statement block'"]
    }


def test_push_data_must_be_an_object_for_a_push(campaign):
    delivery = Delivery(campaign=campaign, label="Push", channel="push", text_body="Hi",
                        push_data=["screen"])  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        delivery.clean()
    assert list(caught.value.message_dict) == ["push_data"]


@pytest.mark.usefixtures("people")
def test_an_sms_renders_only_its_text(campaign):
    delivery = prepared(campaign, channel="sms", subject=UNSAFE, html_body=BROKEN,
                        text_body="Hi {{ contact.first_name }}")  # fmt: skip
    renderer = sending.Renderer(delivery)
    rendered = renderer.render(renderer.recipient_of(delivery.messages.order_by("id").first()))
    assert (rendered.text, rendered.subject, rendered.html) == ("Hi Pat0", "", "")


def test_the_admin_and_the_portal_page_show_only_the_channels_fields(campaign, org, client):
    email = Delivery.objects.create(
        campaign=campaign, label="Mail", channel="email", subject="Hi", text_body="Body",
        push_title="PUSHTITLE",
    )  # fmt: skip
    push = Delivery.objects.create(
        campaign=campaign, label="Push", channel="push", subject="SUBJECTLINE",
        text_body="Body", push_title="Title",
    )  # fmt: skip
    client.force_login(org.marketer)

    def admin_page(delivery):
        return client.get(reverse("admin:campaigns_delivery_change", args=[delivery.pk])).content

    assert b"id_push_title" not in admin_page(email) and b"id_subject" in admin_page(email)
    assert b"id_push_title" in admin_page(push) and b"id_subject" not in admin_page(push)
    assert b"delivery_fields.js" in client.get(reverse("admin:campaigns_delivery_add")).content
    portal = reverse("campaigns:delivery", args=[push.pk])
    assert b"SUBJECTLINE" not in client.get(portal).content
    portal = reverse("campaigns:delivery", args=[email.pk])
    assert b"PUSHTITLE" not in client.get(portal).content


def test_a_failed_delivery_shows_its_error_on_its_page(campaign, org, client):
    delivery = Delivery.objects.create(
        campaign=campaign, label="Mail", channel="email", subject="Hi", text_body="Body",
        error="Cannot render: x",
    )  # fmt: skip
    client.force_login(org.marketer)
    page = client.get(reverse("campaigns:delivery", args=[delivery.pk])).content.decode()
    assert "Cannot render: x" in page
