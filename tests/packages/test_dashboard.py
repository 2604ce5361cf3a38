"""The dashboard says which deadline is late, and gives the marketer an overview."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from campaigns.choices import CampaignState
from packages import services
from packages.models import Package
from tests.factories import CampaignFactory


def test_a_late_package_says_the_personalisation_deadline_is_passed(make_package, org, client):
    package = make_package(label="Spring sale")
    passed = timezone.now() - timedelta(days=2)
    Package.objects.filter(pk=package.pk).update(personalisation_deadline=passed)
    client.force_login(org.operator_a)
    body = client.get(reverse("portal:dashboard")).content.decode()
    order_by = timezone.localtime(package.registration_deadline).strftime("%Y-%m-%d")
    assert f"order by {order_by}" in body
    assert f"personalisation late since {timezone.localtime(passed):%Y-%m-%d}" in body
    assert ">late<" not in body


def test_the_marketer_sees_packages_by_state_approvals_campaigns_and_orders(
    make_package, org, client, django_assert_max_num_queries
):
    package = make_package("simple", label="Spring sale", audience=[org.store_a, org.store_b])
    make_package(label="Draft kit", publish=False)
    for operator, entity in ((org.operator_a, org.store_a), (org.operator_b, org.store_b)):
        services.place_order(package=package, entity=entity, actor=operator, submit=True)
    CampaignFactory(name="Winter run", kind="parent", state=CampaignState.RUNNING)
    client.force_login(org.marketer)
    with django_assert_max_num_queries(12):
        body = client.get(reverse("portal:dashboard")).content.decode()
    assert "Packages by state" in body
    assert "Published: 1" in body and "Draft: 1" in body
    assert "Pending approvals" in body and body.count("Spring sale — Store") >= 2
    assert "Running campaigns" in body and "Winter run" in body
    assert "Recent orders" in body


def test_local_operators_do_not_get_the_marketer_sections(make_package, org, client):
    make_package(label="Spring sale")
    client.force_login(org.operator_a)
    body = client.get(reverse("portal:dashboard")).content.decode()
    assert "Packages by state" not in body and "Running campaigns" not in body
