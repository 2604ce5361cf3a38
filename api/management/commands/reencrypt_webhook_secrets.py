"""Rewrite every webhook signing secret with the first key of WEBHOOK_SECRET_KEYS (after a
key rotation; then the old key can be removed from the list)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from api.models import WebhookEndpoint


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for pk, secret in WebhookEndpoint.objects.values_list("pk", "secret"):
                if not secret:
                    raise CommandError(
                        f"The secret of webhook endpoint {pk} cannot be decrypted with "
                        "WEBHOOK_SECRET_KEYS: keep the old key in the list and run this again."
                    )
                WebhookEndpoint.objects.filter(pk=pk).update(secret=secret)  # encrypted anew
                count += 1
        self.stdout.write(f"{count} webhook secret(s) encrypted with the first key.")
