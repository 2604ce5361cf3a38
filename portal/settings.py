"""Project settings, read from environment variables with safe local defaults.

Nothing secret is committed: without ``SECRET_KEY`` a random key is generated once and kept in
``var/secret-key`` (local use only). See README.md for the production variables.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from celery.schedules import crontab

from portal.conf import (
    broker_url,
    database_config,
    email_config,
    env_bool,
    env_int,
    env_list,
    env_site_url,
    env_str,
)

ENV = os.environ
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str(ENV, "PORTAL_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    path = VAR_DIR / "secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool(ENV, "DEBUG", False)
SECRET_KEY = ENV.get("SECRET_KEY") or _local_secret_key()
SITE_URL = env_site_url(ENV, "SITE_URL", "http://127.0.0.1:8000")
SITE_NAME = env_str(ENV, "SITE_NAME", "Distributed Marketing Portal")
ALLOWED_HOSTS = env_list(ENV, "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list(ENV, "CSRF_TRUSTED_ORIGINS", [SITE_URL])

_HTTPS = SITE_URL.startswith("https://")
SECURE_SSL_REDIRECT = env_bool(ENV, "SECURE_SSL_REDIRECT", _HTTPS and not DEBUG)
SESSION_COOKIE_SECURE = env_bool(ENV, "SESSION_COOKIE_SECURE", _HTTPS)
CSRF_COOKIE_SECURE = env_bool(ENV, "CSRF_COOKIE_SECURE", _HTTPS)
SECURE_HSTS_SECONDS = env_int(ENV, "SECURE_HSTS_SECONDS", 31_536_000 if _HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool(ENV, "SECURE_HSTS_INCLUDE_SUBDOMAINS", _HTTPS)
SECURE_HSTS_PRELOAD = env_bool(ENV, "SECURE_HSTS_PRELOAD", _HTTPS)
if env_bool(ENV, "BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "guardian",
    "django_fsm",
    "import_export",
    "portal",
    "campaigns",
    "packages",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
        },
    },
]

DATABASES = {"default": database_config(ENV, "DATABASE_URL", VAR_DIR / "portal.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
GUARDIAN_RAISE_403 = False
GUARDIAN_RENDER_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: anonymous visitors have no rights

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = env_str(ENV, "TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
(VAR_DIR / "static").mkdir(exist_ok=True)
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str(ENV, "MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Email: notifications go through the outbox; the transport comes from EMAIL_URL.
globals().update(email_config(ENV, "EMAIL_URL", VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str(ENV, "DEFAULT_FROM_EMAIL", "Marketing Portal <portal@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Notifications outbox.
NOTIFICATION_MAX_ATTEMPTS = env_int(ENV, "NOTIFICATION_MAX_ATTEMPTS", 5, minimum=1)
NOTIFICATION_RETRY_BASE_SECONDS = env_int(ENV, "NOTIFICATION_RETRY_BASE_SECONDS", 60, minimum=1)
NOTIFICATION_STUCK_AFTER = timedelta(
    seconds=env_int(ENV, "NOTIFICATION_STUCK_AFTER_SECONDS", 600, minimum=30)
)

# Approvals.
APPROVAL_LINK_MAX_AGE_DAYS = env_int(ENV, "APPROVAL_LINK_MAX_AGE_DAYS", 30, minimum=1)
APPROVAL_REMINDER_HOURS = env_int(ENV, "APPROVAL_REMINDER_HOURS", 24, minimum=1)

# Deliveries: chunked sending by Celery workers.
DELIVERY_CHUNK_SIZE = env_int(ENV, "DELIVERY_CHUNK_SIZE", 500, minimum=1)
# Target rows per preparation task (one INSERT … SELECT each); progress moves chunk by chunk.
DELIVERY_PREPARE_CHUNK_SIZE = env_int(ENV, "DELIVERY_PREPARE_CHUNK_SIZE", 20000, minimum=1)
# A sending worker's claim lives while its heartbeat (each message's mark) is fresher than
# this; then another worker may take it over. Keep it above the SMTP timeout (30 s).
DELIVERY_CLAIM_LEASE_SECONDS = env_int(ENV, "DELIVERY_CLAIM_LEASE_SECONDS", 60, minimum=1)
# How often beat's recovery runs (on the "control" queue): takeover of dead claims, lost tasks.
DELIVERY_RECOVERY_SECONDS = env_int(ENV, "DELIVERY_RECOVERY_SECONDS", 10, minimum=1)
# A sending delivery without progress for this long is flagged in the admin (and recovered
# even while other tasks wait in the queue).
DELIVERY_STALL_ALERT_SECONDS = env_int(ENV, "DELIVERY_STALL_ALERT_SECONDS", 600, minimum=1)
# Fault-injection tests only: "<point>:<n>" makes a sending worker kill itself at that point
# of its n-th message (points: before_send, after_accept, during_mark). Never set it otherwise.
DELIVERY_TEST_FAULT = env_str(ENV, "DELIVERY_TEST_FAULT", "")
DELIVERY_MAX_ATTEMPTS = env_int(ENV, "DELIVERY_MAX_ATTEMPTS", 5, minimum=1)
DELIVERY_RETRY_BASE_SECONDS = env_int(ENV, "DELIVERY_RETRY_BASE_SECONDS", 60, minimum=1)
# Messages per second per worker and channel (0: no limit), e.g. DELIVERY_RATE_SMS=20.
DELIVERY_RATE_LIMITS = {
    channel: env_int(ENV, f"DELIVERY_RATE_{channel.upper()}", 0, minimum=0)
    for channel in ("email", "sms", "push")
}
# SMS and push providers (dotted paths); the default writes JSON lines under var/outbox/.
DELIVERY_PROVIDERS = {
    "sms": env_str(ENV, "DELIVERY_SMS_PROVIDER", "campaigns.delivery.providers.FileProvider"),
    "push": env_str(ENV, "DELIVERY_PUSH_PROVIDER", "campaigns.delivery.providers.FileProvider"),
}
# The HTTP gateway provider (campaigns.delivery.providers.HttpProvider) posts to these.
DELIVERY_HTTP_GATEWAYS = {
    channel: {
        "url": env_str(ENV, f"DELIVERY_{channel.upper()}_URL", ""),
        "token": env_str(ENV, f"DELIVERY_{channel.upper()}_TOKEN", ""),
    }
    for channel in ("sms", "push")
}
DELIVERY_OUTBOX_DIR = VAR_DIR / "outbox"
DELIVERY_SENDER = env_str(ENV, "DELIVERY_SENDER", "Marketing <marketing@localhost>")

# Exports from the admin (CSV/XLSX), for users holding the model's view permission.
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_SKIP_ADMIN_LOG = True

# Uploads.
FILE_UPLOAD_PERMISSIONS = 0o640
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Celery: JSON only, late acknowledgement (tasks are idempotent), bounded run times.
CELERY_BROKER_URL = broker_url(ENV, "CELERY_BROKER_URL", VAR_DIR / "celery-broker.sqlite3")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Recovery has its own queue, so it never waits behind chunk tasks. A worker started without
# -Q consumes both queues; production runs one small worker on "control" alone as well.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = {"celery": {}, "control": {}}
CELERY_TASK_ROUTES = {"campaigns.tasks.recover_stalled_sends": {"queue": "control"}}
CELERY_TASK_SOFT_TIME_LIMIT = env_int(ENV, "CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int(ENV, "CELERY_TASK_TIME_LIMIT", 360, minimum=1)
CELERY_TASK_ALWAYS_EAGER = env_bool(ENV, "CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "resend-stuck-notifications": {
        "task": "portal.tasks.resend_stuck_notifications",
        "schedule": timedelta(minutes=2),
    },
    "approval-reminders": {
        "task": "approvals.tasks.send_approval_reminders",
        "schedule": timedelta(minutes=15),
    },
    "approval-expiry": {
        "task": "approvals.tasks.expire_overdue_requests",
        "schedule": timedelta(minutes=5),
    },
    "package-closing": {
        "task": "packages.tasks.close_ended_packages",
        "schedule": timedelta(minutes=10),
    },
    "package-deadline-reminders": {
        "task": "packages.tasks.send_deadline_reminders",
        "schedule": timedelta(hours=1),
    },
    "wake-waiting-activities": {
        "task": "campaigns.tasks.wake_waiting_activities",
        "schedule": timedelta(minutes=1),
    },
    "start-scheduled-deliveries": {
        "task": "campaigns.tasks.start_scheduled_deliveries",
        "schedule": timedelta(minutes=1),
    },
    "recover-stalled-sends": {
        "task": "campaigns.tasks.recover_stalled_sends",
        "schedule": timedelta(seconds=DELIVERY_RECOVERY_SECONDS),
        "options": {"expires": DELIVERY_RECOVERY_SECONDS},  # a late one is not run twice
    },
    "purge-work-tables": {
        "task": "campaigns.tasks.purge_work_tables",
        "schedule": crontab(hour=3, minute=40),
    },
    "purge-sent-notifications": {
        "task": "portal.tasks.purge_old_notifications",
        "schedule": crontab(hour=3, minute=15),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str(ENV, "LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
