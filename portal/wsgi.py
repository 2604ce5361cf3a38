"""WSGI entry point (``gunicorn portal.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_wsgi_application()

# The open pixel and click redirects are answered before Django (no session, no middleware).
from campaigns.engagement.tracking import TrackingMiddleware  # noqa: E402

application = TrackingMiddleware(application)
