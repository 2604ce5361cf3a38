"""Password-reset emails written before the outbox sealed secrets hold a live reset token in
their text. Replace it by a placeholder and a reference, as ``portal.bearer`` does now: the
sending task mints a fresh token if the row is still to be sent (or resent)."""

import re
import secrets

from django.db import migrations
from django.db.models import Q
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode

RESET = re.compile(r"(/accounts/reset/)([A-Za-z0-9_\-]+)/([A-Za-z0-9_\-]+)/")


def seal_reset_links(apps, schema_editor):
    Notification = apps.get_model("portal", "Notification")
    rows = Notification.objects.filter(secret_refs={}).filter(
        Q(body_text__contains="/accounts/reset/") | Q(body_html__contains="/accounts/reset/")
    )
    for row in rows.iterator():
        key = secrets.token_hex(8)
        items = {}

        def seal(match, key=key, items=items):
            try:
                user_id = int(force_str(urlsafe_base64_decode(match.group(2))))
            except (TypeError, ValueError, UnicodeDecodeError):
                return f"{match.group(1)}{match.group(2)}/expired/"
            items["token"] = {"kind": "password_reset", "ref": {"user": user_id}}
            return f"{match.group(1)}{match.group(2)}/secret-{key}-token/"

        row.body_text = RESET.sub(seal, row.body_text)
        row.body_html = RESET.sub(seal, row.body_html)
        row.secret_refs = {"key": key, "items": items} if items else {}
        row.save(update_fields=["body_text", "body_html", "secret_refs"])


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_notification_secret_refs")]

    operations = [migrations.RunPython(seal_reset_links, migrations.RunPython.noop)]
