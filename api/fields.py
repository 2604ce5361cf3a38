"""Secrets the portal must read back (webhook signing secrets) are stored encrypted at rest.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with the keys of
``WEBHOOK_SECRET_KEYS`` (comma-separated Fernet keys, newest first); without it, one key
derived from ``SECRET_KEY``. Several keys make a rotation: the first encrypts, any decrypts,
and ``manage.py reencrypt_webhook_secrets`` rewrites every row with the first."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

logger = logging.getLogger(__name__)

FERNET_PREFIX = "gAAAA"  # every Fernet token starts so (version byte 0x80 + timestamp)


def derived_key(secret_key: str) -> bytes:
    """A Fernet key from Django's SECRET_KEY (its own purpose, not the key itself)."""
    digest = hashlib.sha256(b"portal.webhook-secrets:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    try:
        fernets = [Fernet(key.encode()) for key in keys] or [Fernet(derived_key(secret_key))]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"WEBHOOK_SECRET_KEYS holds a value that is not a Fernet key ({exc}); make one "
            'with python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        ) from None
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOK_SECRET_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    """The plain text; a value written before encryption (no Fernet token) is returned as
    it is; one no configured key opens is logged and read as "" (its deliveries then fail
    saying so, instead of being signed with something else)."""
    if not value or not value.startswith(FERNET_PREFIX):
        return value
    try:
        return fernet().decrypt(value.encode()).decode()
    except InvalidToken:
        logger.error("A webhook secret cannot be decrypted with WEBHOOK_SECRET_KEYS")
        return ""


class EncryptedTextField(models.TextField):
    """Plain text in Python, a Fernet token in the database."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return value if value is None else decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))
