"""Rewrite the generated column reference of the import kinds in docs/imports.md."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from campaigns.import_docs import replace_generated


class Command(BaseCommand):
    help = "Regenerate the import column reference in docs/imports.md from the resources."

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        path = Path(settings.BASE_DIR) / "docs" / "imports.md"
        path.write_text(replace_generated(path.read_text()))
        self.stdout.write(f"Rewrote {path}.")
