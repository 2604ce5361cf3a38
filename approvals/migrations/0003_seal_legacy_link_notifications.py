"""Approval emails written before the outbox sealed secrets hold a live approval-link token in
their text. Replace it by a placeholder and a reference to its link, as ``portal.bearer`` does
now: the sending task derives the token again if the row is still to be sent (or resent)."""

import re
import secrets

from django.core import signing
from django.db import migrations
from django.db.models import Q

LINK = re.compile(r"(/approvals/link/)([^/\s\"'<>]+)/")
LINK_SALT = "approvals.link.v1"


def seal_approval_links(apps, schema_editor):
    Notification = apps.get_model("portal", "Notification")
    rows = Notification.objects.filter(secret_refs={}).filter(
        Q(body_text__contains="/approvals/link/") | Q(body_html__contains="/approvals/link/")
    )
    for row in rows.iterator():
        key = secrets.token_hex(8)
        items = {}

        def seal(match, key=key, items=items):
            try:
                link_id = int(signing.loads(match.group(2), salt=LINK_SALT)["l"])
            except (signing.BadSignature, KeyError, TypeError, ValueError):
                return f"{match.group(1)}invalid/"
            items["token"] = {"kind": "approval_link", "ref": {"link": link_id}}
            return f"{match.group(1)}secret-{key}-token/"

        row.body_text = LINK.sub(seal, row.body_text)
        row.body_html = LINK.sub(seal, row.body_html)
        row.secret_refs = {"key": key, "items": items} if items else {}
        row.save(update_fields=["body_text", "body_html", "secret_refs"])


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0002_approver_rights"),
        ("portal", "0003_seal_legacy_reset_links"),
    ]

    operations = [migrations.RunPython(seal_approval_links, migrations.RunPython.noop)]
