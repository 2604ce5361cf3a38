"""Issue 16, item 7: a personalisation field shows and keeps only its type's options; limits
read "5", not "5.0000"."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from campaigns.admin import PersonalisationFieldForm
from campaigns.models import PersonalisationField
from tests.factories import CampaignFactory, FieldFactory


@pytest.fixture
def reference(org):
    return CampaignFactory(name="Opening", collaborative_type="by_form", entity=org.hq)


def form_data(**fields):
    return {
        "name": "offer", "label": "Offer", "field_type": "text", "position": 0,
        "help_text": "", "default": "", "max_length": "", "min_value": "", "max_value": "",
        "choices": "", "allowed_extensions": "", "max_file_size_kb": "", **fields,
    }  # fmt: skip


def test_the_inline_shows_no_file_defaults_on_other_types_and_plain_numbers(reference, org, client):
    FieldFactory(campaign=reference, name="offer", field_type="text", max_length=80)
    FieldFactory(campaign=reference, name="discount", field_type="number", min_value=5,
                 max_value="12.5")  # fmt: skip
    client.force_login(org.marketer)
    page = client.get(reverse("admin:campaigns_campaign_change", args=[reference.pk]))
    body = page.content.decode()
    values = dict(re.findall(r'name="personalisation_fields-\d-(\w+)"[^>]*?value="([^"]*)"', body))
    assert 'name="personalisation_fields-0-allowed_extensions"' in body
    assert (
        re.search(r'name="personalisation_fields-0-allowed_extensions"[^>]*value="pdf', body)
        is None
    )
    assert (
        re.search(r'name="personalisation_fields-0-max_file_size_kb"[^>]*value="2048"', body)
        is None
    )
    assert (
        re.search(r'<textarea name="personalisation_fields-0-choices"[^>]*>\s*\[\]', body) is None
    )
    assert 'name="personalisation_fields-1-min_value" value="5"' in body
    assert 'name="personalisation_fields-1-max_value" value="12.5"' in body
    assert "5.0000" not in body and values  # the inputs are there
    assert "campaigns/personalisation_fields.js" in body
    assert 'data-options="{' in body


def test_a_text_field_keeps_no_options_of_other_types(reference):
    form = PersonalisationFieldForm(
        form_data(max_length="40", allowed_extensions="pdf", max_file_size_kb="10",
                  choices='["A"]', min_value="1"),
        instance=PersonalisationField(campaign=reference),
    )  # fmt: skip
    assert form.is_valid(), form.errors
    field = form.save()
    assert (field.max_length, field.allowed_extensions, field.max_file_size_kb) == (40, "", None)
    assert (field.choices, field.min_value) == ([], None)


def test_a_file_field_gets_the_usual_limits_when_left_empty(reference):
    form = PersonalisationFieldForm(
        form_data(name="flyer", field_type="file", max_length="40"),
        instance=PersonalisationField(campaign=reference),
    )
    assert form.is_valid(), form.errors
    field = form.save()
    assert (field.allowed_extensions, field.max_file_size_kb) == ("pdf,png,jpg,jpeg", 2048)
    assert field.max_length is None


def test_a_choice_field_keeps_its_options(reference):
    form = PersonalisationFieldForm(
        form_data(name="segment", field_type="choice", choices='["Loyal", "New"]'),
        instance=PersonalisationField(campaign=reference),
    )
    assert form.is_valid(), form.errors
    assert form.save().choices == ["Loyal", "New"]


@pytest.mark.parametrize(
    ("attrs", "field", "message"),
    [
        ({"field_type": "text", "allowed_extensions": "pdf"}, "allowed_extensions", "Only file"),
        ({"field_type": "number", "max_file_size_kb": 10}, "max_file_size_kb", "Only file"),
        ({"field_type": "date", "max_length": 10}, "max_length", "Only text"),
        ({"field_type": "text", "min_value": 1}, "min_value", "Only number"),
    ],
)
def test_the_model_refuses_options_of_other_types(reference, attrs, field, message):
    definition = PersonalisationField(campaign=reference, name="f", label="F", **attrs)
    with pytest.raises(ValidationError) as excinfo:
        definition.full_clean()
    assert message in " ".join(excinfo.value.message_dict[field])
