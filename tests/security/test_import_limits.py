"""Finding 5: an import cannot slow or break the portal for others. The web request only
stores the file; a worker reads it as a stream within size, row and unpacking limits, checks it
without holding a transaction and writes it in short, resumable chunks."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from campaigns import imports, staging
from campaigns.models import Contact, ImportJob

HEADER = "external_id,first_name,entity\n"


def rows(count: int, start: int = 0) -> str:
    return "".join(f"K{i},Name{i},STORE_A\n" for i in range(start, start + count))


def run(content: bytes, *, filename: str = "upload.csv", **kwargs):
    job = imports.create_job(
        kind="contacts", filename=filename, content=content, actor=None, enqueue=False, **kwargs
    )
    return imports.run_import(job_id=job.pk)


# Upload size ----------------------------------------------------------------------------------


def test_an_upload_over_the_size_limit_is_refused_with_a_message(org, client, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000
    client.force_login(org.operator_a)
    upload = SimpleUploadedFile("people.csv", (HEADER + rows(100)).encode())
    response = client.post(
        reverse("campaigns:import_create"),
        {"kind": "contacts", "file": upload, "entity": org.store_a.pk, "dry_run": "on"},
    )
    assert response.status_code == 200
    assert "files up to 1,000 bytes are accepted" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_the_admin_refuses_an_upload_over_the_size_limit(org, client, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000
    client.force_login(org.marketer)
    upload = SimpleUploadedFile("people.csv", (HEADER + rows(100)).encode())
    response = client.post(
        reverse("admin:campaigns_importjob_add"), {"kind": "contacts", "file": upload}
    )
    assert response.status_code == 200
    assert "files up to 1,000 bytes are accepted" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_the_service_refuses_a_file_over_the_size_limit_whoever_calls_it(org, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000
    with pytest.raises(imports.ImportFileError, match="files up to 1,000 bytes"):
        run((HEADER + rows(100)).encode())
    assert not ImportJob.objects.exists()


# The web request does not parse ----------------------------------------------------------------


def test_the_web_request_stores_the_file_and_the_worker_reads_it(
    org, client, monkeypatch, django_capture_on_commit_callbacks
):
    reads = []
    real = imports._open_records
    monkeypatch.setattr(
        imports, "_open_records", lambda *args: reads.append(args[1]) or real(*args)
    )
    client.force_login(org.operator_a)
    content = (HEADER + rows(3) + "BAD,Bob,NOWHERE\n").encode()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("campaigns:import_create"),
            {
                "kind": "contacts",
                "file": SimpleUploadedFile("people.csv", content),
                "entity": org.store_a.pk,
                "dry_run": "on",
            },
        )
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{job.pk}/")
    assert reads == [] and (job.state, job.total_rows, job.error_rows) == ("queued", 0, 0)
    with job.file.open("rb") as handle:
        assert handle.read() == content  # stored as sent
    page = client.get(response["Location"]).content.decode()
    assert "Waiting for a worker" in page
    for callback in callbacks:  # the worker's turn
        callback()
    job.refresh_from_db()
    assert len(reads) == 1
    assert (job.state, job.total_rows, job.new_rows, job.error_rows) == ("done", 4, 3, 1)


def test_a_file_that_cannot_be_read_is_accepted_by_the_request_and_fails_in_the_worker(
    org, client, django_capture_on_commit_callbacks
):
    client.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("campaigns:import_create"),
            {
                "kind": "contacts",
                "file": SimpleUploadedFile("people.csv", "external_id\nÉva\n".encode("latin-1")),
                "entity": org.store_a.pk,
            },
        )
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.state == "failed" and "not UTF-8" in job.message


# Rows read as a stream, limited while reading ----------------------------------------------------


class EndlessCSV(io.RawIOBase):
    """A CSV file that never ends; counts what was read of it."""

    def __init__(self) -> None:
        self.served = 0
        self.header = HEADER.encode()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        line = self.header or f"K{self.served},Name,STORE_A\n".encode()
        self.header = b""
        data = (line * (len(buffer) // len(line) + 1))[: len(buffer)]
        buffer[: len(data)] = data
        self.served += len(data)
        return len(data)


def test_the_row_limit_is_enforced_while_reading(settings):
    stream = EndlessCSV()
    headers, table = imports.read_table(io.BufferedReader(stream), "endless.csv", max_rows=1000)
    assert headers == ["external_id", "first_name", "entity"]
    with pytest.raises(imports.ImportFileError, match="more than 1,000 rows"):
        for _ in table:
            pass
    assert stream.served < 200_000  # it stopped at the limit, far from the end (there is none)


def test_a_job_over_the_row_limit_fails_and_writes_nothing(org, settings):
    settings.IMPORT_MAX_ROWS = 5
    job = run((HEADER + rows(6)).encode(), dry_run=False)
    assert job.state == "failed" and "more than 5 rows" in job.message
    assert not Contact.objects.exists()
    job = run((HEADER + rows(5)).encode(), dry_run=False)
    assert job.state == "done" and Contact.objects.count() == 5


# XLSX unpacking bounded --------------------------------------------------------------------------


def xlsx(*, padding: int = 0) -> bytes:
    """A real workbook; ``padding`` bytes of blank space added inside its sheet's XML (valid,
    and compressing about a thousand times, as a zip bomb does)."""
    import tablib

    dataset = tablib.Dataset(headers=["external_id", "first_name", "entity"])
    dataset.append(["X1", "Excel", "STORE_A"])
    source = zipfile.ZipFile(io.BytesIO(dataset.export("xlsx")))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.startswith("xl/worksheets/") and padding:
                data = data.replace(b"<sheetData>", b"<sheetData>" + b" " * padding, 1)
            target.writestr(member.filename, data)
    return out.getvalue()


def test_an_xlsx_zip_bomb_is_refused_quickly_before_it_is_parsed(org, monkeypatch):
    import openpyxl

    bomb = xlsx(padding=100 * 1024 * 1024)
    assert len(bomb) < 200_000
    parsed = []
    monkeypatch.setattr(openpyxl, "load_workbook", lambda *a, **k: parsed.append(1))
    started = time.monotonic()
    job = run(bomb, filename="bomb.xlsx", dry_run=False)
    assert time.monotonic() - started < 2
    assert job.state == "failed" and "zip bomb" in job.message
    assert parsed == [] and not Contact.objects.exists()


def test_an_xlsx_unpacking_to_more_than_the_limit_is_refused(org, settings):
    settings.IMPORT_MAX_XLSX_UNPACKED_BYTES = 2000
    job = run(xlsx(), filename="people.xlsx", dry_run=False)
    assert job.state == "failed" and "unpacks to" in job.message
    assert not Contact.objects.exists()
    settings.IMPORT_MAX_XLSX_UNPACKED_BYTES = 10_000_000
    job = run(xlsx(padding=10_000), filename="people.xlsx", dry_run=False)
    assert job.state == "done" and Contact.objects.get().external_id == "X1"


# Short transactions ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_other_users_can_write_while_an_import_is_checked(org, monkeypatch):
    """On SQLite every transaction holds the database's write lock: a check inside one made
    logins wait for it (up to the lock timeout) or fail with "database is locked"."""
    waits = []
    errors = []

    def login():  # another user's request, on its own connection
        from django.contrib.auth.models import User
        from django.db import connection as own

        started = time.monotonic()
        try:
            User.objects.filter(pk=org.operator_b.pk).update(last_login=timezone.now())
        except Exception as exc:  # "database is locked"
            errors.append(exc)
        finally:
            waits.append(time.monotonic() - started)
            own.close()

    real = staging.StagedImport.check

    def during_the_check(self, *args, **kwargs):
        if not waits:
            other = threading.Thread(target=login)
            other.start()
            other.join(timeout=30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(staging.StagedImport, "check", during_the_check)
    job = run((HEADER + rows(20)).encode(), dry_run=True)
    assert job.state == "done" and job.new_rows == 20
    assert errors == [] and waits and waits[0] < 1


def test_rows_are_written_in_one_transaction_with_the_kinds_lock(org, monkeypatch):
    written = []
    real = staging.StagedImport.apply

    def apply(self):
        assert connection.in_atomic_block
        written.append(real(self))
        return written[-1]

    monkeypatch.setattr(staging.StagedImport, "apply", apply)
    job = run((HEADER + rows(5)).encode(), dry_run=False)
    assert job.state == "done" and (job.written_rows, job.rows_to_write) == (5, 5)
    assert written == [5] and Contact.objects.count() == 5


def test_a_write_interrupted_midway_writes_nothing_and_is_done_again(org, monkeypatch):
    """The check and the write are one transaction: a worker that stops after the rows were
    sent but before the commit leaves nothing; the task delivered again imports every row."""
    real = staging.StagedImport.apply

    def crash_after_the_write(self):
        real(self)
        assert Contact.objects.count() == 5  # written, not committed
        raise SystemExit("worker killed")

    monkeypatch.setattr(staging.StagedImport, "apply", crash_after_the_write)
    job = imports.create_job(
        kind="contacts",
        filename="people.csv",
        content=(HEADER + rows(5)).encode(),
        actor=None,
        dry_run=False,
        enqueue=False,
    )
    with pytest.raises(SystemExit):
        imports.run_import(job_id=job.pk)
    job.refresh_from_db()
    assert (job.state, job.written_rows, Contact.objects.count()) == ("running", 0, 0)
    assert staging.staging_tables() == []
    monkeypatch.setattr(staging.StagedImport, "apply", real)
    job = imports.run_import(job_id=job.pk)  # the task, delivered again
    assert (job.state, job.written_rows, job.new_rows, job.error_rows) == ("done", 5, 5, 0)
    assert sorted(Contact.objects.values_list("external_id", flat=True)) == [
        "K0",
        "K1",
        "K2",
        "K3",
        "K4",
    ]


def test_a_csv_line_longer_than_the_limit_is_refused_without_being_split(org, monkeypatch):
    monkeypatch.setattr(imports, "MAX_LINE", 1000)
    job = run((HEADER + "K1,Ann,STORE_A\n" + "x," * 600 + "\n").encode(), dry_run=False)
    assert job.state == "failed" and "longer than 1,000 characters" in job.message
    assert not Contact.objects.exists()
