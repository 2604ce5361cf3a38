"""Imports of contacts and secondary data (django-import-export resources), run as jobs.

The web request only stores the file (within ``IMPORT_MAX_UPLOAD_BYTES``) and queues a job; a
worker reads it as a stream, never whole: the row limit (``IMPORT_MAX_ROWS``) is enforced while
reading, and an XLSX is refused before it is parsed when its zip declares too much XML or too
high a compression ratio (a zip bomb).

A job converts every row with the resources' widgets and the model fields' validation and
stages it in a temporary table, then checks and writes the whole file in SQL
(``campaigns/staging.py``) in one transaction holding the kind's lock: everything when the file
is clean, only the valid rows when the user chose so, nothing otherwise. A worker that stops
midway has written nothing, and the task delivered again does the job again. Every refused row
is listed in a downloadable CSV report with its line number, field and message.

A running job holds a lease: its worker renews ``heartbeat_at`` from a thread every
``IMPORT_HEARTBEAT_SECONDS``, during the load, the check and the write alike. A worker that is
killed (or frozen) stops renewing it; beat's ``recover_lost`` then ends the worker's database
session if it is still there (PostgreSQL: its uncommitted transaction and its staging tables
go with it) and fails the job as "worker lost". The job is never half applied: either its one
transaction committed, or nothing of it is in the database.

Local operators import for their entity. Every kind checks, in ``ScopedResource``, both the row
that exists under the key and the row the file would make, and looks every reference (entity,
contact, store) up among the entity's own rows only. A reference outside the entity gets the
very answer an unknown one gets, and a key that belongs to another entity is refused with that
same message, never reported as "updated": an import tells nothing about other entities' rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import threading
import zipfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import PurePath
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.files.base import ContentFile, File
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from import_export import fields, resources, widgets
from import_export.instance_loaders import CachedInstanceLoader, ModelInstanceLoader
from import_export.results import RowResult

from campaigns import staging
from campaigns.choices import ImportKind, ImportState
from campaigns.models import Booking, Contact, ImportJob, Store, Subscription
from portal import services as portal_services
from portal import spreadsheets
from portal.models import Entity

MAX_COLUMNS = 200  # an XLSX row is never read wider than this
MAX_LINE = 1024 * 1024  # characters in one CSV line
XLSX_MAX_MEMBERS = 1000
XLSX_RATIO_FROM_BYTES = 1024 * 1024  # smaller members cannot hurt, whatever their ratio
CHANGED_MESSAGE = (
    "Not imported: the data changed between the check and the import. Import this line again."
)


def not_found_message(value: Any, plural: str) -> str:
    """The one answer for a key or reference that is unknown or outside the importer's entity:
    the two cases must not be told apart."""
    return f"“{value}” is not found among your {plural}."


class ScopedForeignKeyWidget(widgets.ForeignKeyWidget):
    """A reference looked up among the importing entity's own rows only."""

    def __init__(self, model: type[Model], field: str, *, scope_path: str, plural: str) -> None:
        super().__init__(model, field=field)
        self.scope_path = scope_path
        self.plural = plural
        self.resource: ScopedResource | None = None  # bound by the resource using it
        self._found: dict[str, Any] = {}

    def get_queryset(self, value: Any, row: Any, *args: Any, **kwargs: Any) -> Any:
        queryset = self.model.objects.all()
        allowed = self.resource.allowed_entities() if self.resource is not None else None
        if allowed is not None:
            queryset = queryset.filter(**{f"{self.scope_path}__in": allowed})
        return queryset

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        if value is None or not str(value).strip():
            return None
        key = str(value).strip()
        if key not in self._found:  # a resource checks one chunk: the cache stays small
            try:
                self._found[key] = super().clean(key, row, **kwargs)
            except self.model.DoesNotExist:
                raise ValueError(not_found_message(key, self.plural)) from None
        return self._found[key]


class YesNoWidget(widgets.BooleanWidget):
    """A yes/no cell: the usual words of a CRM export in English or French, any case, or an
    error naming the value. django-import-export's own widget reads any other word as *no*,
    so a file saying "yes" would silently withdraw every contact's consent."""

    TRUE_VALUES = ["1", "true", "yes", "y", "oui"]
    FALSE_VALUES = ["0", "false", "no", "n", "non"]

    def clean(self, value: Any, row: Any = None, **kwargs: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):  # an XLSX number cell
            if value in (0, 1):
                return bool(value)
        else:
            text = str(value).strip().lower()
            if text in ("", "null", "none"):
                return None
            if text in self.TRUE_VALUES:
                return True
            if text in self.FALSE_VALUES:
                return False
        raise ValueError(
            f"“{value}” is not a yes/no value: use {'/'.join(self.TRUE_VALUES)} for yes, "
            f"{'/'.join(self.FALSE_VALUES)} for no (any case)."
        )


class KeyLoader(ModelInstanceLoader):
    """Finds the row under a key made of several columns; a reference in the key that is not
    found means no row, and the field itself then reports it."""

    def get_instance(self, row: Any) -> Any:
        try:
            return super().get_instance(row)
        except ValueError:
            return None


class ScopedResource(resources.ModelResource):
    """A resource limited to one entity's rows when imported for an entity.

    The one place where every import kind checks its scope: the row found under the key
    (``after_init_instance``) and the row about to be saved (``save_instance``) must both belong
    to the entity, and references are looked up among its rows (``ScopedForeignKeyWidget``).
    Rows are never saved here: they are kept in ``pending`` for the job, which drops them when
    only checking and writes them in short transactions otherwise (the admin's own import
    screens; jobs and the API write through ``campaigns.staging``).
    """

    scope_path = "entity"  # from the model to the entity owning a row
    plural = "rows"
    entity_column: str | None = None  # a column a local operator's file may leave out

    def __init__(self, *, entity: Entity | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scope_entity = entity
        self._allowed: set[int] | None = None
        self.pending: list[tuple[int, Model, bool]] = []
        for field in self.fields.values():  # each resource has its own copy of its fields
            if isinstance(field.widget, ScopedForeignKeyWidget):
                field.widget.resource = self
            elif type(field.widget) is widgets.BooleanWidget:
                field.widget = YesNoWidget(coerce_to_string=field.widget.coerce_to_string)

    def allowed_entities(self) -> set[int] | None:
        """The ids of the entities rows may belong to; None: any."""
        if self.scope_entity is None:
            return None
        if self._allowed is None:  # once per resource, not once per row
            self._allowed = set(self.scope_entity.descendants().values_list("pk", flat=True))
        return self._allowed

    def get_queryset(self) -> Any:
        related = "__".join(self.scope_path.split("__")[:-1])
        queryset = super().get_queryset()
        return queryset.select_related(related) if related else queryset

    def entity_of(self, instance: Model) -> int | None:
        *path, last = self.scope_path.split("__")
        owner: Any = instance
        for name in path:
            owner = getattr(owner, name, None)
            if owner is None:
                return None
        return getattr(owner, f"{last}_id", None)

    def in_scope(self, instance: Model) -> bool:
        allowed = self.allowed_entities()
        return allowed is None or self.entity_of(instance) in allowed

    def refusal(self, row: Any) -> ValidationError:
        names = list(self.get_import_id_fields())
        key = "/".join(str(row.get(self.fields[name].column_name) or "").strip() for name in names)
        return ValidationError({names[0]: not_found_message(key, self.plural)})

    def after_init_instance(self, instance: Model, new: bool, row: Any, **kwargs: Any) -> None:
        if not new and not self.in_scope(instance):
            raise self.refusal(row)  # exactly as for a key this entity may not use

    def save_instance(self, instance: Model, is_create: bool, row: Any, **kwargs: Any) -> None:
        self.before_save_instance(instance, row, **kwargs)
        if not self.in_scope(instance):
            raise self.refusal(row)
        self.pending.append((kwargs["row_number"], instance, is_create))
        self.after_save_instance(instance, row, **kwargs)


def _entity_field() -> fields.Field:
    return fields.Field(
        attribute="entity",
        column_name="entity",
        widget=ScopedForeignKeyWidget(Entity, "code", scope_path="pk", plural="entities"),
    )


def _contact_field() -> fields.Field:
    return fields.Field(
        attribute="contact",
        column_name="contact",
        widget=ScopedForeignKeyWidget(
            Contact, "external_id", scope_path="entity", plural="contacts"
        ),
    )


class ContactResource(ScopedResource):
    plural = "contacts"
    entity_column = "entity"
    entity = _entity_field()

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
        if self.scope_entity is not None and not row.get("entity"):
            row["entity"] = self.scope_entity.code


class StoreResource(ScopedResource):
    plural = "stores"
    entity_column = "entity"
    entity = _entity_field()

    class Meta:
        model = Store
        import_id_fields = ["code"]
        instance_loader_class = CachedInstanceLoader
        fields = ["code", "name", "city", "entity"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True

    def before_import_row(self, row: Any, **kwargs: Any) -> None:
        if self.scope_entity is not None and not row.get("entity"):
            row["entity"] = self.scope_entity.code


class BookingResource(ScopedResource):
    scope_path = "contact__entity"
    plural = "bookings"
    contact = _contact_field()
    store = fields.Field(
        attribute="store",
        column_name="store",
        widget=ScopedForeignKeyWidget(Store, "code", scope_path="entity", plural="stores"),
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


class SubscriptionResource(ScopedResource):
    scope_path = "contact__entity"
    plural = "subscriptions"
    contact = _contact_field()

    class Meta:
        model = Subscription
        import_id_fields = ["contact", "product", "start_date"]
        instance_loader_class = KeyLoader
        fields = ["contact", "product", "start_date", "end_date", "status"]
        clean_model_instances = True
        skip_unchanged = True
        report_skipped = True


RESOURCES: dict[str, type[ScopedResource]] = {
    ImportKind.CONTACTS: ContactResource,
    ImportKind.STORES: StoreResource,
    ImportKind.BOOKINGS: BookingResource,
    ImportKind.SUBSCRIPTIONS: SubscriptionResource,
}


# Reading files ----------------------------------------------------------------------------


class ImportFileError(ValueError):
    """The file cannot be read as a table, or goes beyond a limit."""


SUFFIXES = (".csv", ".txt", ".xlsx")


def _size(number: int) -> str:
    return f"{number / (1024 * 1024):.1f} MB" if number >= 1024 * 1024 else f"{number:,} bytes"


def check_upload(*, name: str, size: int) -> None:
    """Refuse, before it is stored, a file of another kind or larger than the upload limit."""
    if PurePath(name).suffix.lower() not in SUFFIXES:
        raise ImportFileError("Upload a .csv or .xlsx file.")
    limit = settings.IMPORT_MAX_UPLOAD_BYTES
    if size > limit:
        raise ImportFileError(
            f"The file is {_size(size)}; files up to {_size(limit)} are accepted. "
            "Split it into smaller files."
        )


def validate_upload(upload: File) -> File:
    """A form's check of an uploaded file: its kind and size only; the rows are read by the
    worker, never in the web request."""
    try:
        check_upload(name=upload.name or "", size=upload.size)
    except ImportFileError as exc:
        raise ValidationError(str(exc)) from None
    return upload


def upload_help() -> str:
    return (
        f"CSV (UTF-8, header line) or XLSX, up to {_size(settings.IMPORT_MAX_UPLOAD_BYTES)} "
        f"and {settings.IMPORT_MAX_ROWS:,} rows."
    )


def check_xlsx_archive(handle: IO[bytes]) -> None:
    """Refuse an XLSX (a zip) whose members would unpack to too much, from the sizes its
    directory declares, before anything is decompressed. Python's zipfile never returns more
    than a member's declared size, so these checks bound what openpyxl can be made to read."""
    try:
        members = zipfile.ZipFile(handle).infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ImportFileError("The file is not a readable XLSX workbook.") from None
    if len(members) > XLSX_MAX_MEMBERS:
        raise ImportFileError("The XLSX file holds too many parts to be a worksheet.")
    ratio_limit = settings.IMPORT_MAX_XLSX_RATIO
    total = 0
    for member in members:
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ImportFileError("The XLSX file uses an unusual compression; save it again.")
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > XLSX_RATIO_FROM_BYTES and ratio > ratio_limit:
            raise ImportFileError(
                f"The XLSX file expands {ratio:.0f} times when unpacked (at most {ratio_limit} "
                "is accepted), which only a zip bomb does. Save the sheet as CSV and import that."
            )
    limit = settings.IMPORT_MAX_XLSX_UNPACKED_BYTES
    if total > limit:
        raise ImportFileError(
            f"The XLSX file unpacks to {_size(total)}; at most {_size(limit)} is accepted. "
            "Split it, or save it as CSV."
        )


def _lines(text: IO[str]) -> Iterator[str]:
    """The file's lines, none read longer than MAX_LINE characters (a huge line of tiny
    fields would otherwise become millions of objects)."""
    while line := text.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE:
            raise ImportFileError(f"A line of the file is longer than {MAX_LINE:,} characters.")
        yield line


def _csv_records(handle: IO[bytes]) -> Iterator[list[str]]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    try:
        yield from csv.reader(_lines(text))
    finally:
        with contextlib.suppress(ValueError):
            text.detach()  # the caller closes its own file


def _xlsx_records(handle: IO[bytes]) -> Iterator[tuple[Any, ...]]:
    from openpyxl import load_workbook

    check_xlsx_archive(handle)
    handle.seek(0)
    book = load_workbook(handle, read_only=True, data_only=True)
    try:
        sheet = book.active
        sheet.reset_dimensions()  # never trust (nor pad rows to) the size the sheet declares
        yield from sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS)
    finally:
        book.close()


def _guarded(records: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from records
    except ImportFileError:
        raise
    except UnicodeDecodeError:
        raise ImportFileError("The CSV file is not UTF-8 text.") from None
    except Exception as exc:  # csv and openpyxl raise many kinds of parse errors
        raise ImportFileError(f"The file cannot be read: {exc}") from None


def _blank(values: Iterable[Any]) -> bool:
    return all(value is None or (isinstance(value, str) and not value.strip()) for value in values)


def _limited(records: Iterator[Any], max_rows: int) -> Iterator[tuple[int, list[Any]]]:
    """(line, values) for each row that is not blank; the header is line 1. Reading stops at
    the first line past the limit (blank lines count: they cost reading too)."""
    for count, values in enumerate(records, start=1):
        if count > max_rows:
            raise ImportFileError(
                f"The file has more than {max_rows:,} rows; split it into smaller files."
            )
        if not _blank(values):
            yield count + 1, list(values)


def _open_records(handle: IO[bytes], name: str) -> Iterator[Any]:
    suffix = PurePath(name).suffix.lower()
    if suffix == ".xlsx":
        return _guarded(_xlsx_records(handle))
    if suffix in SUFFIXES:
        return _guarded(_csv_records(handle))
    raise ImportFileError("Upload a .csv or .xlsx file.")


def _header(records: Iterator[Any]) -> list[str]:
    header = next(records, None) or []
    headers = ["" if value is None else str(value).strip() for value in header]
    while headers and not headers[-1]:
        headers.pop()
    if not headers:
        raise ImportFileError("The file has no header line.")
    return headers


def read_table(
    handle: IO[bytes], name: str, *, max_rows: int | None = None
) -> tuple[list[str], Iterator[tuple[int, list[Any]]]]:
    """The header of a CSV (UTF-8) or XLSX file, and an iterator over its rows, read only as
    they are consumed."""
    records = _open_records(handle, name)
    limit = settings.IMPORT_MAX_ROWS if max_rows is None else max_rows
    return _header(records), _limited(records, limit)


class _Table:
    """A job's file opened for one pass: its completed header and its rows, each of the
    header's width (a local operator's file may leave out the entity column)."""

    def __init__(self, job: ImportJob, resource_class: type[ScopedResource]) -> None:
        self.job = job
        self.resource_class = resource_class

    def __enter__(self) -> _Table:
        self.handle = self.job.file.open("rb")
        try:
            self._records = _open_records(self.handle, self.job.file.name)
            headers = _header(self._records)
            keys = list(self.resource_class._meta.import_id_fields or [])
            missing = [key for key in keys if key not in headers]
            if missing:
                raise ImportFileError(
                    f"The file has no “{'”, “'.join(missing)}” column (required)."
                )
        except BaseException:
            self.__exit__()
            raise
        self._rows = _limited(self._records, settings.IMPORT_MAX_ROWS)
        column = self.resource_class.entity_column
        self.extra: list[Any] = []
        if self.job.entity is not None and column and column not in headers:
            headers.append(column)
            self.extra = [self.job.entity.code]
        self.headers = headers
        self.width = len(headers) - len(self.extra)
        return self

    def __exit__(self, *exc: Any) -> None:
        for generator in (getattr(self, "_rows", None), getattr(self, "_records", None)):
            if generator is not None:
                generator.close()  # before the file it reads is closed
        self.handle.close()

    def rows(self) -> Iterator[tuple[int, list[Any], str]]:
        """(line, values, problem): a line with more values than the header is refused."""
        for line, values in self._rows:
            problem = ""
            if len(values) > self.width and not _blank(values[self.width :]):
                problem = f"This line has {len(values)} values; the header has {self.width}."
            values = values[: self.width] + [""] * (self.width - len(values))
            yield line, values + self.extra, problem


# Checking and writing -----------------------------------------------------------------------

Problem = tuple[int, str, str]  # (line, field, message)
CODES = {
    RowResult.IMPORT_TYPE_NEW: ord("n"),
    RowResult.IMPORT_TYPE_UPDATE: ord("u"),
    RowResult.IMPORT_TYPE_SKIP: ord("s"),
}
ERROR = ord("e")
STATUS_CODES = {
    "new": CODES[RowResult.IMPORT_TYPE_NEW],
    "updated": CODES[RowResult.IMPORT_TYPE_UPDATE],
    "unchanged": CODES[RowResult.IMPORT_TYPE_SKIP],
}


def report_field(name: Any) -> str:
    """The report's field column: a column of the file, or blank when the problem is the
    row's as a whole (never Django's ``__all__``); the message then says what is wrong."""
    name = str(name)
    return "" if name == NON_FIELD_ERRORS else name


def _problems(found: list[Problem]) -> list[Problem]:
    return [(line, report_field(field), message) for line, field, message in found]


def _progress(job: ImportJob, lease: _Lease | None = None) -> Any:
    def record(count: int) -> None:
        if not connection.in_atomic_block:  # visible to others only outside a transaction
            ImportJob.objects.filter(pk=job.pk).update(
                processed_rows=count, heartbeat_at=timezone.now()
            )
        elif lease is not None:  # inside one: the lease's own connection writes it
            lease.report(count)

    return record


class _Lease:
    """Renews a running job's lease from a thread (its own database connection) while the
    worker loads, checks and writes, so that long SQL statements and the write transaction do
    not let it expire; it also publishes the progress made inside the write transaction
    (``report``). Started only outside a transaction: inside one (a test's, a caller's)
    nobody else could see the job anyway, and SQLite would make the thread wait for it."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.stopping = False
        self.wake = threading.Event()
        self.reported = threading.Event()
        self.count: int | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _Lease:
        session = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                session = cursor.fetchone()[0]
        ImportJob.objects.filter(pk=self.job_id).update(
            heartbeat_at=timezone.now(), worker_session=session
        )
        if not connection.in_atomic_block:
            self.thread = threading.Thread(
                target=self._beat, name=f"import-{self.job_id}-lease", daemon=True
            )
            self.thread.start()
        return self

    def report(self, count: int) -> None:
        """Publish ``count`` processed rows now (waits for the thread's write, briefly)."""
        if self.thread is None:
            return
        self.count = count
        self.reported.clear()
        self.wake.set()
        self.reported.wait(timeout=5)

    def _beat(self) -> None:
        from django.db import connection as own  # this thread's connection

        try:
            while True:
                self.wake.wait(settings.IMPORT_HEARTBEAT_SECONDS)
                self.wake.clear()
                if self.stopping:
                    break
                progress = {} if self.count is None else {"processed_rows": self.count}
                with contextlib.suppress(DatabaseError):  # (SQLite: a writer holds the lock)
                    ImportJob.objects.filter(pk=self.job_id, state=ImportState.RUNNING).update(
                        heartbeat_at=timezone.now(), **progress
                    )
                self.reported.set()
        finally:
            self.reported.set()
            own.close()

    def __exit__(self, *exc: Any) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def _fault(point: str) -> None:
    """Tests only: with IMPORT_TEST_FAULT=<point>, the worker kills itself (SIGKILL: nothing
    runs after it, not even the rollback) at that point; with ``freeze_<point>`` it stops
    (SIGSTOP: alive, its database session open, its lease no longer renewed)."""
    if point == settings.IMPORT_TEST_FAULT:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"freeze_{point}" == settings.IMPORT_TEST_FAULT:
        os.kill(os.getpid(), signal.SIGSTOP)


def _import(job: ImportJob, lease: _Lease | None = None) -> ImportJob:
    """Stage the file, then check and (unless only checking) write it in one transaction
    holding the kind's lock: a worker killed at any point writes nothing, and the staging
    table goes with its database session.

    On PostgreSQL a write first streams the file (``StagedImport.stream``: chunks staged,
    checked and written while the next is read); at the first problem that transaction is
    rolled back and the file is read again, checked whole and reported row by row."""
    resource_class = RESOURCES[job.kind]
    _restart_progress(job, lease)
    if connection.vendor == "postgresql" and not job.dry_run:
        streamed = _import_streamed(job, resource_class, lease)
        if streamed is not None:
            return streamed
        _restart_progress(job, lease)  # the stream's count was rolled back with it
    stage: staging.StagedImport | None = None
    try:
        with _Table(job, resource_class) as table:
            stage = staging.StagedImport(kind=job.kind, entity=job.entity, columns=table.headers)
            stage.__enter__()
            stage.load(table.rows(), _progress(job, lease))
        checked = None
        if job.dry_run:  # reads only: checked outside any transaction, others write meanwhile
            checked = stage.check()
        with transaction.atomic():
            if not job.dry_run:
                staging.lock(job.kind)
            found, counts = checked or stage.check()
            write = not job.dry_run and (not counts["errors"] or job.import_valid_rows)
            written = 0
            if write:
                try:
                    written = stage.apply()
                except (staging.ImportChanged, IntegrityError):
                    raise _Changed from None
                _fault("after_apply")
            return _record(job, counts, _problems(found), written, write)
    finally:
        if stage is not None:
            stage.drop()


def _restart_progress(job: ImportJob, lease: _Lease | None) -> None:
    if lease is not None:
        lease.count = None
    ImportJob.objects.filter(pk=job.pk).update(total_rows=0, processed_rows=0)


def _import_streamed(
    job: ImportJob, resource_class: type[ScopedResource], lease: _Lease | None
) -> ImportJob | None:
    """Write a file chunk by chunk in one transaction holding the kind's lock; None (and
    nothing written) when a chunk has a problem. The staging table is created before the
    transaction, so that it is seen from outside while the import runs."""
    with (
        _Table(job, resource_class) as table,
        staging.StagedImport(kind=job.kind, entity=job.entity, columns=table.headers) as stage,
        transaction.atomic(),
    ):
        staging.lock(job.kind)
        try:
            outcome = stage.stream(table.rows(), _progress(job, lease))
        except (staging.ImportChanged, IntegrityError):
            raise _Changed from None
        if outcome is None:
            transaction.set_rollback(True)
            return None
        counts, written = outcome
        _fault("after_apply")
        return _record(job, counts, [], written, write=True)


def _record(
    job: ImportJob, counts: dict[str, int], problems: list[Problem], written: int, write: bool
) -> ImportJob:
    """Store a checked (and maybe written) import's figures and report, in its transaction,
    and finish the job. The job's row is locked only now, so that the lease thread renews it
    meanwhile; a job failed meanwhile (its lease expired: "worker lost") keeps nothing."""
    current = ImportJob.objects.select_for_update().get(pk=job.pk)
    if current.state != ImportState.RUNNING:
        raise _Lost(current)
    job = current
    job.total_rows = job.processed_rows = counts["total"]
    job.new_rows = counts["new"]
    job.updated_rows = counts["updated"]
    job.skipped_rows = counts["unchanged"]
    job.error_rows = len({line for line, _, _ in problems})
    job.rows_to_write = job.written_rows = written
    job.checked_at = timezone.now()
    if problems:
        job.error_report.save(f"import-{job.pk}-errors.csv", _report(problems), save=False)
    job.save(
        update_fields=[
            "total_rows", "processed_rows", "new_rows", "updated_rows", "skipped_rows",
            "error_rows", "rows_to_write", "written_rows", "checked_at", "error_report",
        ]
    )  # fmt: skip
    return _finish(job, write)


class _Changed(Exception):
    """Rows changed under the import between its check and its write (rolled back)."""


class _Lost(Exception):
    """The job stopped running (failed as lost) while this worker still wrote: rolled back."""

    def __init__(self, job: ImportJob) -> None:
        super().__init__(f"Import job {job.pk} is {job.state}.")
        self.job = job


def run_import(*, job_id: int) -> ImportJob:
    """Check then (unless a dry run) write an import job's file. Idempotent: a finished job is
    left alone; a job found running (its worker stopped and the task was delivered again) is
    done again from the start, as its interrupted transaction wrote nothing."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job_id)
        if job.state == ImportState.QUEUED:
            portal_services.transition(obj=job, name="start")
        elif job.state != ImportState.RUNNING:
            return job
    try:
        with _Lease(job.pk) as lease:
            return _import(job, lease)
    except _Lost as exc:
        return exc.job
    except (ImportFileError, OSError) as exc:
        return _fail(job, str(exc))
    except _Changed:
        return _fail(job, CHANGED_MESSAGE.replace("this line", "the file"))
    except DatabaseError as exc:  # rolled back: nothing was written
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(job, f"The database refused the file ({detail}); nothing was imported.")


LOST_MESSAGE = (
    "Failed (worker lost): the worker running this import stopped without finishing "
    "(killed or frozen); nothing was imported. Run the import again."
)


def recover_lost() -> int:
    """Beat's recovery: running jobs whose lease expired (no heartbeat for
    ``IMPORT_LEASE_SECONDS``) fail as "worker lost". The worker's database session, if it
    is still there (a frozen worker, a half-open connection), is ended first: its uncommitted
    transaction is rolled back, its staging tables dropped and the kind's lock released.
    Returns the number of jobs failed."""
    cutoff = timezone.now() - timedelta(seconds=settings.IMPORT_LEASE_SECONDS)
    expired = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    running = ImportJob.objects.filter(expired, state=ImportState.RUNNING)
    failed = 0
    for pk, session, beat in running.values_list("pk", "worker_session", "heartbeat_at"):
        _end_session(session, beat or cutoff)
        with transaction.atomic():
            job = running.select_for_update(skip_locked=True).filter(pk=pk).first()
            if job is None:  # renewed or finished meanwhile, or being written right now
                continue
            portal_services.transition(
                obj=job, name="fail", message=LOST_MESSAGE, extra={"reason": "worker lost"}
            )
            failed += 1
    return failed


def _end_session(pid: int | None, beat: Any) -> None:
    """End a lost worker's PostgreSQL session (the one that started before its last
    heartbeat: a later session reusing the pid is someone else's)."""
    if pid is None or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE pid = %s AND backend_start <= %s AND pid <> pg_backend_pid()",
            [pid, beat],
        )


def interrupted(*, job_id: int) -> str:
    """The worker's time ran out: the import's transaction was rolled back; the job fails."""
    job = ImportJob.objects.get(pk=job_id)
    if job.state != ImportState.RUNNING:
        return job.state
    return _fail(job, "Importing the file took longer than the time limit; split it.").state


def _finish(job: ImportJob, written: bool) -> ImportJob:
    errors = job.error_rows
    if job.dry_run or written:
        verb = "would be" if job.dry_run else "were"
        job.message = (
            f"{job.new_rows} new, {job.updated_rows} updated, {job.skipped_rows} unchanged "
            f"rows {verb} imported; {errors} row(s) with errors."
        )
    else:
        job.message = (
            f"Nothing was imported: {errors} row(s) have errors. Fix them, or run the "
            "import again choosing to import the valid rows only."
        )
    portal_services.transition(
        obj=job,
        name="finish",
        extra={
            "new": job.new_rows,
            "update": job.updated_rows,
            "skip": job.skipped_rows,
            "errors": job.error_rows,
            "written": written,
        },
    )
    return job


def _report(problems: list[Problem]) -> ContentFile:
    out = io.StringIO()
    writer = spreadsheets.csv_writer(out)
    writer.writerow(["line", "field", "error"])
    writer.writerows(sorted(problems))
    return ContentFile(out.getvalue().encode("utf-8"))


def _fail(job: ImportJob, message: str) -> ImportJob:
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(pk=job.pk)
        if job.state not in (ImportState.QUEUED, ImportState.RUNNING):
            return job
        portal_services.transition(obj=job, name="fail", message=message)
    return job


def create_job(
    *,
    kind: str,
    filename: str,
    content: bytes | File,
    actor: Any,
    entity: Entity | None = None,
    dry_run: bool = True,
    import_valid_rows: bool = False,
    enqueue: bool = True,
    size_limit: bool = True,
) -> ImportJob:
    """Store an import file as a job and hand it to a worker after commit (``enqueue=False``:
    the caller runs it itself). Nothing is parsed here. Local operators import for one of
    their entities only. ``size_limit=False`` is for the command line only, whose operator
    already holds the server."""
    from django.core.exceptions import PermissionDenied

    from portal.models import is_central_user

    upload = ContentFile(content) if isinstance(content, bytes) else content
    check_upload(name=filename, size=upload.size if size_limit else 0)
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
        job.file.save(PurePath(filename).name, upload, save=False)  # streamed, not read whole
        job.save()
        portal_services.record_audit(obj=job, action="queue_import", actor=actor, to_state="queued")
        if enqueue:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from campaigns.tasks import run_import_job

    run_import_job.delay(job_id)


# Rows given as data (the API's bulk upsert) -------------------------------------------------


class RowsRefused(Exception):
    """Rows refused at write time (changed since the check): nothing was written."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("Rows changed during the write.")
        self.problems = problems


def import_scope(*, actor: Any, entity: Entity | None) -> None:
    """Who may import rows for whom: the rule of ``create_job``, for rows given as data."""
    from django.core.exceptions import PermissionDenied

    from portal.models import is_central_user

    if actor is None or is_central_user(actor):
        if actor is not None and not actor.has_perm("campaigns.add_importjob"):
            raise PermissionDenied("Your role does not allow this.")
        return
    if entity is None:
        raise PermissionDenied("Choose the entity the rows are imported for.")
    portal_services.check_may_act_for(actor=actor, entity=entity, perm="campaigns.add_importjob")


def import_rows(
    *,
    kind: str,
    rows: list[dict[str, Any]],
    actor: Any,
    entity: Entity | None = None,
    import_valid_rows: bool = False,
    dry_run: bool = False,
    expect: str = "",
) -> dict[str, Any]:
    """Check then write rows given as dictionaries (column name → value) with the very
    resources, scoping and messages of a file import: keys and references are looked up among
    ``entity``'s rows only, a repeated key is refused, and nothing is written when a row is
    wrong unless ``import_valid_rows``. The write is one transaction: all the accepted rows
    or none. Rows are numbered from 0 in the problems ``(row, field, message)``.

    ``expect="new"`` refuses rows whose key exists (a create); ``"existing"`` rows whose key
    does not (an update). Idempotent: the same rows again are reported unchanged."""
    import_scope(actor=actor, entity=entity)
    resource_class = RESOURCES[kind]
    keys = list(resource_class._meta.import_id_fields or [])
    problems: list[Problem] = []
    codes: dict[int, int] = {}
    first: dict[str, int] = {}
    groups: dict[tuple[str, ...], list[int]] = {}
    for number, row in enumerate(rows):
        missing = [key for key in keys if str(row.get(key) or "").strip() == ""]
        if missing:
            problems.append((number, missing[0], "This field is required."))
            codes[number] = ERROR
            continue
        key = "/".join(str(row[name]).strip() for name in keys)
        if key in first:
            problems.append((number, keys[0], f"“{key}” appears on several rows ({first[key]})."))
            codes[number] = ERROR
            continue
        first[key] = number
        groups.setdefault(tuple(sorted(row)), []).append(number)
    entity_column = resource_class.entity_column
    write = False
    stages: list[staging.StagedImport] = []
    try:
        with transaction.atomic():
            staging.lock(kind)
            for columns, numbers in groups.items():
                names = list(columns)
                extra = []
                if entity is not None and entity_column and entity_column not in names:
                    names.append(entity_column)  # as for a file: the importer's entity
                    extra = [entity.code]
                stage = staging.StagedImport(kind=kind, entity=entity, columns=names, expect=expect)
                stages.append(stage)
                stage.__enter__()
                stage.load(
                    (number, [rows[number][column] for column in columns] + extra, "")
                    for number in numbers
                )
                found, _ = stage.check()
                problems += _problems(found)
                bad_rows = {number for number, _, _ in found}
                for number in numbers:
                    codes[number] = ERROR if number in bad_rows else 0
                for status, lines in stage.statuses().items():
                    for number in lines:
                        codes[number] = STATUS_CODES[status]
            bad_rows = {number for number, _, _ in problems}
            write = not dry_run and (not bad_rows or import_valid_rows)
            if write:
                for stage in stages:
                    try:
                        stage.apply()
                    except (staging.ImportChanged, IntegrityError):
                        raise RowsRefused([]) from None
    except RowsRefused:
        problems += [(number, "", CHANGED_MESSAGE) for number in codes if codes[number] != ERROR]
        write = False
    finally:
        for stage in stages:
            stage.drop()
    counts = list(codes.values())
    return {
        "new": counts.count(CODES[RowResult.IMPORT_TYPE_NEW]),
        "updated": counts.count(CODES[RowResult.IMPORT_TYPE_UPDATE]),
        "unchanged": counts.count(CODES[RowResult.IMPORT_TYPE_SKIP]),
        "errors": len({number for number, _, _ in problems}),
        "written": write,
        "problems": sorted(problems, key=lambda item: (item[0], item[1])),
    }
