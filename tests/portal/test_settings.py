import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal import conf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("helper", "name", "value"),
    [
        (lambda env: conf.env_bool(env, "DEBUG", False), "DEBUG", "maybe"),
        (lambda env: conf.env_int(env, "SECURE_HSTS_SECONDS", 0), "SECURE_HSTS_SECONDS", "1y"),
        (lambda env: conf.env_list(env, "ALLOWED_HOSTS", []), "ALLOWED_HOSTS", "a.com,,b.com"),
        (lambda env: conf.env_site_url(env, "SITE_URL", ""), "SITE_URL", "portal.example.com"),
        (
            lambda env: conf.database_config(env, "DATABASE_URL", Path("x.db")),
            "DATABASE_URL",
            "mysql://root@localhost/portal",
        ),
        (
            lambda env: conf.database_config(env, "DATABASE_URL", Path("x.db")),
            "DATABASE_URL",
            "sqlite://:memory:",
        ),
        (
            lambda env: conf.broker_url(env, "CELERY_BROKER_URL", Path("b.db")),
            "CELERY_BROKER_URL",
            "kafka://localhost",
        ),
        (lambda env: conf.email_config(env, "EMAIL_URL", Path("m")), "EMAIL_URL", "pigeon://x"),
        (lambda env: conf.email_config(env, "EMAIL_URL", Path("m")), "EMAIL_URL", "smtp://"),
    ],
)
def test_a_bad_value_names_the_variable(helper, name, value):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        helper({name: value})
    assert name in str(excinfo.value)
    assert value.split(",")[0] in str(excinfo.value)


def test_int_below_minimum_is_refused():
    with pytest.raises(ImproperlyConfigured, match="NOTIFICATION_MAX_ATTEMPTS=0 must be at"):
        conf.env_int({"NOTIFICATION_MAX_ATTEMPTS": "0"}, "NOTIFICATION_MAX_ATTEMPTS", 5, minimum=1)


def test_postgres_url_is_parsed_with_health_checks():
    config = conf.database_config(
        {"DATABASE_URL": "postgres://portal:s3cret@db.internal:5433/portal"},
        "DATABASE_URL",
        Path("unused"),
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "portal")
    assert config["CONN_HEALTH_CHECKS"] is True
    assert config["CONN_MAX_AGE"] == 300  # one connection per web or worker thread, kept


def test_persistent_connections_can_be_turned_off():
    config = conf.database_config(
        {"DATABASE_URL": "postgres://db.internal/portal", "DATABASE_CONN_MAX_AGE": "0"},
        "DATABASE_URL",
        Path("unused"),
    )
    assert config["CONN_MAX_AGE"] == 0


def test_default_database_is_sqlite_with_wal_and_immediate_transactions(tmp_path):
    config = conf.database_config({}, "DATABASE_URL", tmp_path / "portal.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]


def test_default_broker_needs_no_server(tmp_path):
    assert conf.broker_url({}, "CELERY_BROKER_URL", tmp_path / "b.db").startswith("sqla+sqlite:")
    for url in ("redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"):
        assert conf.broker_url({"CELERY_BROKER_URL": url}, "CELERY_BROKER_URL", tmp_path) == url


def test_smtp_url_gives_smtp_settings():
    config = conf.email_config(
        {"EMAIL_URL": "smtp://mailer:p%40ss@smtp.example.com:587?tls=true"}, "EMAIL_URL", Path()
    )
    assert config["EMAIL_BACKEND"].endswith("smtp.EmailBackend")
    assert config["EMAIL_HOST_PASSWORD"] == "p@ss"
    assert (config["EMAIL_PORT"], config["EMAIL_USE_TLS"]) == (587, True)


def test_default_email_keeps_readable_files(tmp_path):
    config = conf.email_config({}, "EMAIL_URL", tmp_path / "mail")
    assert config["EMAIL_BACKEND"].endswith("filebased.EmailBackend")


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_project_refuses_to_start_with_a_bad_variable(tmp_path):
    result = _manage("check", env={"DEBUG": "maybe", "PORTAL_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_deploy_check_is_clean_with_production_values(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DEBUG": "false",
            "SECRET_KEY": "x" * 20 + "K9#mQ2!vL7@pR4$tZ8^wB1&nD6*hF3(jS5)",
            "SITE_URL": "https://portal.example.com",
            "ALLOWED_HOSTS": "portal.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PORTAL_VAR_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr + result.stdout
