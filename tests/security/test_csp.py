"""Finding 10: every page carries a strict Content-Security-Policy, and no template needs more.

The browser test (tests/browser/test_csp.py) checks that the pages of every role raise no
violation; these tests check the header itself and that no template reintroduces inline code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse


def directives(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize("url", ["login", "password_reset", "admin:login"])
def test_anonymous_pages_carry_the_policy(client, db, url):
    policy = directives(client.get(reverse(url)))
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]


def test_scripts_run_only_from_the_portals_own_files(client, db):
    script_src = directives(client.get(reverse("login")))["script-src"]
    assert "'self'" in script_src
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    assert "*" not in script_src and "https:" not in script_src
    # Inline handlers are allowed only by exact hash, never wholesale.
    assert all(
        source in {"'self'", "'unsafe-hashes'"} or source.startswith(("'sha256-", "'nonce-"))
        for source in script_src
    )


def test_logged_in_pages_and_the_admin_carry_the_policy(client, org):
    client.force_login(org.marketer)
    for url in (reverse("portal:dashboard"), reverse("admin:index")):
        response = client.get(url)
        assert response.status_code == 200
        assert directives(response)["default-src"] == ["'self'"]


def test_the_lockout_page_carries_the_policy(client, org):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(reverse("login"), {"username": "marketer", "password": "x"})
    assert response.status_code == 429
    assert directives(response)["script-src"][0] == "'self'"


INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\b(?:src|nonce)=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE)


def project_templates() -> list[Path]:
    base = Path(settings.BASE_DIR)
    found = []
    for folder in [base / "templates", *base.glob("*/templates")]:
        found += [path for path in folder.rglob("*.html") if "emails" not in path.parts]
    return found


def test_no_template_has_inline_scripts_or_event_handlers():
    templates = project_templates()
    assert len(templates) > 20
    offenders = [
        f"{path.relative_to(settings.BASE_DIR)}: {match.group(0)}"
        for path in templates
        for pattern in (INLINE_SCRIPT, INLINE_HANDLER, JAVASCRIPT_URL)
        for match in pattern.finditer(path.read_text())
    ]
    assert offenders == []
