"""Property-based checks of the compiler over random condition trees: a count is the number of
rows the query selects, and a condition and its negation split the audience exactly."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import targeting
from campaigns.models import Booking, Contact

TODAY = date.today()

leaf = st.one_of(
    st.builds(lambda v: {"field": "email_consent", "op": "eq", "value": v}, st.booleans()),
    st.builds(
        lambda op, v: {"field": "language", "op": op, "value": v},
        st.sampled_from(["eq", "ne"]),
        st.sampled_from(["en", "fr", "es"]),
    ),
    st.builds(
        lambda op, days: {
            "field": "birth_date",
            "op": op,
            "value": (TODAY - timedelta(days=days)).isoformat(),
        },
        st.sampled_from(["lt", "gte"]),
        st.integers(0, 80 * 365),
    ),
    st.builds(
        lambda op: {"field": "birth_date", "op": op}, st.sampled_from(["is_empty", "is_not_empty"])
    ),
    st.builds(
        lambda op, product: {
            "relation": "bookings",
            "op": op,
            "where": {"field": "product", "op": "eq", "value": product},
        },
        st.sampled_from(["exists", "not_exists"]),
        st.sampled_from(["Ski", "Cruise"]),
    ),
    st.builds(lambda n: {"relation": "bookings", "op": "count_gte", "value": n}, st.integers(1, 3)),
)
trees = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=6,
)


@pytest.fixture
def audience(org):
    rows = [
        ("en", True, 30, ["Ski"]),
        ("fr", False, 50, ["Ski", "Ski", "Cruise"]),
        ("es", True, None, []),
        ("fr", True, 20, ["Cruise"]),
        ("en", False, None, ["Ski"]),
        ("es", False, 70, ["Cruise", "Cruise"]),
    ]
    for n, (language, consent, age, products) in enumerate(rows):
        birth = TODAY - timedelta(days=age * 365) if age else None
        contact = Contact.objects.create(
            external_id=f"P{n}",
            entity=org.store_a,
            language=language,
            email_consent=consent,
            birth_date=birth,
        )
        for k, product in enumerate(products):
            Booking.objects.create(
                contact=contact, reference=f"P{n}-{k}", product=product, booking_date=TODAY
            )
    return len(rows)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=trees)
def test_counts_match_the_selection_and_negation_splits_exactly(audience, tree):
    count = targeting.count("contact", tree).rows
    selected = set(targeting.target_queryset("contact", tree).values_list("pk", flat=True))
    assert count == len(selected)
    negated = set(targeting.target_queryset("contact", {"not": tree}).values_list("pk", flat=True))
    assert selected.isdisjoint(negated)
    assert len(selected) + len(negated) == audience
