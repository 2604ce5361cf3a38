"""Imports written chunk by chunk (PostgreSQL's ``StagedImport.stream``) give exactly what the
whole-file check and write give: a clean file across many chunks, and for a file with a
problem in any chunk (after earlier chunks were written in the same transaction) nothing
written, exactly the bad rows reported, or the valid rows only once when asked. On SQLite the
same files take the whole-file path and must give the same answers.

Chunks are made tiny (3 rows) so that every file here spans several of them."""

from __future__ import annotations

import pytest

from campaigns import imports, staging
from campaigns.models import Contact, ImportJob
from tests.campaigns.test_import_staging import report

HEADER = "external_id,first_name,last_name,email,entity,email_consent,birth_date\n"


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(staging, "STREAM_CHUNK", 3)


def run(content: str, **kwargs) -> ImportJob:
    job = imports.create_job(
        kind="contacts", filename="people.csv", content=content.encode(), actor=None,
        enqueue=False, **{"dry_run": False, **kwargs},
    )  # fmt: skip
    return imports.run_import(job_id=job.pk)


def people(count: int, start: int = 0, name: str = "New") -> str:
    return "".join(
        f"K{n},{name}{n},L,k{n}@example.com,STORE_A,1,1990-01-02\n"
        for n in range(start, start + count)
    )


def test_a_clean_file_over_many_chunks_is_written_whole_in_file_order(org):
    Contact.objects.create(external_id="K4", first_name="Old", entity=org.store_a)
    Contact.objects.create(  # the same values as the file's: unchanged
        external_id="K7", first_name="New7", last_name="L", email="k7@example.com",
        entity=org.store_a, email_consent=True, birth_date="1990-01-02",
    )  # fmt: skip
    job = run(HEADER + people(11))
    assert (job.state, job.total_rows, job.processed_rows) == ("done", 11, 11)
    assert (job.new_rows, job.updated_rows, job.skipped_rows, job.error_rows) == (9, 1, 1, 0)
    assert job.written_rows == 10
    assert Contact.objects.count() == 11
    assert Contact.objects.get(external_id="K4").first_name == "New4"
    new = Contact.objects.exclude(external_id__in=["K4", "K7"]).order_by("pk")
    assert [c.external_id for c in new] == [f"K{n}" for n in range(11) if n not in (4, 7)]
    assert staging.staging_tables() == []


def test_a_key_repeated_in_a_later_chunk_writes_nothing_and_reports_both_lines(org):
    job = run(HEADER + people(8) + "K1,Again,L,,STORE_A,1,\n")
    assert job.state == "done" and job.written_rows == 0
    assert report(job) == [
        ["3", "external_id", "“K1” appears on several lines (3, 10)."],
        ["10", "external_id", "“K1” appears on several lines (3, 10)."],
    ]
    assert not Contact.objects.exists()
    assert staging.staging_tables() == []


def test_a_key_repeated_within_one_chunk_is_found_too(org):
    job = run(HEADER + "A1,Ann,L,,STORE_A,1,\nA1,Ann,L,,STORE_A,1,\n" + people(4))
    assert (job.error_rows, job.written_rows) == (2, 0)
    assert not Contact.objects.exists()


def test_a_bad_value_in_a_later_chunk_writes_nothing_and_reports_only_that_row(org):
    job = run(HEADER + people(7) + "K9,Bad,L,not-an-email,STORE_A,1,\n" + people(3, 10))
    assert job.written_rows == 0 and job.new_rows == 10
    assert report(job) == [["9", "email", "Enter a valid email address."]]
    assert not Contact.objects.exists()
    assert staging.staging_tables() == []


def test_an_unknown_or_foreign_reference_in_a_later_chunk_writes_nothing(org):
    Contact.objects.create(external_id="THEIRS", first_name="B", entity=org.store_b)
    job = imports.create_job(
        kind="contacts", filename="p.csv", actor=None, entity=org.store_a, enqueue=False,
        dry_run=False,
        content=(HEADER + people(5) + "K6,X,L,,NOWHERE,1,\nTHEIRS,Mine,L,,STORE_A,1,\n").encode(),
    )  # fmt: skip
    job = imports.run_import(job_id=job.pk)
    assert job.written_rows == 0
    assert report(job) == [
        ["7", "entity", "“NOWHERE” is not found among your entities."],
        ["8", "external_id", "“THEIRS” is not found among your contacts."],
    ]
    assert Contact.objects.count() == 1
    assert Contact.objects.get().first_name == "B"


def test_valid_rows_only_writes_each_valid_row_once_after_a_late_problem(org):
    content = HEADER + people(7) + "K9,Bad,L,not-an-email,STORE_A,1,\n" + people(2, 10)
    job = run(content, import_valid_rows=True)
    assert (job.new_rows, job.error_rows, job.written_rows) == (9, 1, 9)
    assert sorted(Contact.objects.values_list("external_id", flat=True)) == sorted(
        [f"K{n}" for n in range(7)] + ["K10", "K11"]
    )


def test_a_file_that_cannot_be_read_past_its_first_chunks_fails_and_writes_nothing(org):
    content = (HEADER + people(7)).encode() + b"K9,\xff\xfe,L,,STORE_A,1,\n"
    job = imports.create_job(
        kind="contacts", filename="p.csv", content=content, actor=None, enqueue=False,
        dry_run=False,
    )  # fmt: skip
    job = imports.run_import(job_id=job.pk)
    assert job.state == "failed" and "not UTF-8" in job.message
    assert not Contact.objects.exists()
    assert staging.staging_tables() == []


def test_text_with_tabs_newlines_and_backslashes_is_stored_as_written(org):
    name = 'Tab\there\\back "quoted"'
    job = run(HEADER + f'T1,"{name.replace(chr(34), chr(34) * 2)}","two\nlines",,STORE_A,1,\n')
    assert job.state == "done" and job.error_rows == 0, report(job)
    contact = Contact.objects.get(external_id="T1")
    assert (contact.first_name, contact.last_name) == (name, "two\nlines")


def test_copy_text_format_of_each_kind_of_value():
    from datetime import date
    from decimal import Decimal

    assert staging.copy_line((None, True, False, 7, Decimal("1.50"), date(2026, 1, 2))) == (
        "\\N\tt\tf\t7\t1.50\t2026-01-02\n"
    )
    assert staging.copy_value("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"


def test_the_planner_settings_of_the_stream_do_not_outlive_it(org):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the stream is PostgreSQL's")
    names = ["enable_hashjoin", "enable_mergejoin", "jit", "work_mem", "default_statistics_target"]

    def current() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)), names)
            return list(cursor.fetchone())

    before = current()
    assert run(HEADER + people(7)).written_rows == 7  # in this test's transaction
    assert current() == before


SUBSCRIPTIONS = "contact,product,start_date,end_date,status\n"


def subscriptions_outcome(org, between: int, existing: bool) -> tuple:
    from campaigns.models import Subscription

    Subscription.objects.all().delete()
    Contact.objects.all().delete()
    contact = Contact.objects.create(external_id="C1", entity=org.store_a)
    if existing:
        Subscription.objects.create(contact=contact, product="P", start_date="2024-01-05")
    filler = "".join(f"C1,F{i},2024-01-01,,active\n" for i in range(between))
    job = imports.create_job(
        kind="subscriptions", filename="s.csv", actor=None, enqueue=False, dry_run=False,
        content=(SUBSCRIPTIONS + "C1,P,2024-01-05,,cancelled\n" + filler
                 + "C1,P,2024-1-5,,cancelled\n").encode(),
    )  # fmt: skip
    job = imports.run_import(job_id=job.pk)
    rows = Subscription.objects.filter(product="P").count()
    new = job.new_rows - between if job.new_rows else 0  # the filler lines are all new
    return job.state, new, job.updated_rows, job.skipped_rows, rows


@pytest.mark.parametrize("existing", [False, True])
def test_one_key_written_two_ways_gives_the_same_answer_wherever_the_chunks_end(org, existing):
    """Two spellings of one subscription's start date are one key: the answer for lines in
    one chunk and for lines in two chunks is the same."""
    assert subscriptions_outcome(org, 0, existing) == subscriptions_outcome(org, 5, existing)


@pytest.mark.django_db(transaction=True)
def test_progress_after_a_fallback_is_the_whole_file_path_s(org, settings, monkeypatch):
    """The lease thread publishes the stream's progress; once the stream is abandoned it must
    not keep writing that count over the whole-file path's."""
    import time

    settings.IMPORT_HEARTBEAT_SECONDS = 1
    seen, check = [], staging.StagedImport.check

    def slow_check(self):
        time.sleep(2.5)  # two heartbeats
        seen.append(ImportJob.objects.values_list("processed_rows", flat=True).get())
        return check(self)

    monkeypatch.setattr(staging.StagedImport, "check", slow_check)
    job = run(HEADER + people(8) + "K9,Bad,L,not-an-email,STORE_A,1,\n")
    assert job.error_rows == 1
    assert seen == [9]  # every line loaded by the whole-file path
