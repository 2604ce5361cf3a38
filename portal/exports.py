"""Exports of lists (contacts, orders …) as CSV or XLSX, never built in memory.

Each app registers the lists it exports (``register``, from its ``AppConfig.ready``): the
columns (a lookup each, read with ``values_list``), the rows a user may export
(``visible(user)``) and the permission needed. A small export (at most
``EXPORT_IMMEDIATE_MAX_ROWS`` rows) is streamed in the response (``stream_response``). A larger
one becomes an ``ExportJob`` (``create_export``): a worker counts the rows, then reads them by
keyset chunks of ``EXPORT_CHUNK_ROWS`` (``pk > last`` ordered by ``pk``: each chunk is one
indexed query, nothing held open between chunks) and writes them to a temporary file — CSV
line by line, XLSX through openpyxl's write-only mode — committing its progress after each
chunk; the finished file is copied into private storage. Memory stays that of one chunk
whatever the size of the list (``bench/export_memory.py`` measures it).

The filters are stored as JSON and checked when the job is made: a search text for the portal's
lists, or the admin changelist's own query parameters, which the worker hands back to the same
``ModelAdmin`` (as the job's owner) so the file holds exactly the rows the changelist showed.
Either way the rows are also limited to ``visible(owner)``: an export never holds another
entity's rows. Only the owner sees the job and downloads its file (404 for anyone else). Files
are deleted ``EXPORT_RETENTION_HOURS`` after they were made (``purge_expired_exports``).
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.db import transaction
from django.db.models import Model, Q, QuerySet
from django.http import FileResponse, HttpRequest, QueryDict, StreamingHttpResponse
from django.utils import timezone

from portal import services as portal_services
from portal import spreadsheets
from portal.choices import ExportFormat, ExportState
from portal.exceptions import DomainError
from portal.models import ExportJob

MAX_SEARCH = 200
MAX_ADMIN_PARAMS = 30
MAX_PARAM_LENGTH = 500
# Changelist parameters that do not choose rows (order, page, popup …): never stored.
IGNORED_ADMIN_PARAMS = frozenset({"o", "p", "_changelist_filters", "_to_field", "_popup", "all"})


@dataclass(frozen=True)
class Column:
    """One column of an export: its name (as the admin's resource field names it), the lookup
    read from the database, the header written and, when a value needs it, a renderer."""

    name: str
    path: str
    header: str = ""
    render: Callable[[Any], Any] | None = None

    @property
    def title(self) -> str:
        return self.header or self.name


@dataclass(frozen=True)
class ExportKind:
    """A list that may be exported: its model, columns, the rows a user may export, the
    permission needed, and (portal lists) what the search box matches."""

    name: str
    label: str
    model: type[Model]
    columns: tuple[Column, ...]
    visible: Callable[[Any], QuerySet]
    permission: str
    search: Callable[[str], Q] | None = None

    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


_KINDS: dict[str, ExportKind] = {}


def register(kind: ExportKind) -> None:
    _KINDS[kind.name] = kind


def get_kind(name: str) -> ExportKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise DomainError(f"“{name}” is not a list that can be exported.") from None


def registered() -> list[ExportKind]:
    return list(_KINDS.values())


# Filters ---------------------------------------------------------------------------------------


def clean_filters(kind: ExportKind, raw: Any) -> dict[str, Any]:
    """The filters as stored: ``{"q": text}`` (portal lists) or ``{"admin": {param: value}}``
    (an admin changelist's query); anything else is refused, naming the problem."""
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict):
        raise DomainError("The filters must be an object.")
    unknown = sorted(set(raw) - {"q", "admin"})
    if unknown:
        raise DomainError(f"Unknown filter “{unknown[0]}”: use “q” or “admin”.")
    cleaned: dict[str, Any] = {}
    if "q" in raw:
        text = raw["q"]
        if not isinstance(text, str) or len(text) > MAX_SEARCH:
            raise DomainError(f"The search (“q”) must be text of at most {MAX_SEARCH} characters.")
        if kind.search is None and text.strip():
            raise DomainError(f"The {kind.label.lower()} export has no search.")
        if text.strip():
            cleaned["q"] = text.strip()
    if "admin" in raw:
        params = raw["admin"]
        if not isinstance(params, dict) or len(params) > MAX_ADMIN_PARAMS:
            raise DomainError(
                f"The admin filters must be an object of at most {MAX_ADMIN_PARAMS} entries."
            )
        kept = {}
        for key, value in params.items():
            if not isinstance(value, str) or len(key) > 100 or len(value) > MAX_PARAM_LENGTH:
                raise DomainError(f"The admin filter “{str(key)[:100]}” must be short text.")
            if key not in IGNORED_ADMIN_PARAMS:
                kept[key] = value
        if kept:
            cleaned["admin"] = kept
    return cleaned


def admin_filters(request: HttpRequest) -> dict[str, Any]:
    """The row-choosing parameters of the changelist an admin export page was opened from."""
    params = {key: request.GET.get(key, "") for key in request.GET}
    return {"admin": params} if params else {}


def _admin_queryset(kind: ExportKind, user: Any, params: dict[str, str]) -> QuerySet:
    """The rows the model's admin changelist shows ``user`` for these query parameters."""
    from django.contrib import admin
    from django.contrib.admin.exceptions import DisallowedModelAdminLookup
    from django.contrib.admin.options import IncorrectLookupParameters
    from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError

    model_admin = admin.site._registry.get(kind.model)
    if model_admin is None:
        raise DomainError(f"The {kind.label.lower()} have no admin list to filter.")
    request = HttpRequest()
    request.method = "GET"
    request.GET = QueryDict(mutable=True)
    for key, value in params.items():
        request.GET[key] = value
    request.user = user
    try:
        return model_admin.get_export_queryset(request)
    except (
        IncorrectLookupParameters,
        DisallowedModelAdminLookup,
        FieldError,
        FieldDoesNotExist,
        ValidationError,
        ValueError,
        TypeError,
    ) as exc:
        raise DomainError(f"These list filters cannot be applied: {exc}") from None


def rows_queryset(kind: ExportKind, user: Any, filters: dict[str, Any]) -> QuerySet:
    """The rows an export holds: the user's visible rows, narrowed by the filters."""
    queryset = kind.visible(user)
    if "admin" in filters:
        # Both narrowings apply: the changelist's filters and the export's own scoping.
        visible = queryset
        queryset = _admin_queryset(kind, user, filters["admin"])
        if visible.query.where:
            queryset = queryset.filter(pk__in=visible.values("pk"))
    if filters.get("q") and kind.search is not None:
        queryset = queryset.filter(kind.search(filters["q"]))
    return queryset.order_by()


def chosen_columns(kind: ExportKind, names: Iterable[str] | None) -> list[Column]:
    """The kind's columns among ``names`` (in the kind's order); all of them when none."""
    wanted = list(names or [])
    if not wanted:
        return list(kind.columns)
    unknown = [name for name in wanted if name not in kind.column_names()]
    if unknown:
        raise DomainError(
            f"Unknown column “{unknown[0]}”; choose among {', '.join(kind.column_names())}."
        )
    return [column for column in kind.columns if column.name in wanted]


# Rows ------------------------------------------------------------------------------------------


def cell(value: Any) -> Any:
    """A database value as the file shows it: yes/no as 1/0 (as imports read them), dates
    and times in ISO 8601 (local time), nothing as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return (timezone.localtime(value) if timezone.is_aware(value) else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def iter_chunks(queryset: QuerySet, columns: list[Column], chunk_rows: int) -> Iterator[list[list]]:
    """The rows by keyset chunks (``pk > last`` ordered by ``pk``), each chunk one query: the
    database never holds a cursor open between chunks and memory holds one chunk."""
    paths = ["pk", *[column.path for column in columns]]
    renders = [column.render for column in columns]
    last: Any = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        chunk = list(page.order_by("pk").values_list(*paths)[:chunk_rows])
        if not chunk:
            return
        last = chunk[-1][0]
        yield [
            [
                cell(render(value) if render else value)
                for render, value in zip(renders, row[1:], strict=True)
            ]
            for row in chunk
        ]
        if len(chunk) < chunk_rows:
            return


class _Echo:
    """A file-like object whose ``write`` hands the line back (csv.writer into a stream)."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(header: list[str], chunks: Iterable[list[list]]) -> Iterator[bytes]:
    writer = csv.writer(_Echo())
    yield writer.writerow(spreadsheets.safe_row(header)).encode("utf-8")
    for chunk in chunks:
        yield "".join(writer.writerow(spreadsheets.safe_row(row)) for row in chunk).encode("utf-8")


def _write_xlsx(target: Any, header: list[str], chunks: Iterable[list[list]], title: str) -> None:
    """A workbook in openpyxl's write-only mode: rows go to a temporary file as they come;
    every text cell is made safe (``spreadsheets.xlsx_value``), so none is a formula."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title[:31] or "Export")
    sheet.append([spreadsheets.xlsx_value(value) for value in header])
    for chunk in chunks:
        for row in chunk:
            sheet.append([spreadsheets.xlsx_value(value) for value in row])
    book.save(target)


def stream_response(
    *, kind: ExportKind, queryset: QuerySet, columns: list[Column], file_format: str, name: str
) -> StreamingHttpResponse | FileResponse:
    """A small export answered at once, never whole in memory: CSV streamed line by line,
    XLSX written to a temporary file then streamed from it."""
    header = [column.title for column in columns]
    chunks = iter_chunks(queryset, columns, settings.EXPORT_CHUNK_ROWS)
    if file_format == ExportFormat.XLSX:
        handle = tempfile.TemporaryFile()  # noqa: SIM115  (FileResponse closes it)
        _write_xlsx(handle, header, chunks, kind.label)
        handle.seek(0)
        response: Any = FileResponse(handle, as_attachment=True, filename=f"{name}.xlsx")
        response["Content-Type"] = (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
    else:
        response = StreamingHttpResponse(
            _csv_lines(header, chunks), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def immediate_limit() -> int:
    """Up to this many rows an export is answered at once (streamed), beyond it by a job."""
    return settings.EXPORT_IMMEDIATE_MAX_ROWS


# Jobs ------------------------------------------------------------------------------------------


def check_may_export(*, actor: Any, kind: ExportKind) -> None:
    if actor is None or not actor.is_authenticated or not actor.has_perm(kind.permission):
        raise PermissionDenied(f"Your role does not allow exporting {kind.label.lower()}.")


def create_export(
    *,
    actor: Any,
    kind: str,
    file_format: str = ExportFormat.CSV,
    filters: Any = None,
    columns: Iterable[str] | None = None,
) -> ExportJob:
    """Queue an export of ``kind`` for ``actor`` (who must hold its permission); a worker
    writes it after commit. The filters and columns are checked now, so a job never fails
    on them later."""
    export_kind = get_kind(kind)
    check_may_export(actor=actor, kind=export_kind)
    if file_format not in ExportFormat.values:
        raise DomainError(f"The format must be one of {', '.join(ExportFormat.values)}.")
    cleaned = clean_filters(export_kind, filters)
    chosen = [column.name for column in chosen_columns(export_kind, columns)]
    rows_queryset(export_kind, actor, cleaned)  # an admin filter that cannot apply fails here
    with transaction.atomic():
        job = ExportJob.objects.create(
            owner=actor,
            kind=export_kind.name,
            file_format=file_format,
            columns=chosen if len(chosen) < len(export_kind.columns) else [],
            filters=cleaned,
        )
        portal_services.record_audit(
            obj=job, action="queue_export", actor=actor, to_state=ExportState.QUEUED,
            extra={"kind": job.kind, "format": job.file_format, "filters": cleaned},
        )  # fmt: skip
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id: int) -> None:
    from portal.tasks import run_export_job

    run_export_job.delay(job_id)


def _claim(job_id: int) -> tuple[ExportJob | None, Any]:
    """Take the job (queued, or running after its worker stopped: written again) and count
    its rows. Returns the job and the start time that fences this run's progress writes."""
    with transaction.atomic():
        job = ExportJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state not in (ExportState.QUEUED, ExportState.RUNNING):
            return None, None  # gone, done, failed or expired: a repeated task does nothing
        kind = get_kind(job.kind)
        total = rows_queryset(kind, job.owner, job.filters).count()
        name = "start" if job.state == ExportState.QUEUED else "restart"
        portal_services.transition(obj=job, name=name, total_rows=total, extra={"rows": total})
    return job, job.started_at


def run_export(*, job_id: int) -> ExportJob | None:
    """Write an export job's file. Idempotent: a finished job is left alone, a job found
    running (its worker stopped, the task came again) is written again from the start; a run
    overtaken by another one (its fence, ``started_at``, changed) stops and keeps nothing."""
    try:
        job, fence = _claim(job_id)
    except DomainError as exc:
        return _fail(job_id, str(exc))
    if job is None:
        return ExportJob.objects.filter(pk=job_id).first()
    kind = get_kind(job.kind)
    try:
        columns = chosen_columns(kind, job.columns)
        queryset = rows_queryset(kind, job.owner, job.filters)
    except DomainError as exc:
        return _fail(job.pk, str(exc))
    header = [column.title for column in columns]
    done = 0

    def progressed(chunks: Iterable[list[list]]) -> Iterator[list[list]]:
        nonlocal done
        for chunk in chunks:
            yield chunk
            done += len(chunk)
            moved = ExportJob.objects.filter(
                pk=job.pk, state=ExportState.RUNNING, started_at=fence
            ).update(done_rows=min(done, job.total_rows))
            if not moved:
                raise _Overtaken

    chunks = progressed(iter_chunks(queryset, columns, settings.EXPORT_CHUNK_ROWS))
    with tempfile.TemporaryFile() as handle:
        try:
            if job.file_format == ExportFormat.XLSX:
                _write_xlsx(handle, header, chunks, kind.label)
            else:
                for line in _csv_lines(header, chunks):
                    handle.write(line)
        except _Overtaken:
            return ExportJob.objects.get(pk=job.pk)
        handle.seek(0)
        return _finish(job.pk, fence, handle, done)


class _Overtaken(Exception):
    """Another run of the same job took over (or it was failed): this one stops."""


def _finish(job_id: int, fence: Any, handle: Any, rows: int) -> ExportJob:
    with transaction.atomic():
        job = ExportJob.objects.select_for_update().get(pk=job_id)
        if job.state != ExportState.RUNNING or job.started_at != fence:
            return job  # overtaken: the other run writes the file
        if job.file:
            job.file.delete(save=False)
        job.file.save(job.filename, File(handle, name=job.filename), save=False)
        expires_at = timezone.now() + timedelta(hours=settings.EXPORT_RETENTION_HOURS)
        portal_services.transition(
            obj=job, name="finish", rows=rows, expires_at=expires_at, extra={"rows": rows}
        )
    return job


def _fail(job_id: int, message: str) -> ExportJob:
    with transaction.atomic():
        job = ExportJob.objects.select_for_update().get(pk=job_id)
        if job.state in (ExportState.QUEUED, ExportState.RUNNING):
            portal_services.transition(obj=job, name="fail", message=message)
    return job


def interrupted(*, job_id: int) -> str:
    """The worker's time ran out: the job fails with a message saying so."""
    message = "Writing the file took longer than the time limit; export fewer rows."
    return _fail(job_id, message).state


def purge_expired_exports(*, now: Any = None) -> int:
    """Delete the files of exports past their expiry (the rows stay, marked expired), and
    fail jobs a lost task left queued or running for more than a day."""
    now = now or timezone.now()
    purged = 0
    for pk in ExportJob.objects.filter(state=ExportState.DONE, expires_at__lte=now).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            job = ExportJob.objects.select_for_update().get(pk=pk)
            if job.state != ExportState.DONE:
                continue
            name = job.file.name
            job.file = ""
            portal_services.transition(obj=job, name="expire")
            if name:
                storage = job.file.storage
                transaction.on_commit(lambda name=name, storage=storage: storage.delete(name))
            purged += 1
    stale = now - timedelta(days=1)
    for pk in ExportJob.objects.filter(
        state__in=[ExportState.QUEUED, ExportState.RUNNING], created_at__lte=stale
    ).values_list("pk", flat=True):
        _fail(pk, "The export was not finished within a day; export again.")
    return purged


def status(job: ExportJob) -> dict[str, Any]:
    """What the progress page polls: state, rows done and total, and the download link."""
    from django.urls import reverse

    ready = job.state == ExportState.DONE and bool(job.file)
    return {
        "id": job.pk,
        "state": job.state,
        "state_display": job.get_state_display(),
        "done_rows": job.done_rows,
        "total_rows": job.total_rows,
        "progress": job.progress,
        "message": job.message,
        "download_url": reverse("portal:export_download", args=[job.pk]) if ready else "",
        "finished": job.state not in (ExportState.QUEUED, ExportState.RUNNING),
    }
