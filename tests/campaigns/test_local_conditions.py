"""Local conditions of a reference campaign: the spec, the values, the condition tree, the
service that sets them and the admin form that edits them."""

from datetime import date

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from campaigns import services
from campaigns.models import Campaign
from campaigns.targeting import count, local
from portal.models import AuditLog
from tests.local_conditions import JUNE, SPEC, reference_campaign, travellers


def params():
    return local.parse_spec(SPEC, "contact")


def test_a_spec_parses_into_typed_parameters():
    product, window, minimum, language = params()
    assert product.choices == ("Cruise", "Safari") and product.required
    assert (window.minimum, window.maximum) == (date(2026, 1, 1), date(2026, 12, 31))
    assert (minimum.minimum, minimum.maximum) == (1, 5)
    assert language.required is False
    assert [p.as_json() for p in params()][1]["min"] == "2026-01-01"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"field": "password"}, "Local condition 1 (Product), field: “password” is not"),
        ({"field": "bookings.booking_date"}, "field: A list of values applies to a text or choice"),
        ({"choices": []}, "Local condition 1 (Product), choices: Give 1 to 100 allowed values."),
        ({"kind": "regex"}, "Local condition 1 (Product), kind: Choose one of"),
        ({"name": "Bad Name"}, "Local condition 1 (Product), name:"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_condition_and_key(change, message):
    spec = [{**SPEC[0], **change}, *SPEC[1:]]
    with pytest.raises(ValidationError) as caught:
        local.parse_spec(spec, "contact")
    assert any(message in text for text in caught.value.messages), caught.value.messages


def test_a_window_whose_end_comes_first_and_duplicate_names_are_refused():
    spec = [{**SPEC[1], "min": "2026-12-31", "max": "2026-01-01"}, SPEC[0], SPEC[0]]
    with pytest.raises(ValidationError) as caught:
        local.parse_spec(spec, "contact")
    text = " ".join(caught.value.messages)
    assert "Booking dates), max: The highest allowed value must not come before" in text
    assert "Two local conditions are named “product”" in text


def test_a_choice_field_only_takes_values_the_registry_knows():
    spec = [{"name": "status", "label": "Status", "field": "bookings.status", "kind": "choice",
             "choices": ["confirmed", "lost"]}]  # fmt: skip
    with pytest.raises(ValidationError, match="Not a value of Status: lost"):
        local.parse_spec(spec, "contact")


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({**JUNE, "product": "Yacht"}, "product", "Product: “Yacht” is not allowed"),
        ({**JUNE, "window": ["2025-12-01", "2026-01-31"]}, "window",
         "Booking dates: the window may not start before 2026-01-01."),
        ({**JUNE, "window": ["2026-07-01", "2026-06-01"]}, "window",
         "Booking dates: the start must not come after the end."),
        ({**JUNE, "window": ["2026-06-01", "junk"]}, "window", "Booking dates: give both dates"),
        ({**JUNE, "min_bookings": 9}, "min_bookings", "Minimum bookings: give at most 5."),
        ({**JUNE, "min_bookings": "two"}, "min_bookings", "Minimum bookings: give a whole number."),
        ({**JUNE, "product": ""}, "product", "Product: this value is required."),
        ({**JUNE, "language": "de"}, "language", "Language: “de” is not allowed"),
        ({**JUNE, "birth_date": "2000-01-01"}, "__all__", "“birth_date” is not a condition"),
    ],
)  # fmt: skip
def test_values_outside_what_the_centre_allowed_are_refused_naming_the_field(
    values, field, message
):
    with pytest.raises(ValidationError) as caught:
        local.clean_values(params(), values)
    assert any(message in text for text in caught.value.message_dict[field])


def test_values_become_one_condition_on_the_same_bookings():
    values = local.clean_values(params(), {**JUNE, "min_bookings": "2", "language": "fr"})
    assert values == {**JUNE, "min_bookings": 2, "language": "fr"}
    assert local.condition_for(params(), values, "contact") == {
        "and": [
            {"field": "language", "op": "eq", "value": "fr"},
            {
                "relation": "bookings",
                "op": "count_gte",
                "value": 2,
                "where": {
                    "and": [
                        {"field": "product", "op": "eq", "value": "Cruise"},
                        {"field": "booking_date", "op": "between",
                         "value": ["2026-06-01", "2026-06-30"]},
                    ]
                },
            },
        ]
    }  # fmt: skip


def test_the_local_tree_counts_what_it_says(org):
    travellers(org)
    values = local.clean_values(params(), JUNE)
    tree = local.with_local(
        {"field": "email_consent", "op": "eq", "value": True},
        local.condition_for(params(), values, "contact"),
    )
    assert count("contact", tree, entity=org.store_a).contacts == 10
    french = local.condition_for(params(), {**values, "language": "fr"}, "contact")
    assert count("contact", french, entity=org.store_a).contacts == 5
    twice = local.condition_for(params(), {**values, "min_bookings": 2}, "contact")
    assert count("contact", twice, entity=org.store_a).contacts == 2


def test_setting_local_conditions_validates_and_audits(org):
    campaign = reference_campaign(org)
    assert [p["name"] for p in campaign.local_conditions] == [
        "product", "window", "min_bookings", "language"
    ]  # fmt: skip
    entry = AuditLog.objects.for_object(campaign).get(action="set_local_conditions")
    assert entry.actor == org.marketer and "Product" in entry.comment
    with pytest.raises(ValidationError, match="Local condition 1"):
        services.set_local_conditions(
            campaign=campaign, parameters=[{**SPEC[0], "field": "nope"}], actor=org.marketer
        )
    campaign.refresh_from_db()
    assert len(campaign.local_conditions) == 4  # nothing half-written


def test_local_conditions_need_a_query_step_and_the_right(org):
    from tests.factories import CampaignFactory

    bare = CampaignFactory(collaborative_type="by_campaign", entity=org.hq)
    with pytest.raises(ValidationError, match="no query step"):
        services.set_local_conditions(campaign=bare, parameters=SPEC, actor=org.marketer)
    with pytest.raises(PermissionDenied):
        services.set_local_conditions(campaign=bare, parameters=[], actor=org.operator_a)


def test_a_child_campaign_gets_the_local_values_anded_to_its_query(org):
    from tests.factories import PackageFactory

    parent = reference_campaign(org)
    package = PackageFactory(reference_campaign=parent, audience=[org.store_a])
    from packages.models import Order

    order = Order.objects.create(
        package=package, entity=org.store_a, local_values={**JUNE, "language": "fr"}
    )
    child = services.create_child_campaign(order=order, actor=org.approver)
    settings = child.activities.get(key="target").settings
    assert settings["conditions"]["and"][0] == {"field": "email_consent", "op": "eq", "value": True}
    french = {"field": "language", "op": "eq", "value": "fr"}
    assert french in settings["conditions"]["and"][1]["and"]
    assert parent.activities.get(key="target").settings["conditions"]["field"] == "email_consent"
    travellers(org)
    assert count("contact", settings["conditions"], entity=child.entity).contacts == 5


def test_a_scheduled_run_carries_the_local_tree(org):
    from packages.models import Order
    from tests.factories import PackageFactory

    parent = reference_campaign(org, kind="simple")
    package = PackageFactory(reference_campaign=parent, audience=[org.store_a])
    order = Order.objects.create(package=package, entity=org.store_a, local_values=JUNE)
    run = services.schedule_order_run(order=order, actor=org.approver)
    assert run.local_targeting["relation"] == "bookings"
    travellers(org)
    dimension, conditions = local.campaign_target(parent)
    tree = local.with_local(conditions, run.local_targeting)
    assert count(dimension, tree, entity=run.entity).contacts == 10


# Admin form -----------------------------------------------------------------------------------


def _row(index, **values):
    return {f"local-{index}-{key}": value for key, value in values.items()}


def _management(total, initial=0):
    return {
        "local-TOTAL_FORMS": str(total),
        "local-INITIAL_FORMS": str(initial),
        "local-MIN_NUM_FORMS": "0",
        "local-MAX_NUM_FORMS": "20",
    }


def test_the_admin_edits_local_conditions_as_form_rows(org, client):
    campaign = reference_campaign(org, spec=None)
    client.force_login(org.marketer)
    url = reverse("admin:campaigns_campaign_local_conditions", args=[campaign.pk])
    page = client.get(url).content.decode()
    assert "Opted-in travellers" in page and "Bookings: Product (bookings.product)" in page
    response = client.post(url, {
        **_management(2),
        **_row(0, label="Product", name="product", field="bookings.product", kind="choice",
               choices="Cruise\nSafari\n", required="on"),
        **_row(1, label="Booking dates", name="window", field="bookings.booking_date",
               kind="date_window", minimum="2026-01-01", maximum="2026-12-31", required="on"),
    })  # fmt: skip
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.local_conditions[0]["choices"] == ["Cruise", "Safari"]
    assert campaign.local_conditions[1]["max"] == "2026-12-31"
    assert (
        "Product, Booking dates"
        in client.get(
            reverse("admin:campaigns_campaign_change", args=[campaign.pk])
        ).content.decode()
    )


def test_the_admin_form_names_the_field_at_fault_and_saves_nothing(org, client):
    campaign = reference_campaign(org, spec=None)
    client.force_login(org.marketer)
    url = reverse("admin:campaigns_campaign_local_conditions", args=[campaign.pk])
    response = client.post(url, {
        **_management(1),
        **_row(0, label="Dates", name="dates", field="bookings.product", kind="date_window",
               minimum="soon", required="on"),
    })  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 200
    assert "A date window applies to a date field." in page
    assert "Give a date as YYYY-MM-DD." in page
    assert Campaign.objects.get(pk=campaign.pk).local_conditions == []


def test_local_operators_do_not_reach_the_admin_page(org, client):
    campaign = reference_campaign(org, spec=None)
    client.force_login(org.operator_a)
    url = reverse("admin:campaigns_campaign_local_conditions", args=[campaign.pk])
    assert client.get(url).status_code in (302, 403, 404)
    assert client.post(url, _management(0)).status_code in (302, 403, 404)
    assert Campaign.objects.get(pk=campaign.pk).local_conditions == []


def test_values_no_longer_allowed_are_left_out_of_the_tree():
    stale = {"product": "Yacht", "window": "June", "min_bookings": [2], "language": "fr"}
    assert local.condition_for(params(), stale, "contact") == {
        "field": "language", "op": "eq", "value": "fr"
    }  # fmt: skip
