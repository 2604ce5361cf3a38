import csv
import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from campaigns import imports
from campaigns.models import Booking, Contact, ImportJob, Store

HEADER = "external_id,first_name,last_name,email,entity,email_consent,birth_date\n"


def job_for(content, *, kind="contacts", actor=None, entity=None, **kwargs):
    job = imports.create_job(
        kind=kind,
        filename="upload.csv",
        content=content.encode(),
        actor=actor,
        entity=entity,
        enqueue=False,
        **kwargs,
    )
    return imports.run_import(job_id=job.pk)


def report(job):
    with job.error_report.open("rb") as handle:
        return list(csv.reader(io.StringIO(handle.read().decode())))


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(org):
    Contact.objects.create(external_id="OLD", first_name="Old", entity=org.store_a)
    job = job_for(
        HEADER + "NEW,Ann,A,ann@example.com,STORE_A,1,1990-01-02\nOLD,Renamed,A,,STORE_A,0,\n"
    )
    assert (job.state, job.new_rows, job.updated_rows, job.error_rows) == ("done", 1, 1, 0)
    assert "would be imported" in job.message
    assert not Contact.objects.filter(external_id="NEW").exists()
    assert Contact.objects.get(external_id="OLD").first_name == "Old"


def test_a_clean_file_is_imported_and_upserted_by_external_id(org):
    Contact.objects.create(external_id="OLD", first_name="Old", entity=org.store_a)
    job = job_for(
        HEADER + "NEW,Ann,A,ann@example.com,STORE_A,1,1990-01-02\nOLD,Renamed,A,,STORE_A,0,\n",
        dry_run=False,
    )
    assert job.state == "done" and job.error_rows == 0
    ann = Contact.objects.get(external_id="NEW")
    assert (ann.email, ann.email_consent, str(ann.birth_date)) == (
        "ann@example.com",
        True,
        "1990-01-02",
    )
    assert Contact.objects.get(external_id="OLD").first_name == "Renamed"
    assert Contact.objects.count() == 2


BAD_FILE = (
    HEADER
    + "OK1,Ann,A,ann@example.com,STORE_A,1,\n"
    + "BAD1,Bob,B,not-an-email,STORE_A,1,\n"
    + "BAD2,Cid,C,cid@example.com,NO_SUCH_ENTITY,1,\n"
    + "BAD3,Dan,D,dan@example.com,STORE_A,1,31/12/1990\n"
)


def test_a_file_with_errors_writes_nothing_and_reports_each_row(org):
    job = job_for(BAD_FILE, dry_run=False)
    assert job.state == "done"
    assert job.error_rows == 3
    assert "Nothing was imported" in job.message
    assert not Contact.objects.exists()
    lines = report(job)
    assert lines[0] == ["line", "field", "error"]
    assert {row[0] for row in lines[1:]} == {"3", "4", "5"}
    text = " ".join(" ".join(row) for row in lines)
    assert "valid email" in text and "date" in text.lower()


def test_the_valid_rows_may_be_imported_on_request(org):
    job = job_for(BAD_FILE, dry_run=False, import_valid_rows=True)
    assert job.error_rows == 3
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["OK1"]


def test_a_local_operator_imports_for_its_own_entity_only(org):
    Contact.objects.create(external_id="THEIRS", first_name="B", entity=org.store_b)
    content = (
        HEADER + "MINE,Ann,A,,,1,\n"  # no entity column value: the operator's entity
        "ELSE,Bob,B,,STORE_B,1,\n"  # another entity: refused
        "THEIRS,Hijack,B,,STORE_A,1,\n"
    )  # another entity's contact: refused
    job = job_for(
        content, actor=org.operator_a, entity=org.store_a, dry_run=False, import_valid_rows=True
    )
    assert job.error_rows == 2
    assert Contact.objects.get(external_id="MINE").entity == org.store_a
    assert not Contact.objects.filter(external_id="ELSE").exists()
    theirs = Contact.objects.get(external_id="THEIRS")
    assert (theirs.first_name, theirs.entity) == ("B", org.store_b)
    assert report(job)[1:] == [
        ["3", "entity", "“STORE_B” is not found among your entities."],
        ["4", "external_id", "“THEIRS” is not found among your contacts."],
    ]


def test_a_local_operator_cannot_import_for_another_entity(org):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        imports.create_job(
            kind="contacts",
            filename="x.csv",
            content=HEADER.encode(),
            actor=org.operator_a,
            entity=org.store_b,
        )
    with pytest.raises(PermissionDenied):
        imports.create_job(
            kind="contacts",
            filename="x.csv",
            content=HEADER.encode(),
            actor=org.operator_a,
            entity=None,
        )


def test_a_file_of_another_kind_is_refused_before_it_is_stored(org):
    with pytest.raises(imports.ImportFileError, match=r"\.csv or \.xlsx"):
        imports.create_job(
            kind="contacts", filename="x.pdf", content=b"%PDF", actor=None, enqueue=False
        )
    assert not ImportJob.objects.exists()


def test_an_unreadable_file_fails_the_job_with_a_message(org):
    job = imports.create_job(
        kind="contacts", filename="x.xlsx", content=b"%PDF", actor=None, enqueue=False
    )
    job = imports.run_import(job_id=job.pk)
    assert job.state == "failed" and "not a readable XLSX" in job.message


def test_xlsx_files_are_read(org):
    import tablib

    dataset = tablib.Dataset(headers=["external_id", "first_name", "entity"])
    dataset.append(["X1", "Excel", "STORE_A"])
    job = imports.create_job(
        kind="contacts",
        filename="people.xlsx",
        content=dataset.export("xlsx"),
        actor=None,
        dry_run=False,
        enqueue=False,
    )
    job = imports.run_import(job_id=job.pk)
    assert job.state == "done" and Contact.objects.get(external_id="X1").first_name == "Excel"


def test_secondary_data_links_to_contacts_and_stores(org):
    job_for("code,name,city,entity\nST1,Shop,Lille,STORE_A\n", kind="stores", dry_run=False)
    job_for(HEADER + "C1,Ann,A,,STORE_A,1,\n", dry_run=False)
    job = job_for(
        "reference,contact,store,product,booking_date,amount,status\n"
        "B1,C1,ST1,Ski week,2026-01-02,900.50,confirmed\n"
        "B2,NOBODY,ST1,Ski week,2026-01-02,10,confirmed\n",
        kind="bookings",
        dry_run=False,
        import_valid_rows=True,
    )
    booking = Booking.objects.get(reference="B1")
    assert (booking.contact.external_id, booking.store, str(booking.amount)) == (
        "C1",
        Store.objects.get(code="ST1"),
        "900.50",
    )
    assert job.error_rows == 1


def test_the_job_runs_once_even_if_delivered_twice(org):
    job = imports.create_job(
        kind="contacts",
        filename="x.csv",
        content=(HEADER + "A1,Ann,A,,STORE_A,1,\n").encode(),
        actor=None,
        dry_run=False,
        enqueue=False,
    )
    imports.run_import(job_id=job.pk)
    again = imports.run_import(job_id=job.pk)
    assert again.state == "done" and Contact.objects.count() == 1


def test_importing_from_the_admin_queues_a_worker_job(
    org, client, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(org.marketer)
    upload = SimpleUploadedFile("people.csv", (HEADER + "A1,Ann,A,,STORE_A,1,\n").encode())
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:campaigns_importjob_add"),
            {
                "kind": "contacts",
                "file": upload,
                "entity": "",
                "dry_run": "",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = ImportJob.objects.get()
    assert job.state == "done" and job.processed_rows == job.total_rows == 1
    assert Contact.objects.filter(external_id="A1").exists()
    page = client.get(reverse("admin:campaigns_importjob_change", args=[job.pk]))
    assert "1/1 (100%)" in page.content.decode()


def test_the_admin_refuses_an_unreadable_upload(org, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(org.marketer)
    response = client.post(
        reverse("admin:campaigns_importjob_add"),
        {
            "kind": "contacts",
            "file": SimpleUploadedFile("x.exe", b"MZ"),
            "dry_run": "on",
        },
    )
    assert (
        response.status_code == 200 and "Upload a .csv or .xlsx file" in response.content.decode()
    )
    assert not ImportJob.objects.exists()


def test_the_error_report_is_downloaded_by_its_entity_only(org, client):
    job = job_for(BAD_FILE.replace("STORE_A", "STORE_B"), actor=org.operator_b, entity=org.store_b)
    url = reverse("campaigns:import_report", args=[job.pk])
    client.force_login(org.operator_b)
    assert client.get(url).status_code == 200
    client.force_login(org.operator_a)
    assert client.get(url).status_code == 404


def test_the_command_imports_big_files(org, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "".join(f"K{i},N{i},L,,STORE_A,1,\n" for i in range(250)))
    call_command("import_audience", "contacts", str(path))
    assert not Contact.objects.exists()  # dry run by default
    call_command("import_audience", "contacts", str(path), "--commit")
    assert Contact.objects.count() == 250
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_FILE)
    with pytest.raises(CommandError, match="errors"):
        call_command("import_audience", "contacts", str(bad), "--commit")


def test_duplicate_keys_within_the_file_are_refused(org):
    content = HEADER + "D1,Ann,A,,STORE_A,1,\nD2,Bob,B,,STORE_A,1,\nD1,Ann2,A,,STORE_A,1,\n"
    job = job_for(content, dry_run=False)
    assert job.error_rows == 2 and not Contact.objects.exists()
    assert "appears on several lines (2, 4)" in " ".join(" ".join(r) for r in report(job))
    job = job_for(content, dry_run=False, import_valid_rows=True)
    assert list(Contact.objects.values_list("external_id", flat=True)) == ["D2"]


def test_a_file_without_its_key_column_fails_clearly(org):
    job = job_for("first_name,entity\nAnn,STORE_A\n", dry_run=False)
    assert job.state == "failed" and "no “external_id” column" in job.message
    assert not Contact.objects.exists()


def test_a_file_in_another_encoding_fails_clearly(org):
    job = imports.create_job(
        kind="contacts",
        filename="x.csv",
        content=(HEADER + "É1,Éva,A,,STORE_A,1,\n").encode("latin-1"),
        actor=None,
        enqueue=False,
    )
    job = imports.run_import(job_id=job.pk)
    assert job.state == "failed" and "not UTF-8" in job.message
