"""The order's values read as a table of labels and values, in the admin and the portal."""

import pytest
from django.urls import reverse

from packages.models import Order


@pytest.fixture
def order(make_package, form_campaign, org, client, valid_values, png):
    package = make_package(campaign=form_campaign, audience=[org.store_a, org.store_b])
    client.force_login(org.operator_a)
    values = {**valid_values, "details": "Line one\r\nLine two", "flyer": png()}
    client.post(reverse("packages:order_create", args=[package.pk]), {**values, "action": "submit"})
    client.logout()
    return Order.objects.get()


def test_the_admin_order_page_shows_labels_values_and_a_file_link(order, org, client):
    client.force_login(org.marketer)
    body = client.get(reverse("admin:packages_order_change", args=[order.pk])).content.decode()
    file_url = reverse("packages:order_file", args=[order.pk, "flyer"])
    assert '<table class="order-values">' in body
    assert '<th scope="row">Headline</th><td>Free coffee</td>' in body
    assert "Line one<br>Line two" in body
    assert f'<a href="{file_url}">flyer.png</a>' in body
    assert order.values["flyer"]["path"] not in body
    assert "\\r\\n" not in body and '"headline"' not in body
    assert client.get(file_url).status_code == 200


def test_the_file_link_is_rights_checked(order, org, client):
    client.force_login(org.operator_b)
    assert client.get(reverse("packages:order_file", args=[order.pk, "flyer"])).status_code == 404


def test_the_portal_order_page_keeps_line_breaks(order, org, client):
    client.force_login(org.operator_a)
    body = client.get(reverse("packages:order_detail", args=[order.pk])).content.decode()
    assert "Line one<br>Line two" in body
