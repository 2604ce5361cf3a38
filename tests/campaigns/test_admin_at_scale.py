"""The admin lists of the large tables: searches on exact keys, filters whose choices cost no
scan, bounded pagination, and the entity scope kept throughout."""

from datetime import date

import pytest
from django.db import connection
from django.urls import reverse

from campaigns.models import Booking, Contact, Delivery, Message
from portal.admin_mixins import BoundedPaginator, planner_estimate, skip_scan_values
from tests.factories import CampaignFactory, UserFactory


@pytest.fixture
def audience(org):
    alpha = Contact.objects.create(
        external_id="A-1", first_name="Ann", last_name="Alphonse", email="ann@alpha.example",
        phone="+33600000001", language="fr", entity=org.store_a,
    )  # fmt: skip
    beta = Contact.objects.create(
        external_id="B-1", first_name="Bob", last_name="Betancourt", email="bob@beta.example",
        language="de", entity=org.store_b,
    )  # fmt: skip
    for contact, reference, year in ((alpha, "REF-A", 2025), (beta, "REF-B", 2024)):
        Booking.objects.create(
            contact=contact, reference=reference, product="Cruise", destination="Crete",
            booking_date=date(year, 5, 1), amount=100,
        )  # fmt: skip
    return alpha, beta


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


def listed(client, model, **params):
    response = client.get(reverse(f"admin:campaigns_{model}_changelist"), params)
    assert response.status_code == 200
    return {str(obj.pk) for obj in response.context["cl"].result_list}


def test_booking_search_finds_a_reference_or_a_customer_id_exactly(audience, superuser, client):
    client.force_login(superuser)
    ref_a = str(Booking.objects.get(reference="REF-A").pk)
    assert listed(client, "booking", q="REF-A") == {ref_a}
    assert listed(client, "booking", q="B-1") == {str(Booking.objects.get(reference="REF-B").pk)}
    # Substrings and other columns no longer walk three million rows.
    assert listed(client, "booking", q="REF") == set()
    assert listed(client, "booking", q="Crete") == set()


def test_booking_year_filter_is_a_date_range_with_fixed_choices(audience, superuser, client):
    client.force_login(superuser)
    this_year = date.today().year
    response = client.get(reverse("admin:campaigns_booking_changelist"))
    years = [
        c["display"]
        for c in response.context["cl"].filter_specs[-1].choices(response.context["cl"])
    ]
    assert years[1:] == [str(y) for y in range(this_year, this_year - 5, -1)]
    assert listed(client, "booking", year="2024") == {
        str(Booking.objects.get(reference="REF-B").pk)
    }
    assert len(listed(client, "booking", year="junk")) == 2  # ignored, not a 500


def test_contact_search_matches_name_and_email_parts_and_exact_keys(audience, superuser, client):
    alpha, beta = audience
    client.force_login(superuser)
    page = client.get(reverse("admin:campaigns_contact_changelist")).content.decode()
    assert 'id="searchbar"' in page and "part of a name or an email" in page
    assert listed(client, "contact", q="phons") == {str(alpha.pk)}
    assert listed(client, "contact", q="BETA.EXAMPLE") == {str(beta.pk)}
    assert listed(client, "contact", q="+33600000001") == {str(alpha.pk)}
    assert listed(client, "contact", q="A-1") == {str(alpha.pk)}  # the customer id


def test_store_operator_searches_and_filters_only_its_own_rows(audience, org, client):
    alpha, _beta = audience
    org.operator_a.is_staff = True
    org.operator_a.save(update_fields=["is_staff"])
    client.force_login(org.operator_a)
    assert listed(client, "contact", q="B-1") == set()
    assert listed(client, "contact", q="Betancourt") == set()
    assert listed(client, "contact", q="Alphonse") == {str(alpha.pk)}
    page = client.get(reverse("campaigns:audience"), {"q": "et"}).content.decode()
    assert "Betancourt" not in page
    response = client.get(reverse("admin:campaigns_contact_changelist"))
    language = next(
        spec for spec in response.context["cl"].filter_specs if spec.title == "language"
    )
    assert list(language.lookup_choices) == ["fr"]  # store B's "de" is not shown


def test_central_filter_choices_are_every_value_in_order(audience, superuser, client):
    client.force_login(superuser)
    response = client.get(reverse("admin:campaigns_contact_changelist"))
    language = next(
        spec for spec in response.context["cl"].filter_specs if spec.title == "language"
    )
    assert list(language.lookup_choices) == ["de", "fr"]
    if connection.vendor == "postgresql":
        assert skip_scan_values(Contact, "language", 1) == ["de"]


def test_message_search_by_customer_id_and_rule_filter(audience, org, superuser, client):
    alpha, beta = audience
    campaign = CampaignFactory(entity=org.hq)
    delivery = Delivery.objects.create(campaign=campaign, label="Spring", channel="email")
    mine, theirs = (
        Message.objects.create(
            delivery=delivery, contact=contact, secondary_id=0, channel="email",
            address=contact.email, status="excluded", rule=rule,
        )
        for contact, rule in ((alpha, "consent"), (beta, "pressure"))
    )  # fmt: skip
    client.force_login(superuser)
    assert listed(client, "message", q="A-1") == {str(mine.pk)}
    assert listed(client, "message", rule="pressure") == {str(theirs.pk)}
    response = client.get(reverse("admin:campaigns_message_changelist"))
    rules = next(
        spec for spec in response.context["cl"].filter_specs if spec.title == "excluding rule"
    )
    assert ("control_group", "control group") in rules.lookup_choices


def test_deep_pages_stop_at_the_bound_and_facets_are_off(audience, superuser, client):
    client.force_login(superuser)
    response = client.get(reverse("admin:campaigns_booking_changelist"), {"p": "999999"})
    assert response.status_code == 200
    response = client.get(reverse("admin:campaigns_contact_changelist"), {"_facets": "1"})
    assert response.status_code == 200 and "Hide counts" not in response.content.decode()
    paginator = BoundedPaginator(Contact.objects.order_by("pk"), 1)
    assert paginator.num_pages == 2 and paginator.validate_number(10**6) == 2


def test_pages_stop_at_the_bound(audience, monkeypatch):
    monkeypatch.setattr(BoundedPaginator, "max_pages", 1)
    paginator = BoundedPaginator(Contact.objects.order_by("pk"), 1)
    assert paginator.num_pages == 1 and paginator.page(5).object_list[0].external_id == "A-1"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="planner estimates: PostgreSQL only")
def test_an_unfiltered_huge_list_takes_the_planner_estimate(audience, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE campaigns_contact")
    monkeypatch.setattr(BoundedPaginator, "exact_below", 1)
    contacts = Contact.objects.order_by("pk")
    assert BoundedPaginator(contacts, 10).count == planner_estimate(contacts) == 2
    monkeypatch.setattr(BoundedPaginator, "exact_below", 10**6)
    # Below the bound, a list is counted exactly.
    assert BoundedPaginator(contacts.filter(language="fr"), 10).count == 1


def test_a_message_search_for_an_unknown_customer_id_lists_nothing(audience, superuser, client):
    """The search's empty contact list makes a query without SQL: the estimate is 0, not a
    500 (PostgreSQL's planner estimate)."""
    client.force_login(superuser)
    assert listed(client, "message", q="NOBODY") == set()
