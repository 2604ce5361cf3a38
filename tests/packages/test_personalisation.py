import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage

from campaigns.models import PersonalisationField
from campaigns.personalisation import clean_values
from packages import services
from packages.models import Order
from tests.conftest import PNG_BYTES
from tests.factories import FieldFactory


def errors_for(campaign, data, files=None, existing=None, strict=False):
    with pytest.raises(ValidationError) as excinfo:
        clean_values(campaign.personalisation_fields.all(), data, files, existing, strict=strict)
    return excinfo.value.message_dict


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"headline": ""}, "headline", "This field is required."),
        ({"headline": "x" * 41}, "headline", "at most 40 characters"),
        ({"details": "x" * 201}, "details", "at most 200 characters"),
        ({"discount": "lots"}, "discount", "Enter a number."),
        ({"discount": "4"}, "discount", "greater than or equal to 5"),
        ({"discount": "51"}, "discount", "less than or equal to 50"),
        ({"event_date": "31/31/2030"}, "event_date", "Enter a valid date."),
        ({"segment": "Everybody"}, "segment", "Select a valid choice."),
        ({"segment": ""}, "segment", "This field is required."),
    ],
)
def test_every_bad_value_gets_a_field_level_error(
    form_campaign, valid_values, change, field, message
):
    errors = errors_for(form_campaign, {**valid_values, **change})
    assert list(errors) == [field]
    assert message in " ".join(errors[field])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("flyer.exe", b"MZ\x90\x00", "File extension “exe” is not allowed"),
        ("flyer.png", b"MZ\x90\x00 not a png", "is not a .png file"),
        ("flyer.png", PNG_BYTES + b"\x00" * 2048, "the limit is 1 KiB"),
    ],
)
def test_bad_files_are_refused(form_campaign, valid_values, png, name, content, message):
    errors = errors_for(form_campaign, valid_values, {"flyer": png(name=name, content=content)})
    assert message in " ".join(errors["flyer"])


def test_valid_values_become_json(form_campaign, valid_values, png):
    values, uploads = clean_values(
        form_campaign.personalisation_fields.all(), valid_values, {"flyer": png()}
    )
    assert values == {
        "headline": "Free coffee",
        "details": "All day long",
        "discount": "15",
        "event_date": "2030-05-01",
        "segment": "Loyal",
        "with_map": True,
    }
    assert list(uploads) == ["flyer"]


def test_a_stored_file_stays_unless_replaced_or_removed(form_campaign, valid_values):
    stored = {"flyer": {"name": "old.png", "path": "orders/x/old.png", "size": 10}}
    values, _ = clean_values(form_campaign.personalisation_fields.all(), valid_values, {}, stored)
    assert values["flyer"] == stored["flyer"]
    values, _ = clean_values(
        form_campaign.personalisation_fields.all(),
        {**valid_values, "flyer-clear": "on"},
        {},
        stored,
    )
    assert values["flyer"] is None


def test_json_input_with_unknown_fields_is_refused_in_strict_mode(form_campaign, valid_values):
    errors = errors_for(form_campaign, {**valid_values, "headlien": "typo"}, strict=True)
    assert "headlien" in errors["__all__"][0]


def test_an_uploaded_file_is_stored_and_downloadable_by_its_entity_only(
    make_package, form_campaign, org, valid_values, png, client
):
    package = make_package(campaign=form_campaign)
    order = services.place_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        data=valid_values,
        files={"flyer": png()},
    ).order
    stored = order.values["flyer"]
    assert stored["name"] == "flyer.png" and default_storage.exists(stored["path"])
    client.force_login(org.operator_a)
    response = client.get(f"/orders/{order.pk}/files/flyer/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    client.force_login(org.operator_b)
    assert client.get(f"/orders/{order.pk}/files/flyer/").status_code == 404


def test_replacing_a_file_deletes_the_old_one_after_commit(
    make_package, form_campaign, org, valid_values, png, django_capture_on_commit_callbacks
):
    package = make_package(campaign=form_campaign)
    order = services.place_order(
        package=package,
        entity=org.store_a,
        actor=org.operator_a,
        data=valid_values,
        files={"flyer": png()},
    ).order
    old_path = order.values["flyer"]["path"]
    with django_capture_on_commit_callbacks(execute=True):
        services.update_order(
            order=order,
            actor=org.operator_a,
            data=valid_values,
            files={"flyer": png(name="new.png")},
        )
    order.refresh_from_db()
    assert order.values["flyer"]["name"] == "new.png"
    assert not default_storage.exists(old_path)
    assert Order.objects.count() == 1


# Field definitions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "field", "message"),
    [
        ({"name": "Bad Name"}, "name", "lower-case letters"),
        ({"name": "contact"}, "name", "reserved in message templates"),
        ({"name": "class"}, "name", "reserved in message templates"),
        ({"field_type": "choice", "choices": []}, "choices", "non-empty JSON list"),
        ({"field_type": "choice", "choices": ["A", "A"]}, "choices", "distinct"),
        ({"field_type": "text", "choices": ["A"]}, "choices", "Only choice fields"),
        ({"field_type": "number", "default": "abc"}, "default", "The default is not valid"),
        ({"field_type": "number", "min_value": 10, "max_value": 1}, "max_value", "not be below"),
        ({"field_type": "file", "allowed_extensions": ""}, "allowed_extensions", "at least one"),
    ],
)
def test_field_definitions_are_validated(form_campaign, attrs, field, message):
    definition = PersonalisationField(
        campaign=form_campaign,
        label="Label",
        **{"name": "new_field", "field_type": "text", **attrs},
    )
    with pytest.raises(ValidationError) as excinfo:
        definition.full_clean()
    assert message in " ".join(excinfo.value.message_dict[field])


def test_field_names_are_unique_per_campaign(form_campaign):
    duplicate = PersonalisationField(
        campaign=form_campaign, name="headline", label="Again", field_type="text"
    )
    with pytest.raises(ValidationError, match="already exists"):
        duplicate.full_clean()
    FieldFactory(name="headline", label="Same name, other campaign")  # allowed elsewhere
