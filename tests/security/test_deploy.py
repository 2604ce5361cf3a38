"""`manage.py check --deploy` is clean with production values, and says so when they are not."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.conf import cache_config


@pytest.fixture
def production_env(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECURE_", "SESSION_", "CSRF_", "CACHE_"))
    }
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        SITE_URL="https://portal.example.com",
        ALLOWED_HOSTS="portal.example.com",
        CACHE_URL="redis://cache.internal:6379/1",
        PORTAL_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    return env


def deploy_check(env):
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("cache", ["redis://cache.internal:6379/1", None])
def test_deploy_checks_are_clean_with_production_values(production_env, cache):
    if cache is None:  # one web process: its own memory counts password resets
        del production_env["CACHE_URL"]
    result = deploy_check(production_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_checks_catch_debug_left_on(production_env):
    result = deploy_check({**production_env, "DEBUG": "true"})
    assert result.returncode != 0
    assert "security.W018" in result.stderr


def test_deploy_checks_catch_a_disabled_ssl_redirect(production_env):
    result = deploy_check({**production_env, "SECURE_SSL_REDIRECT": "false"})
    assert result.returncode != 0
    assert "security.W008" in result.stderr


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("", "django.core.cache.backends.locmem.LocMemCache"),
        ("locmem://", "django.core.cache.backends.locmem.LocMemCache"),
        ("redis://cache:6379/1", "django.core.cache.backends.redis.RedisCache"),
        ("rediss://user:pw@cache:6380/0", "django.core.cache.backends.redis.RedisCache"),
    ],
)
def test_the_cache_comes_from_cache_url(url, backend):
    assert cache_config({"CACHE_URL": url} if url else {}, "CACHE_URL")["BACKEND"] == backend


@pytest.mark.parametrize("url", ["memcached://cache:11211", "redis://", "file:///tmp/cache"])
def test_a_bad_cache_url_names_the_variable(url):
    with pytest.raises(ImproperlyConfigured, match="CACHE_URL"):
        cache_config({"CACHE_URL": url}, "CACHE_URL")
