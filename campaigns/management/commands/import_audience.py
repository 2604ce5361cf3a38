"""Import contacts or secondary data from a big CSV/XLSX file, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from campaigns import imports
from campaigns.choices import ImportKind
from portal.models import Entity


class Command(BaseCommand):
    help = (
        "Check (and with --commit, import) a CSV/XLSX file of contacts, stores, bookings or "
        "subscriptions. Rows are upserted by their natural key; an error report is written."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("kind", choices=ImportKind.values)
        parser.add_argument("file", type=Path)
        parser.add_argument("--entity", help="import for this entity code only")
        parser.add_argument("--commit", action="store_true", help="write (default: dry run)")
        parser.add_argument(
            "--valid-rows", action="store_true", help="with --commit: import the valid rows"
        )
        parser.add_argument(
            "--background", action="store_true", help="queue it for a worker instead"
        )

    def handle(self, *args: Any, kind: str, file: Path, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        entity = None
        if options["entity"]:
            entity = Entity.objects.filter(code=options["entity"]).first()
            if entity is None:
                raise CommandError(f"No entity with code {options['entity']!r}.")
        with file.open("rb") as handle:
            try:
                job = imports.create_job(
                    kind=kind,
                    filename=file.name,
                    content=File(handle),
                    actor=None,
                    entity=entity,
                    dry_run=not options["commit"],
                    import_valid_rows=options["valid_rows"],
                    enqueue=options["background"],
                    size_limit=False,  # the operator holds the server; rows are still limited
                )
            except imports.ImportFileError as exc:
                raise CommandError(str(exc)) from None
        if options["background"]:
            self.stdout.write(f"Queued import #{job.pk}; follow it in the admin.")
            return
        job = imports.run_import(job_id=job.pk)
        self.stdout.write(f"Import #{job.pk}: {job.get_state_display()}. {job.message}")
        if job.error_report:
            self.stdout.write(f"Error report: {job.error_report.path}")
        if job.state == "failed" or (job.error_rows and not options["valid_rows"]):
            raise CommandError("The file has errors.")
