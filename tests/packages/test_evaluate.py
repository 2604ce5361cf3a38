"""Evaluate before ordering: a local operator completes the centre's conditions, counts the
contacts of their own entity the campaign would target, orders with those values, and the
approver and the child campaign see them."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import services as approvals
from approvals.models import ApprovalRequest
from campaigns.models import Campaign
from packages import services
from packages.approval import OrderApprovalHandler
from packages.models import Order
from portal.exceptions import DomainError
from tests.local_conditions import JUNE, reference_campaign, travellers

FORM = {
    "local-product": "Cruise",
    "local-window_0": "2026-06-01",
    "local-window_1": "2026-06-30",
    "local-min_bookings": "1",
    "local-language": "",
}


@pytest.fixture
def package(org, make_package):
    travellers(org)
    return make_package(
        campaign=reference_campaign(org), audience=[org.store_a, org.store_b], label="Cruises"
    )


# Services ---------------------------------------------------------------------------------------


def test_evaluation_counts_the_entitys_contacts_with_the_values(package, org):
    result = services.evaluate_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    )
    assert result.contacts == 10
    assert {c.external_id for c in result.sample} == {f"A{i:02d}" for i in range(0, 28, 3)}
    french = services.evaluate_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        local_values={**JUNE, "language": "fr", "min_bookings": "2"},
    )
    assert french.contacts == 1 and [c.external_id for c in french.sample] == ["A00"]


def test_evaluation_is_a_few_set_based_queries_and_changes_nothing(package, org):
    with CaptureQueriesContext(connection) as queries:
        result = services.evaluate_order(
            package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
        )
    assert result.contacts == 10
    # Rights (5), audience, campaign steps (2), the subtree, one count, one sample: a fixed
    # number, whatever the number of contacts.
    assert len(queries) <= 11
    assert not any(q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
                   for q in queries.captured_queries)  # fmt: skip
    assert not Order.objects.exists()


def test_the_sample_holds_twenty_rows(org, make_package):
    travellers(org)
    plain = make_package(campaign=reference_campaign(org, spec=None, name="Plain"))
    result = services.evaluate_order(package=plain, entity=org.store_a, actor=org.operator_a)
    assert result.contacts == 29 and len(result.sample) == 20


def test_another_entitys_contacts_are_never_counted(package, org):
    """Store B's ten contacts all match; Store A's operator counts Store A's only, and may
    not evaluate for Store B at all."""
    mine = services.evaluate_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    )
    assert all(c.entity_id == org.store_a.pk for c in mine.sample)
    with pytest.raises(PermissionDenied):
        services.evaluate_order(
            package=package, entity=org.store_b, actor=org.operator_a, local_values=JUNE
        )
    theirs = services.evaluate_order(
        package=package, entity=org.store_b, actor=org.operator_b, local_values=JUNE
    )
    assert theirs.contacts == 10 and all(c.external_id.startswith("B") for c in theirs.sample)


def test_an_entity_outside_the_audience_cannot_evaluate(org, make_package):
    travellers(org)
    only_b = make_package(campaign=reference_campaign(org), audience=[org.store_b])
    with pytest.raises(DomainError, match="not in the audience"):
        services.evaluate_order(
            package=only_b, entity=org.store_a, actor=org.operator_a, local_values=JUNE
        )


def test_ordering_refuses_values_outside_what_the_centre_allowed(package, org):
    with pytest.raises(ValidationError) as caught:
        services.place_order(
            package=package,
            entity=org.store_a,
            actor=org.operator_a,
            local_values={**JUNE, "product": "Yacht", "min_bookings": 50},
        )
    errors = caught.value.message_dict
    assert "Product: “Yacht” is not allowed" in errors["local-product"][0]
    assert errors["local-min_bookings"] == ["Minimum bookings: give at most 5."]
    assert not Order.objects.exists()


def test_ordering_needs_the_required_local_values(package, org):
    with pytest.raises(ValidationError) as caught:
        services.place_order(package=package, entity=org.store_a, actor=org.operator_a)
    assert caught.value.message_dict == {
        "local-product": ["Product: this value is required."],
        "local-window": ["Booking dates: this value is required."],
        "local-min_bookings": ["Minimum bookings: this value is required."],
    }


def test_an_order_placed_before_the_conditions_existed_cannot_be_submitted_without_them(
    org, make_package
):
    campaign = reference_campaign(org, spec=None)
    package = make_package(campaign=campaign, audience=[org.store_a])
    order = services.place_order(package=package, entity=org.store_a, actor=org.operator_a).order
    from campaigns import services as campaign_services
    from tests.local_conditions import SPEC

    campaign_services.set_local_conditions(campaign=campaign, parameters=SPEC, actor=org.marketer)
    with pytest.raises(DomainError) as caught:
        services.submit_order(order=order, actor=org.operator_a)
    assert "Product: this value is required." in caught.value.problems


def test_the_values_are_stored_shown_to_the_approver_and_applied_in_the_child(package, org):
    order = services.place_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        local_values={**JUNE, "language": "fr"},
        submit=True,
    ).order
    assert order.local_values == {**JUNE, "language": "fr"}
    rows = dict(OrderApprovalHandler().summary(order))
    assert rows["Targeting: Product"] == "Cruise"
    assert rows["Targeting: Booking dates"] == "2026-06-01 to 2026-06-30"
    assert rows["Targeting: Minimum bookings"] == "at least 1"
    approvals.decide(request=ApprovalRequest.objects.get(), actor=org.approver, approve=True)
    child = Campaign.objects.get(order=order)
    conditions = child.activities.get(key="target").settings["conditions"]
    assert conditions["and"][0]["field"] == "email_consent"
    assert {"field": "language", "op": "eq", "value": "fr"} in conditions["and"][1]["and"]


def test_changing_an_order_changes_its_values_within_the_rules(package, org):
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    ).order
    services.update_order(
        order=order, actor=org.operator_a, data={}, local_values={**JUNE, "product": "Safari"}
    )
    order.refresh_from_db()
    assert order.local_values["product"] == "Safari"
    with pytest.raises(ValidationError, match="Booking dates"):
        services.update_order(
            order=order,
            actor=org.operator_a,
            data={},
            local_values={**JUNE, "window": ["2027-01-01", "2027-02-01"]},
        )
    order.refresh_from_db()
    assert order.local_values["product"] == "Safari"


# Pages ------------------------------------------------------------------------------------------


def test_the_order_form_shows_the_conditions_as_typed_fields(package, org, client):
    client.force_login(org.operator_a)
    page = client.get(reverse("packages:order_create", args=[package.pk])).content.decode()
    assert 'name="local-product"' in page and '<option value="Safari">' in page
    assert 'type="date" name="local-window_0"' in page and 'min="2026-01-01"' in page
    assert 'type="number" name="local-min_bookings"' in page
    assert "One of: Cruise, Safari." in page and "Between 1 and 5." in page
    assert 'value="evaluate"' in page


def test_evaluate_shows_the_count_and_sample_and_orders_nothing(package, org, client):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    response = client.post(url, {**FORM, "action": "evaluate"})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-count="10"' in page and "Ann03 Alpha" in page and "Bea" not in page
    assert 'value="Cruise" selected' in page  # the values stay in the form
    assert not Order.objects.exists()


def test_evaluate_needs_the_csrf_token(package, org):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    assert strict.post(url, {**FORM, "action": "evaluate"}).status_code == 403


def test_a_forged_evaluation_is_refused_naming_the_field(package, org, client):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    forged = {**FORM, "local-product": "Yacht", "local-window_0": "2020-01-01",
              "action": "evaluate"}  # fmt: skip
    page = client.post(url, forged).content.decode()
    assert "Product: “Yacht” is not allowed" in page
    assert "Booking dates: the window may not start before 2026-01-01." in page
    assert "data-count" not in page


def test_ordering_through_the_form_stores_the_values(package, org, client):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    response = client.post(url, {**FORM, "local-language": "en", "action": "submit"})
    order = Order.objects.get()
    assert response.status_code == 302
    assert order.local_values == {**JUNE, "language": "en"} and order.state == "submitted"
    page = client.get(reverse("packages:order_detail", args=[order.pk])).content.decode()
    assert "Targeting conditions" in page and "2026-06-01 to 2026-06-30" in page


def test_a_refused_order_form_names_the_field_and_saves_nothing(package, org, client):
    client.force_login(org.operator_a)
    url = reverse("packages:order_create", args=[package.pk])
    page = client.post(url, {**FORM, "local-min_bookings": "0", "action": "submit"})
    assert "Minimum bookings: give at least 1." in page.content.decode()
    assert not Order.objects.exists()


def test_evaluating_on_the_edit_page_leaves_the_order_unchanged(package, org, client):
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    ).order
    client.force_login(org.operator_a)
    url = reverse("packages:order_edit", args=[order.pk])
    assert 'value="Cruise" selected' in client.get(url).content.decode()
    page = client.post(url, {**FORM, "local-product": "Safari", "local-window_0": "2026-03-01",
                             "action": "evaluate"}).content.decode()  # fmt: skip
    assert 'data-count="10"' in page  # ten safari travellers in March
    order.refresh_from_db()
    assert order.local_values["product"] == "Cruise"


def test_another_entitys_operator_cannot_evaluate_my_order(package, org, client):
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    ).order
    client.force_login(org.operator_b)
    url = reverse("packages:order_edit", args=[order.pk])
    assert client.post(url, {**FORM, "action": "evaluate"}).status_code == 404


def test_without_conditions_the_order_page_shows_the_estimated_target(org, make_package, client):
    travellers(org)
    plain = make_package(campaign=reference_campaign(org, spec=None, name="Plain"))
    client.force_login(org.operator_a)
    page = client.get(reverse("packages:order_create", args=[plain.pk])).content.decode()
    assert "Estimated target" in page and 'data-count="29"' in page
    assert 'value="evaluate"' not in page


def test_the_admin_order_page_shows_the_values_in_words(package, org, client):
    order = services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE
    ).order
    client.force_login(org.approver)
    page = client.get(reverse("admin:packages_order_change", args=[order.pk])).content.decode()
    assert "targeting conditions" in page.lower()
    assert "2026-06-01 to 2026-06-30" in page and "at least 1" in page
    assert '"min_bookings"' not in page  # never the stored JSON


def test_the_approvers_portal_page_shows_the_values(package, org, client):
    services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, local_values=JUNE, submit=True
    )
    client.force_login(org.approver)
    request = ApprovalRequest.objects.get()
    page = client.get(reverse("approvals:request_detail", args=[request.pk])).content.decode()
    assert "Targeting: Product" in page and "Cruise" in page


def test_the_api_takes_local_values_and_refuses_them_outside_the_rules(package, org):
    from tests.api.test_api import client_for

    api, _ = client_for(org.operator_a)
    bad = api.post(
        "/api/v1/orders/",
        {"package": package.pk, "entity": "STORE_A",
         "local_values": {**JUNE, "product": "Yacht"}},
        "json",
    )  # fmt: skip
    assert bad.status_code == 400 and "Product: “Yacht” is not allowed" in bad.content.decode()
    assert not Order.objects.exists()
    good = api.post(
        "/api/v1/orders/",
        {"package": package.pk, "entity": "STORE_A", "local_values": JUNE},
        "json",
    )
    assert good.status_code == 201, good.json()
    assert good.json()["local_values"] == JUNE
