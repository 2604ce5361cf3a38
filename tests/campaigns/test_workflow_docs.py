"""docs/workflows.md documents every activity type, generated from the settings forms."""

from pathlib import Path

import pytest

from campaigns.models.workflow import ACTIVITY_TYPES
from campaigns.workflow.docs import workflows_markdown
from campaigns.workflow.forms import FORMS, settings_problems

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"


def test_every_activity_type_has_a_settings_form():
    assert set(FORMS) == {name for name, _ in ACTIVITY_TYPES}


def test_the_document_holds_the_reference_generated_from_the_forms():
    text = DOC.read_text()
    assert workflows_markdown() in text, "run: python manage.py workflow_docs"
    for name, _label in ACTIVITY_TYPES:
        assert f"(`{name}`)" in text
        for key in FORMS[name].base_fields:
            assert f"| `{key}` |" in text, (name, key)


@pytest.mark.django_db
@pytest.mark.parametrize("name", [name for name, _ in ACTIVITY_TYPES if name != "read_audience"])
def test_each_documented_example_is_valid(name, org):
    assert settings_problems(name, FORMS[name].example) == []
