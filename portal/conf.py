"""Strict parsing of configuration from environment variables.

Every helper takes the environment mapping explicitly so that settings stay a thin layer and
the parsing is testable. A bad value raises ``ImproperlyConfigured`` naming the variable, so a
typo in production fails at start-up instead of silently falling back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, default)


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    if name not in env:
        return default
    value = env[name].strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name}={env[name]!r} is not a boolean; use one of: true, false, 1, 0, yes, no, on, off."
    )


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    if name not in env:
        return default
    try:
        value = int(env[name].strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={env[name]!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    if name not in env:
        return default
    items = [item.strip() for item in env[name].split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(
            f"{name}={env[name]!r} has an empty item; separate values with single commas."
        )
    return items


def env_site_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ImproperlyConfigured(
            f"{name}={value!r} must be an absolute http(s) URL such as https://portal.example.com."
        )
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name}={value!r} must not contain a query or fragment.")
    return value


SQLITE_OPTIONS = {
    # Writers take the lock at BEGIN, so the web server and a worker never deadlock on upgrade.
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
}


def database_config(env: Mapping[str, str], name: str, default_sqlite_path: Path) -> dict[str, Any]:
    """Return a Django DATABASES entry from a URL (sqlite:///path or postgres://…)."""
    url = env.get(name) or f"sqlite:///{default_sqlite_path}"
    try:
        config = dj_database_url.parse(url, conn_max_age=0)
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"{name}={url!r} is not a usable database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        if not config.get("NAME") or config["NAME"] == ":memory:":
            raise ImproperlyConfigured(
                f"{name}={url!r}: give SQLite a file path, e.g. sqlite:////srv/portal/db.sqlite3."
            )
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
        config["TEST"] = {"NAME": str(Path(config["NAME"]).with_name("test-db.sqlite3"))}
    elif engine == "django.db.backends.postgresql":
        if not config.get("NAME"):
            raise ImproperlyConfigured(f"{name}={url!r} names no database (…/dbname).")
        # Persistent connections: a new PostgreSQL connection per request costs more than most
        # pages' queries. Checked before each request's first use, so a restarted server is
        # met with a reconnect, not an error page.
        config["CONN_MAX_AGE"] = env_int(env, "DATABASE_CONN_MAX_AGE", 300, minimum=0)
        config["CONN_HEALTH_CHECKS"] = True
    else:
        raise ImproperlyConfigured(
            f"{name}={url!r} uses an unsupported engine; use sqlite:/// or postgres://."
        )
    return config


def broker_url(env: Mapping[str, str], name: str, default_sqlite_path: Path) -> str:
    """Return the Celery broker URL; the default is a no-server SQLite broker."""
    url = env.get(name) or f"sqla+sqlite:///{default_sqlite_path}"
    scheme = urlsplit(url).scheme
    allowed = {"redis", "rediss", "amqp", "amqps", "pyamqp", "sqla+sqlite", "sqla+postgresql"}
    if scheme not in allowed:
        raise ImproperlyConfigured(
            f"{name}={url!r} uses an unsupported broker; use one of {', '.join(sorted(allowed))}."
        )
    return url


def email_config(env: Mapping[str, str], name: str, default_dir: Path) -> dict[str, Any]:
    """Return Django email settings from a URL.

    ``smtp://user:password@host:587?tls=true`` (or ``smtps://`` for implicit TLS),
    ``file:///path/to/dir``, ``console://`` and ``locmem://``. The default keeps every message
    as a readable file under ``var/mail``.
    """
    url = env.get(name) or f"file://{default_dir}"
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if parts.scheme in {"smtp", "smtps"}:
        if not parts.hostname:
            raise ImproperlyConfigured(f"{name}={url!r} names no SMTP host.")
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={url!r} has an invalid port.") from None
        tls = env_bool(query, "tls", False)
        try:
            timeout = int(query.get("timeout", "30"))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: timeout must be a whole number.") from None
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": parts.hostname,
            "EMAIL_PORT": port,
            "EMAIL_HOST_USER": unquote(parts.username or ""),
            "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
            "EMAIL_USE_TLS": tls,
            "EMAIL_USE_SSL": parts.scheme == "smtps",
            "EMAIL_TIMEOUT": timeout,
        }
    if parts.scheme == "file":
        path = unquote(parts.path)
        if not path:
            raise ImproperlyConfigured(f"{name}={url!r} names no directory.")
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": path,
        }
    if parts.scheme == "console":
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if parts.scheme == "locmem":
        return {"EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
    raise ImproperlyConfigured(
        f"{name}={url!r} uses an unsupported scheme; use smtp://, smtps://, file://, console:// "
        "or locmem://."
    )


def cache_config(env: Mapping[str, str], name: str) -> dict[str, Any]:
    """Return the default Django cache from a URL: ``locmem://`` (default) or ``redis://…``.

    Login throttling keeps its counters in the database; password-reset throttling keeps them
    in this cache, so a site served by several processes needs a shared one (Redis).
    """
    url = env.get(name) or "locmem://"
    scheme = urlsplit(url).scheme
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if scheme in {"redis", "rediss"}:
        if not urlsplit(url).hostname:
            raise ImproperlyConfigured(f"{name}={url!r} names no Redis host.")
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    raise ImproperlyConfigured(
        f"{name}={url!r} uses an unsupported cache; use locmem:// or redis://host:6379/1."
    )
