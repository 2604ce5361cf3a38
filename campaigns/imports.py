"""Imports of contacts and secondary data (django-import-export resources), run as jobs.

A job first checks every row (in chunks, with visible progress) without writing anything,
then writes in one transaction: everything when the file is clean, only the valid rows when
the user chose so, nothing otherwise. Every refused row is listed in a downloadable CSV report
with its line number, field and message.
"""

from __future__ import annotations

import io
from pathlib import PurePath
from typing import Any

import tablib
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from import_export import fields, resources, widgets
from import_export.instance_loaders import CachedInstanceLoader

from campaigns.choices import ImportKind, ImportState
from campaigns.models import Booking, Contact, ImportJob, Store, Subscription
from portal import services as portal_services
from portal import spreadsheets
from portal.models import Entity

CHUNK = 2000
MAX_ROWS = 2_000_000


class ScopedResource(resources.ModelResource):
    """A resource that may be limited to one entity (a local operator's import)."""

    def __init__(self, *, entity: Entity | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entity = entity
        self._allowed: set[int] | None = None

    entity_column: str | None = None

    def entity_of(self, instance: Any) -> int | None:  # pragma: no cover - overridden
        """The id of the entity owning the row."""
        return None

    @classmethod
    def complete(cls, dataset: tablib.Dataset, entity: Entity | None) -> None:
        """A local operator's file may leave out the entity column: it is theirs."""
        if entity is not None and cls.entity_column and cls.entity_column not in dataset.headers:
            dataset.append_col([entity.code] * len(dataset), header=cls.entity_column)

    def before_save_instance(self, instance: Any, row: Any, **kwargs: Any) -> None:
        self.check_scope(instance)

    def check_scope(self, instance: Any) -> None:
        if self.entity is None:
            return
        if self._allowed is None:  # once per resource, not once per row
            self._allowed = set(self.entity.descendants().values_list("pk", flat=True))
        if self.entity_of(instance) not in self._allowed:
            raise ValidationError("This row belongs to another entity; you may not import it.")


class ContactResource(ScopedResource):
    entity_column = "entity"
    entity = fields.Field(
        attribute="entity", column_name="entity", widget=widgets.ForeignKeyWidget(Entity, "code")
    )

    class Meta:
        model = Contact
        import_id_fields = ["external_id"]
        instance_loader_class = CachedInstanceLoader
        fields = [
            "external_id", "first_name", "last_name", "email", "phone", "push_token",
            "language", "birth_date", "entity", "email_consent", "email_consent_source",
            "sms_consent", "sms_consent_source", "push_consent", "push_consent_source",
            "blocklisted",
        ]  # fmt: skip
        export_order = fields
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def before_import_row(self, row: Any, **kwargs: Any) -> None:
        if self.entity is not None and not row.get("entity"):
            row["entity"] = self.entity.code

    def import_instance(self, instance: Contact, row: Any, **kwargs: Any) -> None:
        if instance.pk:  # an existing contact: it must already be ours before we change it
            self.check_scope(instance)
        super().import_instance(instance, row, **kwargs)

    def entity_of(self, instance: Contact) -> int | None:
        return instance.entity_id


class StoreResource(ScopedResource):
    entity_column = "entity"
    entity = fields.Field(
        attribute="entity", column_name="entity", widget=widgets.ForeignKeyWidget(Entity, "code")
    )

    class Meta:
        model = Store
        import_id_fields = ["code"]
        instance_loader_class = CachedInstanceLoader
        fields = ["code", "name", "city", "entity"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def entity_of(self, instance: Store) -> int | None:
        return instance.entity_id


class BookingResource(ScopedResource):
    contact = fields.Field(
        attribute="contact",
        column_name="contact",
        widget=widgets.ForeignKeyWidget(Contact, "external_id"),
    )
    store = fields.Field(
        attribute="store", column_name="store", widget=widgets.ForeignKeyWidget(Store, "code")
    )

    class Meta:
        model = Booking
        import_id_fields = ["reference"]
        instance_loader_class = CachedInstanceLoader
        fields = [
            "reference", "contact", "store", "product", "destination", "booking_date",
            "amount", "status",
        ]  # fmt: skip
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def entity_of(self, instance: Booking) -> int | None:
        return instance.contact.entity_id if instance.contact_id else None


class SubscriptionResource(ScopedResource):
    contact = fields.Field(
        attribute="contact",
        column_name="contact",
        widget=widgets.ForeignKeyWidget(Contact, "external_id"),
    )

    class Meta:
        model = Subscription
        import_id_fields = ["contact", "product", "start_date"]
        fields = ["contact", "product", "start_date", "end_date", "status"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def entity_of(self, instance: Subscription) -> int | None:
        return instance.contact.entity_id if instance.contact_id else None


RESOURCES: dict[str, type[ScopedResource]] = {
    ImportKind.CONTACTS: ContactResource,
    ImportKind.STORES: StoreResource,
    ImportKind.BOOKINGS: BookingResource,
    ImportKind.SUBSCRIPTIONS: SubscriptionResource,
}


class ImportFileError(ValueError):
    """The file cannot be read as a table."""


def load_dataset(name: str, content: bytes) -> tablib.Dataset:
    """Read a CSV (UTF-8, with a header line) or XLSX file."""
    suffix = PurePath(name).suffix.lower()
    try:
        if suffix == ".xlsx":
            dataset = tablib.Dataset().load(io.BytesIO(content), format="xlsx")
        elif suffix in (".csv", ".txt"):
            text = content.decode("utf-8-sig")
            dataset = tablib.Dataset().load(text, format="csv")
        else:
            raise ImportFileError("Upload a .csv or .xlsx file.")
    except UnicodeDecodeError:
        raise ImportFileError("The CSV file is not UTF-8 text.") from None
    except ImportFileError:
        raise
    except Exception as exc:  # tablib raises many kinds of parse errors
        raise ImportFileError(f"The file cannot be read: {exc}") from None
    if not dataset.headers:
        raise ImportFileError("The file has no header line.")
    if len(dataset) > MAX_ROWS:
        raise ImportFileError(f"The file has more than {MAX_ROWS} rows; split it.")
    return dataset


def _rows(dataset: tablib.Dataset, indexes: list[int]) -> tablib.Dataset:
    part = tablib.Dataset(headers=dataset.headers)
    for index in indexes:
        part.append(dataset[index])
    return part


def _duplicate_keys(
    dataset: tablib.Dataset, keys: list[str]
) -> tuple[list[tuple[int, str, str]], set[int]]:
    """Rows whose key appears more than once in the file: all of them are refused, since the
    file does not say which one is right."""
    if not keys:
        return [], set()
    seen: dict[tuple, list[int]] = {}
    columns = [dataset.headers.index(key) for key in keys]
    for index, row in enumerate(dataset):
        key = tuple(str(row[column]).strip() for column in columns)
        seen.setdefault(key, []).append(index)
    problems, bad = [], set()
    for key, indexes in seen.items():
        if len(indexes) > 1:
            lines = ", ".join(str(i + 2) for i in indexes)
            for index in indexes:
                bad.add(index)
                problems.append(
                    (index + 2, keys[0], f"“{'/'.join(key)}” appears on several lines ({lines}).")
                )
    return problems, bad


def _row_problems(result: Any, indexes: list[int]) -> tuple[list[tuple[int, str, str]], set[int]]:
    """(line, field, message) for each refused row; lines count the header as line 1."""
    problems: list[tuple[int, str, str]] = []
    bad: set[int] = set()
    for invalid in result.invalid_rows:
        index = indexes[invalid.number - 1]
        bad.add(index)
        for field_name, messages in invalid.error_dict.items():
            for message in messages:
                problems.append((index + 2, str(field_name), str(message)))
    for number, errors in result.row_errors():
        index = indexes[number - 1]
        bad.add(index)
        for error in errors:
            message = (
                "; ".join(error.error.messages)
                if isinstance(error.error, ValidationError)
                else str(error.error)
            )
            problems.append((index + 2, "", message))
    return problems, bad


def run_import(*, job_id: int) -> ImportJob:
    """Check then (unless a dry run) write an import job's file. Idempotent: a job that is not
    queued is left alone."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.state != ImportState.QUEUED:
            return job
        portal_services.transition(obj=job, name="start")
    try:
        with job.file.open("rb") as handle:
            dataset = load_dataset(job.file.name, handle.read())
    except (ImportFileError, OSError) as exc:
        return _fail(job, str(exc))
    resource_class = RESOURCES[job.kind]
    resource_class.complete(dataset, job.entity)
    keys = list(resource_class._meta.import_id_fields or [])
    missing = [key for key in keys if key not in dataset.headers]
    if missing:
        return _fail(job, f"The file has no “{'”, “'.join(missing)}” column (required).")
    total = len(dataset)
    ImportJob.objects.filter(pk=job.pk).update(total_rows=total, processed_rows=0)
    problems, bad_rows = _duplicate_keys(dataset, keys)
    checked = [index for index in range(total) if index not in bad_rows]
    counts = {"new": 0, "update": 0, "skip": 0}
    for start in range(0, len(checked), CHUNK):
        indexes = checked[start : start + CHUNK]
        part = _rows(dataset, indexes)
        result = resource_class(entity=job.entity).import_data(
            part, dry_run=True, raise_errors=False, use_transactions=True
        )
        for key in counts:
            counts[key] += result.totals.get(key, 0)
        found, bad = _row_problems(result, indexes)
        problems += found
        bad_rows |= bad
        ImportJob.objects.filter(pk=job.pk).update(processed_rows=min(total, start + CHUNK))
    ImportJob.objects.filter(pk=job.pk).update(processed_rows=total)
    message = _summary(counts, len(bad_rows), job.dry_run)
    write = not job.dry_run and (not bad_rows or job.import_valid_rows)
    if not job.dry_run and bad_rows and not job.import_valid_rows:
        message = (
            f"Nothing was imported: {len(bad_rows)} row(s) have errors. Fix them, or run the "
            "import again choosing to import the valid rows only."
        )
    if write:
        valid = [index for index in range(total) if index not in bad_rows]
        with transaction.atomic():
            for start in range(0, len(valid), CHUNK):
                resource_class(entity=job.entity).import_data(
                    _rows(dataset, valid[start : start + CHUNK]),
                    dry_run=False,
                    raise_errors=True,
                    use_transactions=False,
                )
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        job.new_rows, job.updated_rows, job.skipped_rows = (
            counts["new"],
            counts["update"],
            counts["skip"],
        )
        job.error_rows = len(bad_rows)
        job.message = message
        if problems:
            job.error_report.save(f"import-{job.pk}-errors.csv", _report(problems), save=False)
        portal_services.transition(
            obj=job,
            name="finish",
            extra={**counts, "errors": len(bad_rows), "written": write},
        )
    return job


def _summary(counts: dict[str, int], errors: int, dry_run: bool) -> str:
    verb = "would be" if dry_run else "were"
    return (
        f"{counts['new']} new, {counts['update']} updated, {counts['skip']} unchanged rows "
        f"{verb} imported; {errors} row(s) with errors."
    )


def _report(problems: list[tuple[int, str, str]]) -> ContentFile:
    out = io.StringIO()
    writer = spreadsheets.csv_writer(out)
    writer.writerow(["line", "field", "error"])
    writer.writerows(sorted(problems))
    return ContentFile(out.getvalue().encode("utf-8"))


def _fail(job: ImportJob, message: str) -> ImportJob:
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        portal_services.transition(obj=job, name="fail", message=message)
    return job


def create_job(
    *,
    kind: str,
    filename: str,
    content: bytes,
    actor: Any,
    entity: Entity | None = None,
    dry_run: bool = True,
    import_valid_rows: bool = False,
    enqueue: bool = True,
) -> ImportJob:
    """Record an import job and hand it to a worker after commit (``enqueue=False``: the
    caller runs it itself). Local operators import for one of their entities only."""
    from django.core.exceptions import PermissionDenied

    from portal.models import is_central_user

    if actor is not None and not is_central_user(actor):
        if entity is None:
            raise PermissionDenied("Choose the entity the rows are imported for.")
        portal_services.check_may_act_for(
            actor=actor, entity=entity, perm="campaigns.add_importjob"
        )
    with transaction.atomic():
        job = ImportJob(
            kind=kind,
            entity=entity,
            dry_run=dry_run,
            import_valid_rows=import_valid_rows,
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        job.file.save(PurePath(filename).name, ContentFile(content), save=False)
        job.save()
        portal_services.record_audit(obj=job, action="queue_import", actor=actor, to_state="queued")
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from campaigns.tasks import run_import_job

    run_import_job.delay(job_id)
