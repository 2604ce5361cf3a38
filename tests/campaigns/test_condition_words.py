"""Conditions read in words wherever store operators see them, never as JSON."""

import json

import pytest
from django.urls import reverse

from campaigns.models import SavedQuery
from campaigns.targeting.words import condition_words


@pytest.mark.parametrize(
    ("tree", "words"),
    [
        ({}, "everyone"),
        ({"field": "email_consent", "op": "eq", "value": True}, "Email consent is yes"),
        ({"field": "language", "op": "in", "value": ["fr", "de"]}, "Language is one of “fr”, “de”"),
        ({"field": "email", "op": "is_empty"}, "Email is empty"),
        (
            {"field": "birth_date", "op": "more_than_days_ago", "value": 30},
            "Birth date is more than 30 days ago",
        ),
        (
            {
                "and": [
                    {"field": "email_consent", "op": "eq", "value": True},
                    {
                        "relation": "bookings",
                        "op": "exists",
                        "where": {"field": "booking_date", "op": "in_last_days", "value": 365},
                    },
                ]
            },
            "Email consent is yes and has bookings where Booking date is in the last 365 days",
        ),
        (
            {
                "or": [
                    {"relation": "bookings", "op": "count_gte", "value": 2},
                    {"not": {"field": "language", "op": "eq", "value": "fr"}},
                ]
            },
            "has at least 2 bookings or not (Language is “fr”)",
        ),
        (
            {
                "and": [
                    {"field": "language", "op": "eq", "value": "fr"},
                    {
                        "or": [
                            {"field": "sms_consent", "op": "eq", "value": True},
                            {"field": "push_consent", "op": "eq", "value": True},
                        ]
                    },
                ]
            },
            "Language is “fr” and (SMS consent is yes or Push consent is yes)",
        ),
        ({"field": "amount", "op": "between", "value": [10, 20]}, "Amount is between 10 and 20"),
        ("not a tree", "an unknown condition"),
    ],
)
def test_conditions_in_words(tree, words):
    dimension = "booking" if "amount" in json.dumps(tree) else "contact"
    assert condition_words(tree, dimension) == words


def test_the_audience_page_shows_saved_queries_in_words_and_no_json(org, client):
    SavedQuery.objects.create(
        name="Opted in",
        entity=org.store_a,
        dimension="contact",
        conditions={"field": "email_consent", "op": "eq", "value": True},
    )
    client.force_login(org.operator_a)
    body = client.get(reverse("campaigns:audience")).content.decode()
    assert "Email consent is yes" in body
    assert "Conditions (JSON)" not in body and "<textarea" not in body
    assert '<input type="hidden" id="conditions" name="conditions"' in body


def test_the_marketer_may_still_edit_the_json(org, client):
    client.force_login(org.marketer)
    assert "Conditions (JSON)" in client.get(reverse("campaigns:audience")).content.decode()


def test_the_count_answers_with_the_conditions_in_words(org, client):
    client.force_login(org.operator_a)
    response = client.post(
        reverse("campaigns:audience_count"),
        {"conditions": {"field": "sms_consent", "op": "eq", "value": False}},
        content_type="application/json",
    )
    assert response.json()["words"] == "SMS consent is no"
