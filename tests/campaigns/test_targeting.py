from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns import targeting
from campaigns.models import Booking, Contact, Store, Subscription, WorkTable
from campaigns.targeting import TargetingError, compile_conditions


@pytest.fixture
def people(org):
    """Three contacts of STORE_A and one of STORE_B, with bookings and a subscription."""
    today = date.today()
    store = Store.objects.create(code="ST-A", name="Shop A", city="Lille", entity=org.store_a)
    ann = Contact.objects.create(
        external_id="ANN",
        first_name="Ann",
        email="ann@example.com",
        entity=org.store_a,
        email_consent=True,
        language="fr",
    )
    bob = Contact.objects.create(
        external_id="BOB",
        first_name="Bob",
        email="bob@example.org",
        entity=org.store_a,
        email_consent=False,
    )
    cid = Contact.objects.create(
        external_id="CID",
        first_name="Cid",
        email="",
        entity=org.store_a,
        email_consent=True,
        blocklisted=True,
    )
    dan = Contact.objects.create(
        external_id="DAN",
        first_name="Dan",
        email="dan@example.com",
        entity=org.store_b,
        email_consent=True,
    )
    for n, (who, product, days_ago, amount) in enumerate(
        [
            (ann, "Ski week", 10, 900),
            (ann, "Ski week", 400, 1200),
            (ann, "Cruise", 20, 3000),
            (bob, "Ski week", 5, 700),
            (dan, "Ski week", 3, 800),
        ]
    ):
        Booking.objects.create(
            contact=who,
            store=store,
            reference=f"R{n}",
            product=product,
            booking_date=today - timedelta(days=days_ago),
            amount=amount,
        )
    Subscription.objects.create(contact=bob, product="Club", start_date=today)
    return {"ann": ann, "bob": bob, "cid": cid, "dan": dan}


def ids(queryset):
    return set(queryset.values_list("external_id", flat=True))


def select(conditions, dimension="contact", **kwargs):
    return targeting.target_queryset(dimension, conditions, **kwargs)


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, {"ANN", "BOB", "CID", "DAN"}),
        ({"field": "email", "op": "contains", "value": "@EXAMPLE.com"}, {"ANN", "DAN"}),
        ({"field": "email", "op": "starts_with", "value": "bo"}, {"BOB"}),
        ({"field": "email", "op": "is_empty"}, {"CID"}),
        ({"field": "first_name", "op": "in", "value": ["Ann", "Dan"]}, {"ANN", "DAN"}),
        ({"field": "first_name", "op": "ne", "value": "ann"}, {"BOB", "CID", "DAN"}),
        ({"field": "entity.code", "op": "eq", "value": "STORE_B"}, {"DAN"}),
        (
            {
                "and": [
                    {"field": "email_consent", "op": "eq", "value": True},
                    {"field": "blocklisted", "op": "eq", "value": False},
                ]
            },
            {"ANN", "DAN"},
        ),
        (
            {
                "or": [
                    {"field": "language", "op": "eq", "value": "fr"},
                    {"field": "first_name", "op": "eq", "value": "Bob"},
                ]
            },
            {"ANN", "BOB"},
        ),
        ({"not": {"field": "email_consent", "op": "eq", "value": True}}, {"BOB"}),
        ({"relation": "bookings", "op": "exists"}, {"ANN", "BOB", "DAN"}),
        ({"relation": "bookings", "op": "not_exists"}, {"CID"}),
        (
            {
                "relation": "bookings",
                "op": "exists",
                "where": {"field": "booking_date", "op": "in_last_days", "value": 7},
            },
            {"BOB", "DAN"},
        ),
        ({"relation": "bookings", "op": "count_gte", "value": 2}, {"ANN"}),
        (
            {
                "relation": "bookings",
                "op": "count_gte",
                "value": 2,
                "where": {"field": "product", "op": "eq", "value": "Ski week"},
            },
            {"ANN"},
        ),
        (
            {
                "relation": "bookings",
                "op": "exists",
                "where": {"field": "amount", "op": "between", "value": [750, 1000]},
            },
            {"ANN", "DAN"},
        ),
        ({"relation": "subscriptions", "op": "exists"}, {"BOB"}),
    ],
)
def test_conditions_select_the_right_contacts(people, conditions, expected):
    assert ids(select(conditions)) == expected


def test_a_booking_query_returns_one_row_per_booking_with_contact_fields(people):
    rows = select(
        {
            "and": [
                {"field": "product", "op": "eq", "value": "Ski week"},
                {"field": "contact.email_consent", "op": "eq", "value": True},
            ]
        },
        "booking",
    )
    assert set(rows.values_list("reference", flat=True)) == {"R0", "R1", "R4"}


def test_exact_counts_for_contacts_and_for_secondary_rows(people):
    assert targeting.count("contact", {}).as_dict() == {"rows": 4, "contacts": 4}
    ski = {"field": "product", "op": "eq", "value": "Ski week"}
    assert targeting.count("booking", ski).as_dict() == {"rows": 4, "contacts": 3}


def test_a_count_is_one_query_that_loads_no_row(people):
    conditions = {"relation": "bookings", "op": "count_gte", "value": 1}
    with CaptureQueriesContext(connection) as queries:
        targeting.count("booking", {"field": "contact.email_consent", "op": "eq", "value": True})
        targeting.count("contact", conditions)
    assert len(queries) == 2
    assert all("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_counts_only_cover_what_the_user_may_see(people, org):
    assert targeting.count("contact", {}, user=org.operator_a).rows == 3
    assert targeting.count("contact", {}, user=org.operator_b).rows == 1
    assert targeting.count("contact", {}, user=org.marketer).rows == 4
    assert targeting.count("contact", {}, user=org.outsider).rows == 0
    assert targeting.count("contact", {}, user=org.marketer, entity=org.south).rows == 1


@pytest.mark.parametrize(
    ("conditions", "path", "message"),
    [
        ({"field": "password", "op": "eq", "value": "x"}, "field", "unknown field “password”"),
        ({"field": "email", "op": "gt", "value": "x"}, "op", "does not apply to text"),
        ({"field": "email_consent", "op": "eq", "value": "yes"}, "value", "true or false"),
        ({"field": "birth_date", "op": "lt", "value": "31/12/1990"}, "value", "YYYY-MM-DD"),
        ({"field": "birth_date", "op": "in_last_days", "value": -3}, "value", "whole number"),
        ({"field": "first_name", "op": "in", "value": []}, "value", "list of 1 to"),
        (
            {
                "and": [
                    {"field": "email", "op": "eq", "value": "a"},
                    {"field": "nope", "op": "eq", "value": 1},
                ]
            },
            "and[1].field",
            "unknown field",
        ),
        ({"or": []}, "or", "non-empty list"),
        ({"not": {"relation": "orders", "op": "exists"}}, "not.relation", "unknown relation"),
        ({"relation": "bookings", "op": "count_gte", "value": 0}, "value", "at least 1"),
        (
            {
                "relation": "bookings",
                "op": "exists",
                "where": {"field": "status", "op": "eq", "value": "lost"},
            },
            "where.value",
            "not one of",
        ),
        ({"field": "email", "op": "eq", "value": "a", "sql": "DROP"}, "", "unknown key"),
        ([1, 2], "", "must be an object"),
    ],
)
def test_bad_trees_are_reported_with_the_path_of_the_node(conditions, path, message):
    with pytest.raises(TargetingError) as excinfo:
        compile_conditions("contact", conditions)
    paths = {p for p, _ in excinfo.value.problems}
    assert path in paths, excinfo.value.problems
    assert any(message in m for _, m in excinfo.value.problems)


def test_every_problem_is_reported_at_once():
    with pytest.raises(TargetingError) as excinfo:
        compile_conditions(
            "contact",
            {
                "and": [
                    {"field": "x", "op": "eq", "value": 1},
                    {"field": "email", "op": "lt", "value": 1},
                ]
            },
        )
    assert len(excinfo.value.problems) == 2


def test_an_unknown_dimension_is_refused():
    with pytest.raises(TargetingError, match="unknown dimension"):
        compile_conditions("orders", {})


# Work tables and distribution -------------------------------------------------------------


def test_a_work_table_is_its_own_table_written_by_one_create_as_select(people):
    # Adapted: work tables were rows of one shared table (one INSERT … SELECT); each step is
    # now its own table, created by one CREATE [UNLOGGED] TABLE … AS SELECT.
    queryset = select({"relation": "bookings", "op": "exists"})
    with CaptureQueriesContext(connection) as queries:
        written = targeting.materialise(queryset, dimension="contact", run_key="r1", name="t")
    creates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("CREATE ")]
    entry = WorkTable.objects.get(run_key="r1", name="t")
    assert written == 3 and entry.rows == 3 and len(creates) == 1
    assert f'TABLE "{entry.table_name}" AS SELECT' in creates[0]
    assert ("UNLOGGED" in creates[0]) == (connection.vendor == "postgresql")
    rows = targeting.work_table("r1", "t")
    assert set(rows.values_list("contact__external_id", flat=True)) == {"ANN", "BOB", "DAN"}
    assert set(rows.values_list("secondary_id", flat=True)) == {None}


def test_rematerialising_replaces_the_rows(people):
    queryset = select({})
    targeting.materialise(queryset, dimension="contact", run_key="r1", name="t")
    targeting.materialise(queryset, dimension="contact", run_key="r1", name="t")
    assert targeting.work_table("r1", "t").count() == 4


def test_a_booking_work_table_keeps_the_secondary_record(people):
    queryset = select({"field": "product", "op": "eq", "value": "Ski week"}, "booking")
    targeting.materialise(
        queryset, dimension="booking", run_key="r2", name="ski", entity_path="store__entity"
    )
    rows = targeting.work_table("r2", "ski")
    assert rows.count() == 4
    refs = set(
        Booking.objects.filter(pk__in=rows.values("secondary_id")).values_list(
            "reference", flat=True
        )
    )
    assert refs == {"R0", "R1", "R3", "R4"}


def test_distribution_splits_among_entities_with_limits(people, org):
    targeting.materialise(select({}), dimension="contact", run_key="r3", name="all")
    report = targeting.distribute(run_key="r3", source="all", target="split", default_limit=2)
    assert report.kept_by_entity() == {org.store_a.pk: 2, org.store_b.pk: 1}
    share = report.shares[org.store_a.pk]
    assert (share.eligible, share.kept, share.dropped) == (3, 2, 1)
    # ties go to the lowest id: the first two contacts of STORE_A are kept
    kept = set(targeting.work_table("r3", "split").values_list("contact__external_id", flat=True))
    assert kept == {"ANN", "BOB", "DAN"}


def test_distribution_uses_one_limit_per_entity_and_a_default(people, org):
    targeting.materialise(select({}), dimension="contact", run_key="r3", name="all")
    report = targeting.distribute(
        run_key="r3", source="all", target="t", limits={org.store_a.pk: 1}, default_limit=0
    )
    assert report.kept_by_entity() == {org.store_a.pk: 1}
    assert report.shares[org.store_b.pk].dropped == 1
    everything = targeting.distribute(run_key="r3", source="all", target="t")
    assert everything.kept == 4 and everything.unassigned == 0


def test_distribution_follows_the_priority_order(people, org):
    targeting.materialise(select({}), dimension="contact", run_key="r3", name="all")
    targeting.distribute(
        run_key="r3",
        source="all",
        target="t",
        default_limit=1,
        order=["-contact__last_name", "-contact_id"],
    )
    kept = set(targeting.work_table("r3", "t").values_list("contact__external_id", flat=True))
    assert kept == {"CID", "DAN"}  # highest contact id in each entity (no last names)
    with pytest.raises(ValueError, match="Cannot rank"):
        targeting.distribute(run_key="r3", source="all", target="t", order=["contact__email"])


def test_distribution_can_be_limited_to_some_entities(people, org):
    targeting.materialise(select({}), dimension="contact", run_key="r3", name="all")
    only_b = targeting.distribute(run_key="r3", source="all", target="b", entities=[org.store_b.pk])
    assert only_b.kept_by_entity() == {org.store_b.pk: 1}


def test_old_work_tables_are_purged(people):
    from django.utils import timezone

    targeting.materialise(select({}), dimension="contact", run_key="r4", name="all")
    assert targeting.purge_work_tables() == 0
    assert targeting.purge_work_tables(now=timezone.now() + timedelta(days=8)) == 4


def _tables() -> set[str]:
    return {name for name in connection.introspection.table_names() if name.startswith("wt_")}


def test_purge_drops_the_per_step_tables(people):
    from django.utils import timezone

    targeting.materialise(select({}), dimension="contact", run_key="r5", name="all")
    targeting.distribute(run_key="r5", source="all", target="kept", default_limit=1)
    names = {entry.table_name for entry in WorkTable.objects.filter(run_key="r5")}
    assert len(names) == 2 and names <= _tables()
    assert targeting.purge_work_tables() == 0 and names <= _tables()
    assert targeting.purge_work_tables(now=timezone.now() + timedelta(days=8)) == 4 + 2
    assert not names & _tables()
    assert not WorkTable.objects.filter(run_key="r5").exists()
    assert targeting.work_table("r5", "all").count() == 0  # a purged step reads as empty
    assert targeting.purge_work_tables(now=timezone.now() + timedelta(days=8)) == 0  # idempotent


def test_writing_a_step_again_drops_its_previous_table(people):
    targeting.materialise(select({}), dimension="contact", run_key="r6", name="t")
    first = WorkTable.objects.get(run_key="r6", name="t").table_name
    targeting.materialise(select({}), dimension="contact", run_key="r6", name="t")
    second = WorkTable.objects.get(run_key="r6", name="t")
    assert second.table_name != first and first not in _tables()
    assert second.table_name in _tables() and second.count() == 4
    assert targeting.drop_run("r6") == 4 and second.table_name not in _tables()


def test_the_interface_reads_contacts_and_indexes_on_demand(people):
    targeting.materialise(select({}), dimension="contact", run_key="r7", name="t")
    entry = WorkTable.objects.get(run_key="r7", name="t")
    assert set(entry.contact_ids().values_list("contact_id", flat=True)) == {
        person.pk for person in people.values()
    }
    assert sorted(entry.queryset().values_list("id", flat=True)) == [1, 2, 3, 4]
    entry.ensure_index("contact_id")
    entry.ensure_index("contact_id")  # idempotent
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, entry.table_name)
    assert any(item["columns"] == ["contact_id"] for item in constraints.values())
    with pytest.raises(ValueError, match="indexed on"):
        entry.ensure_index("data")


def test_an_empty_target_is_an_empty_table(people):
    assert targeting.materialise(
        Contact.objects.none(), dimension="contact", run_key="r8", name="t"
    ) == 0  # fmt: skip
    entry = WorkTable.objects.get(run_key="r8", name="t")
    assert entry.table_name in _tables() and entry.queryset().count() == 0


def test_the_default_distribution_priority_is_the_longest_standing_contacts(people, org):
    targeting.materialise(select({}), dimension="contact", run_key="r9", name="all")
    targeting.distribute(run_key="r9", source="all", target="t", default_limit=1)
    kept = set(targeting.work_table("r9", "t").values_list("contact_id", flat=True))
    by_entity: dict[int, int] = {}
    for person in sorted(people.values(), key=lambda person: person.pk):
        by_entity.setdefault(person.entity_id, person.pk)
    assert kept == set(by_entity.values())


def _indexed(entry: WorkTable, column: str) -> bool:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, entry.table_name)
    return any(item["index"] and item["columns"] == [column] for item in constraints.values())


def test_a_table_is_indexed_only_when_preparation_reads_it_by_id(people, campaign):
    from campaigns.delivery import preparation
    from campaigns.models import Delivery

    targeting.materialise(select({}), dimension="contact", run_key="r10", name="target")
    entry = WorkTable.objects.get(run_key="r10", name="target")
    assert not _indexed(entry, "id") and not _indexed(entry, "contact_id")
    delivery = Delivery.objects.create(campaign=campaign, label="Spring", channel="email")
    delivery = preparation.prepare(delivery=delivery, run_key="r10", table="target")
    assert delivery.targeted == 4
    assert _indexed(entry, "id") and not _indexed(entry, "contact_id")
