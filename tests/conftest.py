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
