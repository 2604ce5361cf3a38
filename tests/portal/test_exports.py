"""Exports (portal.exports): jobs written by a worker in chunks, with progress, owner-only
downloads, the same rows as the filtered list, and expiry."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from campaigns.models import Contact
from portal import exports
from portal.choices import ExportState
from portal.exceptions import DomainError
from portal.models import AuditLog, ExportJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def audience(org):
    """Seven contacts of store A (three opted in to email, one named like a formula), three of
    store B."""
    for n in range(6):
        Contact.objects.create(
            external_id=f"A{n}", first_name=f"Ann{n}", last_name="Smith" if n < 2 else "Jones",
            email=f"a{n}@example.com", entity=org.store_a, email_consent=n % 2 == 0,
        )  # fmt: skip
    Contact.objects.create(
        external_id="EVIL", first_name="=cmd|' /C calc'!A0", last_name="-2+3",
        entity=org.store_a,
    )  # fmt: skip
    for n in range(3):
        Contact.objects.create(
            external_id=f"B{n}", last_name="Smith", entity=org.store_b, email_consent=True
        )


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Make an export and let its task run (eagerly) after the commit, as a worker would."""

    def make(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            job = exports.create_export(**kwargs)
        job.refresh_from_db()
        return job

    return make


def csv_rows(job: ExportJob) -> list[list[str]]:
    with job.file.open("rb") as handle:
        return list(csv.reader(io.StringIO(handle.read().decode("utf-8"))))


def ids(rows: list[list[str]]) -> set[str]:
    return {row[0] for row in rows[1:]}


# Life cycle ------------------------------------------------------------------------------------


def test_an_export_goes_from_queued_to_done_with_its_file_and_audit(audience, org, run_on_commit):
    job = run_on_commit(actor=org.marketer, kind="contacts")
    assert job.state == ExportState.DONE
    assert (job.total_rows, job.done_rows, job.progress) == (10, 10, 100)
    assert job.expires_at > timezone.now() and job.finished_at is not None
    rows = csv_rows(job)
    assert rows[0][:3] == ["external_id", "first_name", "last_name"]
    assert ids(rows) == set(Contact.objects.values_list("external_id", flat=True))
    entries = AuditLog.objects.for_object(job).order_by("id")
    history = list(entries.values_list("action", "to_state"))
    assert history == [("queue_export", "queued"), ("start", "running"), ("finish", "done")]


def test_the_task_is_idempotent_a_finished_job_is_left_alone(audience, org, run_on_commit):
    job = run_on_commit(actor=org.marketer, kind="contacts")
    name, audits = job.file.name, AuditLog.objects.for_object(job).count()
    again = exports.run_export(job_id=job.pk)
    assert again.state == ExportState.DONE and again.file.name == name
    assert AuditLog.objects.for_object(job).count() == audits


def test_the_task_of_a_deleted_job_does_nothing(org):
    from portal.tasks import run_export_job

    assert run_export_job.delay(12345).get() == "missing"


def test_a_job_found_running_is_written_again_from_the_start(audience, org, monkeypatch):
    monkeypatch.setattr(exports, "_enqueue", lambda job_id: None)  # no worker: queued only
    job = exports.create_export(actor=org.marketer, kind="contacts")
    exports._claim(job.pk)  # a worker took it, then died
    job.refresh_from_db()
    assert job.state == ExportState.RUNNING
    done = exports.run_export(job_id=job.pk)  # the task delivered again
    assert done.state == ExportState.DONE and done.done_rows == 10
    assert len(csv_rows(done)) == 11
    assert "restart" in AuditLog.objects.for_object(job).values_list("action", flat=True)


def test_a_run_overtaken_by_another_keeps_nothing(audience, org, monkeypatch):
    monkeypatch.setattr(exports, "_enqueue", lambda job_id: None)
    job = exports.create_export(actor=org.marketer, kind="contacts")
    real_chunks = exports.iter_chunks

    def overtaken(*args, **kwargs):
        for number, chunk in enumerate(real_chunks(*args, **kwargs)):
            yield chunk
            if number == 0:  # another run took the job over meanwhile
                ExportJob.objects.filter(pk=job.pk).update(started_at=timezone.now())

    monkeypatch.setattr(exports, "iter_chunks", overtaken)
    monkeypatch.setattr("django.conf.settings.EXPORT_CHUNK_ROWS", 3)
    result = exports.run_export(job_id=job.pk)
    assert result.state == ExportState.RUNNING and not result.file  # left to the other run


def test_progress_is_committed_after_each_chunk(audience, org, monkeypatch, settings):
    settings.EXPORT_CHUNK_ROWS = 3
    monkeypatch.setattr(exports, "_enqueue", lambda job_id: None)
    job = exports.create_export(actor=org.marketer, kind="contacts")
    seen: list[tuple[str, int, int]] = []
    real_chunks = exports.iter_chunks

    def watched(*args, **kwargs):
        for chunk in real_chunks(*args, **kwargs):
            row = ExportJob.objects.get(pk=job.pk)
            seen.append((row.state, row.done_rows, row.total_rows))
            yield chunk

    monkeypatch.setattr(exports, "iter_chunks", watched)
    exports.run_export(job_id=job.pk)
    assert seen == [("running", 0, 10), ("running", 3, 10), ("running", 6, 10), ("running", 9, 10)]
    job.refresh_from_db()
    assert (job.state, job.done_rows) == (ExportState.DONE, 10)


def test_the_status_endpoint_reports_progress_then_the_download_link(
    audience, org, client, monkeypatch
):
    monkeypatch.setattr(exports, "_enqueue", lambda job_id: None)
    job = exports.create_export(actor=org.operator_a, kind="contacts")
    client.force_login(org.operator_a)
    url = reverse("portal:export_status", args=[job.pk])
    queued = client.get(url).json()
    assert (queued["state"], queued["finished"], queued["download_url"]) == ("queued", False, "")
    exports._claim(job.pk)
    running = client.get(url).json()
    assert (running["state"], running["done_rows"], running["total_rows"]) == ("running", 0, 7)
    exports.run_export(job_id=job.pk)
    done = client.get(url).json()
    assert done["finished"] and done["progress"] == 100 and done["done_rows"] == 7
    assert done["download_url"] == reverse("portal:export_download", args=[job.pk])
    page = client.get(reverse("portal:export_detail", args=[job.pk])).content.decode()
    assert "Your export is ready: 7 rows." in page and done["download_url"] in page


def test_a_job_whose_filters_no_longer_apply_fails_with_a_message(org):
    job = ExportJob.objects.create(
        owner=org.marketer, kind="contacts", filters={"admin": {"nonsense__exact": "1"}}
    )
    result = exports.run_export(job_id=job.pk)
    assert result.state == ExportState.FAILED
    assert "cannot be applied" in result.message


def test_expired_files_are_deleted_and_the_job_says_so(
    audience, org, run_on_commit, django_capture_on_commit_callbacks, client
):
    job = run_on_commit(actor=org.marketer, kind="contacts")
    storage, name = job.file.storage, job.file.name
    assert storage.exists(name)
    assert exports.purge_expired_exports() == 0  # not yet
    with django_capture_on_commit_callbacks(execute=True):
        purged = exports.purge_expired_exports(now=job.expires_at + timedelta(seconds=1))
    assert purged == 1
    job.refresh_from_db()
    assert job.state == ExportState.EXPIRED and not job.file and not storage.exists(name)
    client.force_login(org.marketer)
    assert client.get(reverse("portal:export_download", args=[job.pk])).status_code == 404


def test_jobs_left_queued_for_a_day_are_failed(org):
    job = ExportJob.objects.create(
        owner=org.marketer, kind="contacts", created_at=timezone.now() - timedelta(days=2)
    )
    exports.purge_expired_exports()
    job.refresh_from_db()
    assert job.state == ExportState.FAILED and "within a day" in job.message


# Content equals the filtered list ------------------------------------------------------------


def test_a_store_operator_exports_only_its_contacts(audience, org, run_on_commit):
    job = run_on_commit(actor=org.operator_a, kind="contacts")
    assert ids(csv_rows(job)) == set(
        Contact.objects.filter(entity=org.store_a).values_list("external_id", flat=True)
    )


def test_the_search_filter_gives_the_rows_the_list_shows(audience, org, run_on_commit):
    from campaigns.services import contact_search

    job = run_on_commit(actor=org.operator_a, kind="contacts", filters={"q": "smith"})
    expected = Contact.objects.visible_to(org.operator_a).filter(contact_search("smith"))
    assert (
        ids(csv_rows(job))
        == set(expected.values_list("external_id", flat=True))
        == {
            "A0",
            "A1",
        }
    )


def test_admin_filters_give_the_changelist_rows_within_the_owners_scope(
    audience, org, run_on_commit
):
    params = {"admin": {"email_consent__exact": "1", "o": "2"}}
    central = run_on_commit(actor=org.marketer, kind="contacts", filters=params)
    assert central.filters == {"admin": {"email_consent__exact": "1"}}  # the sort is not kept
    assert ids(csv_rows(central)) == {"A0", "A2", "A4", "B0", "B1", "B2"}
    org.operator_a.is_staff = True
    org.operator_a.save()
    local = run_on_commit(actor=org.operator_a, kind="contacts", filters=params)
    assert ids(csv_rows(local)) == {"A0", "A2", "A4"}


def test_chosen_columns_are_written_in_order_with_formulas_quoted(audience, org, run_on_commit):
    job = run_on_commit(
        actor=org.marketer, kind="contacts", columns=["last_name", "external_id", "email_consent"]
    )
    rows = csv_rows(job)
    assert rows[0] == ["external_id", "last_name", "email_consent"]
    assert ["EVIL", "'-2+3", "0"] in rows and ["A0", "Smith", "1"] in rows


def test_an_xlsx_export_holds_the_rows_as_strings_never_formulas(audience, org, run_on_commit):
    job = run_on_commit(actor=org.marketer, kind="contacts", file_format="xlsx")
    with job.file.open("rb") as handle:
        sheet = load_workbook(io.BytesIO(handle.read())).active
    cells = [cell for row in sheet.iter_rows() for cell in row]
    assert [c.value for c in cells if c.data_type == "f"] == []
    assert "'=cmd|' /C calc'!A0" in [c.value for c in cells]
    assert sheet.max_row == 11
    assert {row[0] for row in sheet.iter_rows(min_row=2, values_only=True)} == set(
        Contact.objects.values_list("external_id", flat=True)
    )


def test_orders_export_with_personalisation_values(make_package, org, run_on_commit):
    from packages import services

    package = make_package()
    services.place_order(package=package, entity=org.store_a, actor=org.operator_a, data={},
                         comment="Please", submit=True)  # fmt: skip
    job = run_on_commit(actor=org.approver, kind="orders")
    rows = csv_rows(job)
    assert rows[0][:4] == ["id", "package", "entity code", "entity"]
    assert rows[1][2:4] == ["STORE_A", "Store A"] and "Please" in rows[1]


# Refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "salaries"}, "not a list that can be exported"),
        ({"kind": "contacts", "file_format": "pdf"}, "format must be one of"),
        ({"kind": "contacts", "filters": {"where": "1=1"}}, "Unknown filter “where”"),
        ({"kind": "contacts", "filters": {"q": "x" * 201}}, "at most 200 characters"),
        ({"kind": "contacts", "filters": {"admin": {"salary__gt": "1"}}}, "cannot be applied"),
        ({"kind": "contacts", "columns": ["password"]}, "Unknown column “password”"),
        ({"kind": "orders", "filters": {"q": "x"}}, "has no search"),
    ],
)
def test_bad_export_requests_are_refused_and_nothing_is_queued(org, kwargs, message):
    with pytest.raises(DomainError, match=message):
        exports.create_export(actor=org.marketer, **kwargs)
    assert not ExportJob.objects.exists()


def test_a_role_without_the_lists_permission_cannot_export_it(org):
    with pytest.raises(PermissionDenied):
        exports.create_export(actor=org.approver_a, kind="contacts")
    with pytest.raises(PermissionDenied):
        exports.create_export(actor=org.outsider, kind="orders")


# Rights ----------------------------------------------------------------------------------------


def test_another_users_export_answers_404_everywhere(audience, org, run_on_commit, client):
    job = run_on_commit(actor=org.operator_a, kind="contacts")
    urls = [
        reverse("portal:export_detail", args=[job.pk]),
        reverse("portal:export_status", args=[job.pk]),
        reverse("portal:export_download", args=[job.pk]),
        job.file.url,  # the private-file view
    ]
    for intruder in (org.operator_b, org.marketer):
        client.force_login(intruder)
        for url in urls:
            assert client.get(url).status_code == 404, (intruder, url)
        assert str(job) not in client.get(reverse("portal:export_list")).content.decode()
    client.force_login(org.operator_a)
    download = client.get(reverse("portal:export_download", args=[job.pk]))
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    assert b"A0" in download.getvalue() and b"B0" not in download.getvalue()


def test_the_admin_shows_only_ones_own_exports(audience, org, run_on_commit, client):
    mine = run_on_commit(actor=org.marketer, kind="contacts")
    theirs = run_on_commit(actor=org.approver, kind="orders")
    org.marketer.is_staff = True
    org.marketer.save()
    client.force_login(org.marketer)
    listing = client.get(reverse("admin:portal_exportjob_changelist")).content.decode()
    assert str(mine) in listing and str(theirs) not in listing
    page = client.get(reverse("admin:portal_exportjob_change", args=[mine.pk]))
    assert page.status_code == 200
    assert reverse("portal:export_download", args=[mine.pk]) in page.content.decode()
    other = client.get(reverse("admin:portal_exportjob_change", args=[theirs.pk]))
    assert other.status_code == 302  # the admin's "does not exist", not the page


# Pages -----------------------------------------------------------------------------------------


def test_a_small_portal_export_is_streamed_at_once(audience, org, client):
    client.force_login(org.operator_a)
    response = client.post(
        reverse("portal:export_create"), {"kind": "contacts", "format": "csv", "q": "jones"}
    )
    assert response.status_code == 200 and response.streaming
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))
    assert ids(rows) == {"A2", "A3", "A4", "A5"}
    assert not ExportJob.objects.exists()


def test_a_large_portal_export_goes_to_a_job_and_its_progress_page(
    audience, org, client, settings, django_capture_on_commit_callbacks
):
    settings.EXPORT_IMMEDIATE_MAX_ROWS = 3
    client.force_login(org.operator_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("portal:export_create"), {"kind": "contacts", "format": "xlsx"}
        )
    job = ExportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:export_detail", args=[job.pk])
    assert (job.owner, job.file_format, job.filters) == (org.operator_a, "xlsx", {})
    page = client.get(response["Location"]).content.decode()
    assert "Download the file" in page


def test_the_portal_export_form_refuses_a_bad_format_with_a_message(audience, org, client):
    client.force_login(org.operator_a)
    response = client.post(
        reverse("portal:export_create"),
        {"kind": "contacts", "format": "pdf", "next": reverse("campaigns:audience")},
        follow=True,
    )
    assert "The format must be one of csv, xlsx." in response.content.decode()
    assert not ExportJob.objects.exists()


def test_the_audience_page_offers_the_export(audience, org, client):
    client.force_login(org.operator_a)
    page = client.get(reverse("campaigns:audience"), {"q": "smith"}).content.decode()
    assert reverse("portal:export_create") in page
    assert 'name="q" value="smith"' in page


def test_a_large_admin_export_becomes_a_job_with_the_changelists_filters(
    audience, org, client, settings, django_capture_on_commit_callbacks
):
    settings.EXPORT_IMMEDIATE_MAX_ROWS = 2
    client.force_login(org.marketer)
    url = reverse("admin:campaigns_contact_export") + "?email_consent__exact=1"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url, {"format": "0", "contactexportresource_external_id": "on",
                  "contactexportresource_email": "on"},
        )  # fmt: skip
    job = ExportJob.objects.get()
    assert response["Location"] == reverse("admin:portal_exportjob_change", args=[job.pk])
    assert job.filters == {"admin": {"email_consent__exact": "1"}}
    assert job.columns == ["external_id", "email"]
    job.refresh_from_db()
    rows = csv_rows(job)
    assert rows[0] == ["external_id", "email"]
    assert ids(rows) == set(
        Contact.objects.filter(email_consent=True).values_list("external_id", flat=True)
    )
