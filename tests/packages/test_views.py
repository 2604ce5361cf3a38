from datetime import timedelta

import pytest
import time_machine
from django.core.files.base import ContentFile
from django.urls import reverse

from packages.choices import OrderState
from packages.models import Order, PackageDocument


@pytest.fixture
def package(make_package, form_campaign, org):
    return make_package(campaign=form_campaign, audience=[org.store_a, org.store_b])


def test_the_catalogue_shows_my_packages_with_deadlines(package, make_package, org, client):
    make_package(label="Only for B", audience=[org.store_b])
    client.force_login(org.operator_a)
    body = client.get(reverse("packages:catalogue")).content.decode()
    assert package.label in body
    assert "Only for B" not in body
    assert package.registration_deadline.strftime("%Y-%m-%d") in body


def test_ordering_through_the_form_with_a_file(package, org, client, valid_values, png):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    assert "Headline" in client.get(url).content.decode()
    response = client.post(url, {**valid_values, "flyer": png(), "action": "submit"})
    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("packages:order_detail", args=[order.pk])
    assert order.state == OrderState.SUBMITTED
    assert order.values["flyer"]["name"] == "flyer.png"
    page = client.get(response["Location"]).content.decode()
    assert "Submitted" in page and "Free coffee" in page and "flyer.png" in page


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"discount": "abc"}, "Enter a number."),
        ({"headline": ""}, "This field is required."),
        ({"segment": "Nobody"}, "Select a valid choice."),
    ],
)
def test_bad_input_is_shown_next_to_the_field_and_saves_nothing(
    package, org, client, valid_values, change, error
):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    response = client.post(url, {**valid_values, **change, "action": "submit"})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Order.objects.exists()


def test_a_forbidden_file_is_refused_in_the_form(package, org, client, valid_values, png):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    response = client.post(url, {**valid_values, "flyer": png(name="x.exe", content=b"MZ")})
    assert response.status_code == 200
    assert "not allowed" in response.content.decode()
    assert not Order.objects.exists()


def test_ordering_after_the_deadline_shows_a_message(package, org, client, valid_values):
    url = reverse("packages:order_create", args=[package.pk])
    with time_machine.travel(package.registration_deadline + timedelta(hours=1)):
        client.force_login(org.operator_a)
        response = client.post(url, {**valid_values, "action": "submit"})
    assert response.status_code == 200
    assert "registration deadline" in response.content.decode()
    assert not Order.objects.exists()


def test_ordering_twice_leads_to_the_existing_order(package, org, client, valid_values):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    client.post(url, {**valid_values, "action": "save"})
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("packages:order_detail", args=[Order.objects.get().pk])


def test_edit_submit_and_cancel_from_the_order_page(package, org, client, valid_values):
    client.force_login(org.operator_a)
    client.post(
        reverse("packages:order_create", args=[package.pk]), {**valid_values, "action": "save"}
    )
    order = Order.objects.get()
    edit = reverse("packages:order_edit", args=[order.pk])
    client.post(edit, {**valid_values, "headline": "Two coffees", "action": "save"})
    order.refresh_from_db()
    assert order.values["headline"] == "Two coffees" and order.state == OrderState.DRAFT
    client.post(reverse("packages:order_submit", args=[order.pk]))
    order.refresh_from_db()
    assert order.state == OrderState.SUBMITTED
    response = client.post(
        reverse("packages:order_cancel", args=[order.pk]), {"comment": "Changed plans"}, follow=True
    )
    assert f"Cancelled; order {order} is withdrawn." in response.content.decode()
    order.refresh_from_db()
    assert order.state == OrderState.CANCELLED


def test_state_changes_need_post(package, org, client, valid_values):
    client.force_login(org.operator_a)
    client.post(
        reverse("packages:order_create", args=[package.pk]), {**valid_values, "action": "save"}
    )
    order = Order.objects.get()
    assert client.get(reverse("packages:order_submit", args=[order.pk])).status_code == 405
    assert client.get(reverse("packages:order_cancel", args=[order.pk])).status_code == 405
    order.refresh_from_db()
    assert order.state == OrderState.DRAFT


def test_two_entities_never_see_each_others_orders(package, org, client, valid_values):
    from packages import services

    a = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values
    ).order
    b = services.place_order(
        package=package, entity=org.store_b, actor=org.operator_b, data=valid_values
    ).order
    client.force_login(org.operator_a)
    listing = client.get(reverse("packages:order_list")).content.decode()
    assert reverse("packages:order_detail", args=[a.pk]) in listing
    assert reverse("packages:order_detail", args=[b.pk]) not in listing
    for name in ("order_detail", "order_edit"):
        assert client.get(reverse(f"packages:{name}", args=[b.pk])).status_code == 404
    for name in ("order_submit", "order_cancel"):
        assert client.post(reverse(f"packages:{name}", args=[b.pk])).status_code == 404
    b.refresh_from_db()
    assert b.state == OrderState.DRAFT


def test_documents_are_downloaded_by_the_audience_only(package, make_package, org, client):
    doc = PackageDocument(package=package, title="Brand guide")
    doc.file.save("guide.pdf", ContentFile(b"%PDF-1.4 brand guide"), save=True)
    url = reverse("packages:document", args=[package.pk, doc.pk])
    client.force_login(org.operator_a)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    other = make_package(audience=[org.store_b])
    client.force_login(org.operator_b)
    assert client.get(reverse("packages:package_detail", args=[other.pk])).status_code == 200
    assert client.get(url).status_code == 200  # STORE_B is in this package's audience too
    client.force_login(org.outsider)
    assert client.get(url).status_code == 404


def test_the_package_page_shows_the_order_counts_to_central_users(
    package, org, client, valid_values
):
    from packages import services

    services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    )
    client.force_login(org.marketer)
    body = client.get(reverse("admin:packages_package_change", args=[package.pk])).content.decode()
    assert "<li>Submitted: 1</li>" in body


def test_orders_export_to_csv_for_central_users(package, org, client, valid_values):
    from packages import services

    services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=valid_values, submit=True
    )
    client.force_login(org.marketer)
    url = reverse("admin:packages_order_export")
    response = client.post(
        url,
        {
            "format": "0",
            "resource": "0",
            **{
                f"orderresource_{name}": "on"
                for name in ("id", "package", "entity_code", "state", "values")
            },
        },
    )
    assert response.status_code == 200
    text = response.getvalue().decode()
    assert "STORE_A" in text and "submitted" in text and "headline=Free coffee" in text


def test_admin_publish_button_shows_every_problem(make_package, org, client):
    package = make_package(audience=[], registration_deadline=None, publish=False)
    client.force_login(org.marketer)
    response = client.post(
        reverse("admin:packages_package_run", args=[package.pk, "publish"]), follow=True
    )
    body = response.content.decode()
    assert "Set a registration deadline." in body
    assert "needs an audience" in body
    package.refresh_from_db()
    assert package.state == "draft"


def test_admin_publish_button_publishes(make_package, org, client):
    package = make_package(publish=False)
    client.force_login(org.marketer)
    client.post(reverse("admin:packages_package_run", args=[package.pk, "publish"]))
    package.refresh_from_db()
    assert package.state == "published"


def test_admin_transition_buttons_refuse_get_and_non_publishers(make_package, org, client):
    package = make_package(publish=False)
    url = reverse("admin:packages_package_run", args=[package.pk, "publish"])
    client.force_login(org.marketer)
    assert client.get(url).status_code == 405
    client.force_login(org.approver)  # may view packages, not publish them
    client.post(url)
    package.refresh_from_db()
    assert package.state == "draft"


def test_selecting_a_region_adds_its_local_entities(org, client, form_campaign):
    from tests.factories import EntityFactory

    EntityFactory(code="STORE_A2", name="Store A2", parent=org.north)
    client.force_login(org.marketer)
    response = client.post(
        reverse("admin:packages_package_add"),
        {
            "label": "Regional kit",
            "reference_campaign": form_campaign.pk,
            "registration_deadline_0": "2030-01-10",
            "registration_deadline_1": "10:00:00",
            "regions": [org.north.pk],
            "approval_mode": "manual",
            "reminder_days": 3,
            "approval_days": 3,
            "approval_expiry_default": "expire",
            "notify_on_publish": "on",
            "documents-TOTAL_FORMS": "0",
            "documents-INITIAL_FORMS": "0",
            "portal-auditlog-content_type-object_id-TOTAL_FORMS": "0",
            "portal-auditlog-content_type-object_id-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    from packages.models import Package

    package = Package.objects.get(label="Regional kit")
    assert set(package.audience.values_list("code", flat=True)) == {"STORE_A", "STORE_A2"}


def test_the_reference_campaign_picker_tells_same_names_apart(org, client):
    """Issue 16, item 4: type, state and id in each entry; reference campaigns only, the
    usable ones first (the highlighted first entry is not a stopped one or a child)."""
    from tests.factories import CampaignFactory

    old = CampaignFactory(name="Spring sale", collaborative_type="simple", entity=org.hq,
                          state="stopped")  # fmt: skip
    new = CampaignFactory(name="Spring sale", collaborative_type="by_form", entity=org.hq)
    CampaignFactory(name="Spring sale — Store A", kind="child", collaborative_type="by_form",
                    parent=new, entity=org.store_a)  # fmt: skip
    client.force_login(org.marketer)
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "packages", "model_name": "package", "field_name": "reference_campaign",
         "term": "Spring"},
    )  # fmt: skip
    assert response.status_code == 200
    assert [row["text"] for row in response.json()["results"]] == [
        f"Spring sale — By form · draft · #{new.pk}",
        f"Spring sale — Simple · stopped · #{old.pk}",
    ]
    page = client.get(reverse("admin:packages_package_add"))
    assert page.status_code == 200


def test_the_chosen_reference_campaign_is_named_as_the_picker_names_it(make_package, org, client):
    package = make_package()
    campaign = package.reference_campaign
    client.force_login(org.marketer)
    page = client.get(reverse("admin:packages_package_change", args=[package.pk]))
    assert f"{campaign.name} — By form · draft · #{campaign.pk}</option>" in page.content.decode()
