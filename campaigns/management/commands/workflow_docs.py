"""Rewrite the generated reference of activity types in docs/workflows.md from the forms."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from campaigns.workflow.docs import replace_generated


class Command(BaseCommand):
    help = "Regenerate the activity-type reference in docs/workflows.md from the settings forms."

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        path = Path(settings.BASE_DIR) / "docs" / "workflows.md"
        path.write_text(replace_generated(path.read_text()))
        self.stdout.write(f"Rewrote {path}.")
