import pytest

from campaigns.models import Contact
from tests.factories import CampaignFactory


@pytest.fixture
def audience(org):
    """Ten contacts of STORE_A (A0..A9) and five of STORE_B (B0..B4)."""
    for n in range(10):
        Contact.objects.create(
            external_id=f"A{n}",
            entity=org.store_a,
            email_consent=n < 6,
            language="fr" if n % 2 else "en",
        )
    for n in range(5):
        Contact.objects.create(
            external_id=f"B{n}", entity=org.store_b, email_consent=True, language="en"
        )


@pytest.fixture
def campaign(org):
    return CampaignFactory(name="Spring", kind="parent", collaborative_type="", entity=org.hq)
