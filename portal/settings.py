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
from csp.constants import NONCE, NONE, SELF, UNSAFE_HASHES, UNSAFE_INLINE

from portal.conf import (
    broker_url,
    cache_config,
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
    "axes",
    "csp",
    "django_ratelimit",
    "portal",
    "campaigns",
    "packages",
    "approvals",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during the request into its page.
    "axes.middleware.AxesMiddleware",
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
    # First: refuses any attempt, right password or not, while the account or address is locked.
    "axes.backends.AxesStandaloneBackend",
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

# Brute-force protection (django-axes): LOGIN_FAILURE_LIMIT failed log-ins for one username,
# or from one client address, within LOGIN_COOLOFF_MINUTES lock that username, or that address,
# out of the portal and the admin until LOGIN_COOLOFF_MINUTES after the failure that locked it.
# Failures during the lock are not counted, so the lock ends when the page says. An admin
# unlocks earlier (Admin > Axes > Access attempts, or `manage.py axes_reset_username NAME` /
# `axes_reset_ip ADDRESS` / `axes_reset`). A successful log-in does not clear the counters: it
# would let anyone with an account reset the counter of the address they share with a victim.
AXES_FAILURE_LIMIT = env_int(ENV, "LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int(ENV, "LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "portal.throttling.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.throttling.client_ip"
AXES_DISABLE_ACCESS_LOG = True  # successful log-ins are not logged (the table would only grow)
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no start-up banner on every command; lockouts are still logged
# Reverse proxies in front of the portal that append the client's address to X-Forwarded-For;
# 0 reads the address of the connection. Throttling per address depends on it being right.
TRUSTED_PROXY_COUNT = env_int(ENV, "TRUSTED_PROXY_COUNT", 0, minimum=0)

# Password-reset requests (django-ratelimit, counters in the cache): per email address asked
# for and per client address, in a window of one hour.
PASSWORD_RESET_LIMIT_PER_ADDRESS = env_int(ENV, "PASSWORD_RESET_LIMIT_PER_ADDRESS", 3, minimum=1)
PASSWORD_RESET_LIMIT_PER_CLIENT = env_int(ENV, "PASSWORD_RESET_LIMIT_PER_CLIENT", 10, minimum=1)
RATELIMIT_IP_META_KEY = "portal.throttling.client_ip"
CACHES = {"default": cache_config(ENV, "CACHE_URL")}
SILENCED_SYSTEM_CHECKS = [
    # django-ratelimit lists only third-party Redis backends; Django's own increments atomically.
    "django_ratelimit.W001",
    # The default local-memory cache counts per process: right for one web process (runserver,
    # gunicorn's default); with N processes a reset limit becomes up to N times the setting
    # until CACHE_URL names a shared Redis. Log-in locks are in the database either way.
    "django_ratelimit.E003",
]

# Content-Security-Policy (django-csp). Scripts only from the portal's own static files; no
# inline script or event handler (a template needing one uses nonce="{{ request.csp_nonce }}").
# Styles may be inline: e-mail previews show marketers' HTML, styles included, as it will be
# sent (a sandboxed iframe inherits this policy), and for the same reason images may come from
# any https origin. The one hash allows the exact "select all" handler of django-import-export's
# export page (its template's onchange="onSelectToggleChange(event)").
IMPORT_EXPORT_SELECT_ALL_HASH = "'sha256-wid4zL8fR53ZYy1ljOepzR77Dn6vWUUxuNnnWWBP3I8='"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE, UNSAFE_HASHES, IMPORT_EXPORT_SELECT_ALL_HASH],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:", "https:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LANGUAGE_CODE = "en"
TIME_ZONE = env_str(ENV, "TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
(VAR_DIR / "static").mkdir(exist_ok=True)
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str(ENV, "MEDIA_ROOT", str(VAR_DIR / "media")))
# Uploaded and generated files are private: never served from MEDIA_URL, always through the
# rights-checking download view (portal/files.py). Do not let the web server serve MEDIA_ROOT.
STORAGES = {
    "default": {"BACKEND": "portal.files.PrivateFileSystemStorage"},
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
# At most this many messages are put in flight by one commit while sending (see
# campaigns/delivery/sending.py): the commit's cost is shared by the window and hidden behind
# the sending of the previous one; the window starts at 8 and grows only while commits are
# slower than sending it. A worker killed mid-send leaves up to about twice the window in
# doubt (1: one commit per message, overlapped with the next one's envelope; at most 1).
DELIVERY_IN_FLIGHT_WINDOW = env_int(ENV, "DELIVERY_IN_FLIGHT_WINDOW", 64, minimum=1)
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
# Sender domains verified for sending (SPF/DKIM/DMARC aligned): a delivery's sender and an
# entity's sender address must be at one of them (default: the domain of DELIVERY_SENDER).
DELIVERY_SENDER_DOMAINS = [
    d.lower()
    for d in env_list(
        ENV,
        "DELIVERY_SENDER_DOMAINS",
        [DELIVERY_SENDER.rpartition("@")[2].rstrip(">").strip() or "localhost"],
    )
]
# Marketing emails' List-Unsubscribe header also offers this mailto address when set (the
# mailbox must be processed by someone: the https one-click URL is always there).
DELIVERY_UNSUBSCRIBE_MAILTO = env_str(ENV, "DELIVERY_UNSUBSCRIBE_MAILTO", "")
# The SMS gateway's inbound webhook (STOP replies) is accepted with this bearer token; unset,
# the webhook is off (404).
DELIVERY_SMS_INBOUND_TOKEN = env_str(ENV, "DELIVERY_SMS_INBOUND_TOKEN", "")
# Engagement tracking (open pixel, click redirects). The client's IP address is stored with
# each event only when this is on (it is personal data; off by default).
ENGAGEMENT_STORE_IP = env_bool(ENV, "ENGAGEMENT_STORE_IP", False)
# Behind a reverse proxy: the client's address is the first of X-Forwarded-For.
ENGAGEMENT_TRUST_X_FORWARDED_FOR = env_bool(ENV, "ENGAGEMENT_TRUST_X_FORWARDED_FOR", False)
# A click this many seconds or less after the message was sent is a machine's (a security
# scanner following every link as the message arrives).
ENGAGEMENT_MACHINE_CLICK_SECONDS = env_int(ENV, "ENGAGEMENT_MACHINE_CLICK_SECONDS", 10, minimum=0)
# Tracking events are buffered in each web process and written in bulk every this many
# milliseconds (and on a clean shutdown); 0 writes each event at once.
ENGAGEMENT_BUFFER_MS = env_int(ENV, "ENGAGEMENT_BUFFER_MS", 200, minimum=0)
# ... or as soon as this many events wait (bounds what a killed process loses).
ENGAGEMENT_BUFFER_MAX = env_int(ENV, "ENGAGEMENT_BUFFER_MAX", 2000, minimum=1)
# Bounces and complaints (campaigns/engagement/bounces.py). Each provider's webhook answers
# 404 until its secret is set: SES through SNS needs the topic ARNs it may post from;
# SendGrid the Event Webhook's verification key (base64 DER, or PEM); Mailgun the HTTP webhook
# signing key; Postmark a token (basic-auth password, or the last part of the URL).
DELIVERY_BOUNCE_SES_TOPIC_ARNS = env_list(ENV, "DELIVERY_BOUNCE_SES_TOPIC_ARNS", [])
DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY = env_str(ENV, "DELIVERY_BOUNCE_SENDGRID_PUBLIC_KEY", "")
DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY = env_str(ENV, "DELIVERY_BOUNCE_MAILGUN_SIGNING_KEY", "")
DELIVERY_BOUNCE_POSTMARK_TOKEN = env_str(ENV, "DELIVERY_BOUNCE_POSTMARK_TOKEN", "")
DELIVERY_BOUNCE_POSTMARK_USERNAME = env_str(ENV, "DELIVERY_BOUNCE_POSTMARK_USERNAME", "postmark")
# This many soft bounces (of distinct messages) of one address within the window quarantine it.
DELIVERY_SOFT_BOUNCE_LIMIT = env_int(ENV, "DELIVERY_SOFT_BOUNCE_LIMIT", 3, minimum=1)
DELIVERY_SOFT_BOUNCE_DAYS = env_int(ENV, "DELIVERY_SOFT_BOUNCE_DAYS", 30, minimum=1)
# The bounce mailbox, polled over IMAP by beat when set (off by default):
# imaps://user:password@imap.example.com:993/INBOX (imap:// for plain IMAP with STARTTLS).
DELIVERY_BOUNCE_IMAP_URL = env_str(ENV, "DELIVERY_BOUNCE_IMAP_URL", "")
DELIVERY_BOUNCE_IMAP_EVERY_SECONDS = env_int(
    ENV, "DELIVERY_BOUNCE_IMAP_EVERY_SECONDS", 300, minimum=10
)
DELIVERY_BOUNCE_IMAP_BATCH = env_int(ENV, "DELIVERY_BOUNCE_IMAP_BATCH", 200, minimum=1)
# Delete the reports read (true) or only mark them seen (false, the default).
DELIVERY_BOUNCE_IMAP_DELETE = env_bool(ENV, "DELIVERY_BOUNCE_IMAP_DELETE", False)
# Proofs (test sends) go only to the portal users' own email addresses, to addresses at these
# domains (e.g. "example.com,agency.example") and to these exact addresses (test phones too).
DELIVERY_PROOF_DOMAINS = [d.lower() for d in env_list(ENV, "DELIVERY_PROOF_DOMAINS", [])]
DELIVERY_PROOF_ADDRESSES = env_list(ENV, "DELIVERY_PROOF_ADDRESSES", [])
# At most this many test addresses per request, and this many proofs (messages) per user over
# the last 24 hours.
DELIVERY_PROOF_MAX_ADDRESSES = env_int(ENV, "DELIVERY_PROOF_MAX_ADDRESSES", 5, minimum=1)
DELIVERY_PROOFS_PER_DAY = env_int(ENV, "DELIVERY_PROOFS_PER_DAY", 200, minimum=1)

# Exports from the admin (CSV/XLSX), for users holding the model's view permission.
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
IMPORT_EXPORT_SKIP_ADMIN_LOG = True

# Message templates: the budget of one render (one message at send; a delivery's fields at
# save). Over it, the template is refused at save and the message fails at send.
DELIVERY_TEMPLATE_RENDER_MS = env_int(ENV, "DELIVERY_TEMPLATE_RENDER_MS", 1000, minimum=10)
DELIVERY_TEMPLATE_MAX_ITERATIONS = env_int(
    ENV, "DELIVERY_TEMPLATE_MAX_ITERATIONS", 100_000, minimum=1
)
DELIVERY_TEMPLATE_MAX_CHARS = env_int(ENV, "DELIVERY_TEMPLATE_MAX_CHARS", 1_000_000, minimum=1000)

# Uploads.
FILE_UPLOAD_PERMISSIONS = 0o640
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Imports (campaigns/imports.py): files are stored by the web request and read by a worker.
IMPORT_MAX_UPLOAD_BYTES = env_int(ENV, "IMPORT_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1)
IMPORT_MAX_ROWS = env_int(ENV, "IMPORT_MAX_ROWS", 1_000_000, minimum=1)
# An XLSX is a zip: refuse it before parsing when it declares more XML than this, or when a
# member expands more than this many times (a zip bomb).
IMPORT_MAX_XLSX_UNPACKED_BYTES = env_int(
    ENV, "IMPORT_MAX_XLSX_UNPACKED_BYTES", 300 * 1024 * 1024, minimum=1
)
IMPORT_MAX_XLSX_RATIO = env_int(ENV, "IMPORT_MAX_XLSX_RATIO", 100, minimum=1)
# A running import's worker renews its lease every IMPORT_HEARTBEAT_SECONDS (from a thread,
# also during the check and the write); beat's recovery (every IMPORT_RECOVERY_SECONDS) fails
# a job whose lease is older than IMPORT_LEASE_SECONDS as "worker lost", ending its database
# session first (nothing was committed; its staging tables go with the session). On SQLite the
# write transaction keeps the renewal out (one writer at a time): keep the lease above the
# longest write (~200 s for 1M rows), or the job fails as lost and its write is rolled back.
IMPORT_LEASE_SECONDS = env_int(ENV, "IMPORT_LEASE_SECONDS", 300, minimum=1)
IMPORT_HEARTBEAT_SECONDS = env_int(ENV, "IMPORT_HEARTBEAT_SECONDS", 10, minimum=1)
IMPORT_RECOVERY_SECONDS = env_int(ENV, "IMPORT_RECOVERY_SECONDS", 60, minimum=1)
# Fault-injection tests only: "after_apply" makes an importing worker kill itself (SIGKILL)
# once the rows are written, before the commit; "freeze_after_apply" makes it stop (SIGSTOP)
# there. Never set it otherwise.
IMPORT_TEST_FAULT = env_str(ENV, "IMPORT_TEST_FAULT", "")
# Exports (portal/exports.py): up to EXPORT_IMMEDIATE_MAX_ROWS rows are streamed in the response;
# more go to a worker that writes the file chunk by chunk (progress page, download link). The
# file is deleted EXPORT_RETENTION_HOURS after it was made.
EXPORT_IMMEDIATE_MAX_ROWS = env_int(ENV, "EXPORT_IMMEDIATE_MAX_ROWS", 5000, minimum=0)
EXPORT_CHUNK_ROWS = env_int(ENV, "EXPORT_CHUNK_ROWS", 2000, minimum=1)
EXPORT_RETENTION_HOURS = env_int(ENV, "EXPORT_RETENTION_HOURS", 48, minimum=1)

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
# API-triggered messages have their own queue, so they never wait behind batch chunks: run
# a worker on "priority" alone beside the batch workers (``serve`` does; README).
CELERY_TASK_QUEUES = {"celery": {}, "control": {}, "priority": {}}
CELERY_TASK_ROUTES = {
    "campaigns.tasks.recover_stalled_sends": {"queue": "control"},
    "campaigns.tasks.recover_lost_imports": {"queue": "control"},
    "campaigns.tasks.send_triggered": {"queue": "priority"},
}
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
    "start-scheduled-campaigns": {
        "task": "campaigns.tasks.start_scheduled_campaigns",
        "schedule": timedelta(minutes=1),
    },
    "execute-scheduled-runs": {
        "task": "campaigns.tasks.execute_scheduled_runs",
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
    "recover-lost-imports": {
        "task": "campaigns.tasks.recover_lost_imports",
        "schedule": timedelta(seconds=IMPORT_RECOVERY_SECONDS),
        "options": {"expires": IMPORT_RECOVERY_SECONDS},
    },
    "purge-work-tables": {
        "task": "campaigns.tasks.purge_work_tables",
        "schedule": crontab(hour=3, minute=40),
    },
    "purge-expired-exports": {
        "task": "portal.tasks.purge_expired_exports",
        "schedule": timedelta(hours=1),
    },
    "resend-stuck-webhooks": {
        "task": "api.tasks.resend_stuck_webhooks",
        "schedule": timedelta(minutes=2),
    },
    "purge-sent-notifications": {
        "task": "portal.tasks.purge_old_notifications",
        "schedule": crontab(hour=3, minute=15),
    },
}
if DELIVERY_BOUNCE_IMAP_URL:
    CELERY_BEAT_SCHEDULE["poll-bounce-mailbox"] = {
        "task": "campaigns.tasks.poll_bounce_mailbox",
        "schedule": timedelta(seconds=DELIVERY_BOUNCE_IMAP_EVERY_SECONDS),
        "options": {"expires": DELIVERY_BOUNCE_IMAP_EVERY_SECONDS},
    }

# REST API (api/): token authentication, scopes, problem details, per-token throttling.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",  # first: its 401 names the Bearer scheme
        "rest_framework.authentication.SessionAuthentication",  # the docs page; CSRF enforced
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str(ENV, "API_TOKEN_RATE", "1200/min"),
        "trigger": env_str(ENV, "API_TRIGGER_RATE", "60000/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.problems.BoundedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.IdCursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["api.filters.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.problems.problem_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Distributed Marketing Portal API",
    "DESCRIPTION": "Entity-scoped REST API. Authenticate with `Authorization: Bearer <token>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Swagger UI from installed static files (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_problem_responses",
    ],
}
API_MAX_BODY_BYTES = env_int(ENV, "API_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
API_BULK_MAX_ROWS = env_int(ENV, "API_BULK_MAX_ROWS", 10_000, minimum=1)
API_MAX_TOKENS_PER_USER = env_int(ENV, "API_MAX_TOKENS_PER_USER", 20, minimum=1)
# A proven token (and its user) is kept this long per web process: a revoke or a change
# through the portal applies at once in the process that made it, within this in the others.
API_TOKEN_CACHE_SECONDS = env_int(ENV, "API_TOKEN_CACHE_SECONDS", 5, minimum=0)

# Outgoing webhooks (api/webhooks.py): POSTed by a Celery task, retried with backoff.
WEBHOOK_TIMEOUT_SECONDS = env_int(ENV, "WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
WEBHOOK_MAX_ATTEMPTS = env_int(ENV, "WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_int(ENV, "WEBHOOK_RETRY_BASE_SECONDS", 30, minimum=1)
WEBHOOK_STUCK_AFTER = timedelta(
    seconds=env_int(ENV, "WEBHOOK_STUCK_AFTER_SECONDS", 300, minimum=30)
)
# SSRF guard: endpoints on private, loopback or reserved addresses are refused unless this
# is on (tests and a closed network only).
WEBHOOK_ALLOW_PRIVATE_HOSTS = env_bool(ENV, "WEBHOOK_ALLOW_PRIVATE_HOSTS", False)
# Fernet keys encrypting the endpoints' signing secrets at rest, newest first (comma-separated;
# the first encrypts, any decrypts: rotate by prepending a new key, then run
# ``manage.py reencrypt_webhook_secrets``). Empty: one key derived from SECRET_KEY.
WEBHOOK_SECRET_KEYS = env_list(ENV, "WEBHOOK_SECRET_KEYS", [])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str(ENV, "LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
