"""Shared, named actors: the organisation every story in the suite is told with.

HQ (central) ─┬─ NORTH (region) ── STORE_A (local)
              └─ SOUTH (region) ── STORE_B (local)

marketer and approver belong to HQ; operator_a / approver_a to STORE_A; operator_b to STORE_B;
regional to NORTH; outsider belongs to nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from portal.celery import app as celery_app
from portal.choices import EntityKind, Role
from tests.factories import EntityFactory, MembershipFactory, UserFactory


@pytest.fixture(autouse=True)
def _eager_celery():
    """Unit tests run tasks in-process; the integration folder starts a real worker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _fast_test_settings(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _empty_cache():
    """Throttling counters (password resets) live in the cache: every test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def org(db):
    hq = EntityFactory(code="HQ", name="Headquarters", kind=EntityKind.CENTRAL)
    north = EntityFactory(code="NORTH", name="North", kind=EntityKind.REGION, parent=hq)
    south = EntityFactory(code="SOUTH", name="South", kind=EntityKind.REGION, parent=hq)
    store_a = EntityFactory(code="STORE_A", name="Store A", parent=north)
    store_b = EntityFactory(code="STORE_B", name="Store B", parent=south)

    def member(username: str, entity, role: str):
        user = UserFactory(username=username)
        MembershipFactory(user=user, entity=entity, role=role)
        user.refresh_from_db()
        return user

    return SimpleNamespace(
        hq=hq,
        north=north,
        south=south,
        store_a=store_a,
        store_b=store_b,
        marketer=member("marketer", hq, Role.CENTRAL_MARKETER),
        approver=member("approver", hq, Role.CENTRAL_APPROVER),
        operator_a=member("operator_a", store_a, Role.LOCAL_OPERATOR),
        approver_a=member("approver_a", store_a, Role.LOCAL_APPROVER),
        operator_b=member("operator_b", store_b, Role.LOCAL_OPERATOR),
        regional=member("regional", north, Role.LOCAL_OPERATOR),
        outsider=UserFactory(username="outsider"),
    )


def pytest_collection_modifyitems(config, items):
    """Browser tests last: Playwright keeps an event loop running in the main thread until the
    session ends, and Django's async-safety guard would trip on every later ORM call."""
    items.sort(key=lambda item: "browser" in item.keywords)


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def png():
    from django.core.files.uploadedfile import SimpleUploadedFile

    def make(name="flyer.png", content=PNG_BYTES, content_type="image/png"):
        return SimpleUploadedFile(name, content, content_type=content_type)

    return make


@pytest.fixture
def form_campaign(org):
    """A by-form reference campaign with one field of every type."""
    from tests.factories import CampaignFactory, FieldFactory

    campaign = CampaignFactory(name="Store event", collaborative_type="by_form", entity=org.hq)
    FieldFactory(
        campaign=campaign,
        name="headline",
        label="Headline",
        field_type="text",
        required=True,
        max_length=40,
        position=1,
    )
    FieldFactory(
        campaign=campaign,
        name="details",
        label="Details",
        field_type="long_text",
        max_length=200,
        position=2,
    )
    FieldFactory(
        campaign=campaign,
        name="discount",
        label="Discount",
        field_type="number",
        required=True,
        min_value=5,
        max_value=50,
        position=3,
    )
    FieldFactory(
        campaign=campaign, name="event_date", label="Event date", field_type="date", position=4
    )
    FieldFactory(
        campaign=campaign,
        name="segment",
        label="Segment",
        field_type="choice",
        choices=["All", "Loyal"],
        required=True,
        position=5,
    )
    FieldFactory(
        campaign=campaign, name="with_map", label="With map", field_type="boolean", position=6
    )
    FieldFactory(
        campaign=campaign,
        name="flyer",
        label="Flyer",
        field_type="file",
        allowed_extensions="png,pdf",
        max_file_size_kb=1,
        position=7,
    )
    return campaign


VALID_FORM = {
    "headline": "Free coffee",
    "details": "All day long",
    "discount": "15",
    "event_date": "2030-05-01",
    "segment": "Loyal",
    "with_map": "on",
}


@pytest.fixture
def valid_values():
    return dict(VALID_FORM)


@pytest.fixture
def make_package(org):
    """Build a package on a new reference campaign; publish=True publishes it as marketer."""
    from packages import services as package_services
    from tests.factories import CampaignFactory, PackageFactory

    def make(kind="by_form", *, campaign=None, audience=None, publish=True, **fields):
        campaign = campaign or CampaignFactory(collaborative_type=kind, entity=org.hq)
        audience = [org.store_a] if audience is None else audience
        package = PackageFactory(reference_campaign=campaign, audience=audience, **fields)
        if publish:
            package = package_services.publish_package(package=package, actor=org.marketer).package
        return package

    return make
