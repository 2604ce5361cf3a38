"""docs/imports.md documents every import kind's columns, generated from the resources; each
kind's template files import cleanly and are linked from the import pages."""

import csv
import io
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse

from campaigns import import_docs, imports
from campaigns.choices import ImportKind
from campaigns.models import Booking, Contact, Store, Subscription

DOC = Path(__file__).resolve().parents[2] / "docs" / "imports.md"
KINDS = [kind for kind, _ in ImportKind.choices]  # in the order the templates refer back


def csv_rows(kind: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(import_docs.template_csv(kind).decode("utf-8"))))


def test_the_document_holds_the_reference_generated_from_the_resources():
    text = DOC.read_text()
    assert import_docs.imports_markdown() in text, "run: python manage.py import_docs"
    for kind in KINDS:
        assert f"(`{kind}`)" in text
        for column in import_docs.columns(kind):
            assert f"| `{column}` |" in text, (kind, column)


def test_every_resource_column_has_an_example_value_and_nothing_else():
    for kind in KINDS:
        for row in import_docs.EXAMPLES[kind]:
            assert set(row) == set(import_docs.columns(kind)), kind


@pytest.mark.django_db
def test_each_csv_template_imports_cleanly_for_a_store(org):
    for kind in KINDS:
        rows = csv_rows(kind)
        assert rows and list(rows[0]) == import_docs.columns(kind)
        result = imports.import_rows(kind=kind, rows=rows, actor=org.operator_a, entity=org.store_a)
        assert result["problems"] == [], kind
        assert (result["errors"], result["new"], result["written"]) == (0, len(rows), True), kind
    ada = Contact.objects.get(external_id="C-10001")
    assert (ada.entity, ada.email_consent, ada.sms_consent, ada.birth_date) == (
        org.store_a,
        True,
        False,
        date(1984, 5, 17),
    )
    assert Contact.objects.get(external_id="C-10002").language == "de"
    assert Store.objects.get(code="SHOP-LYON-1").entity == org.store_a
    second = Booking.objects.get(reference="BK-2026-0002")
    assert (second.amount, second.store, second.status) == (Decimal("480.50"), None, "cancelled")
    assert Booking.objects.get(reference="BK-2026-0001").store.code == "SHOP-LYON-1"
    assert Subscription.objects.filter(contact__entity=org.store_a).count() == 2


@pytest.mark.django_db
def test_each_xlsx_template_reads_as_the_csv_one(org):
    for kind in KINDS:
        imports.import_rows(
            kind=kind, rows=csv_rows(kind), actor=org.operator_a, entity=org.store_a
        )
    for kind in KINDS:
        job = imports.create_job(
            kind=kind,
            filename=f"{kind}-template.xlsx",
            content=import_docs.template_xlsx(kind),
            actor=org.operator_a,
            entity=org.store_a,
            dry_run=True,
            enqueue=False,
        )
        job = imports.run_import(job_id=job.pk)
        job.refresh_from_db()
        rows = len(import_docs.EXAMPLES[kind])
        assert (job.error_rows, job.new_rows, job.skipped_rows) == (0, 0, rows), (kind, job.message)


@pytest.mark.django_db
def test_templates_are_served_to_signed_in_users_only(org, client):
    url = reverse("campaigns:import_template", args=["bookings", "csv"])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(org.operator_b)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="bookings-template.csv"' in response["Content-Disposition"]
    assert response.content == import_docs.template_csv("bookings")
    xlsx = client.get(reverse("campaigns:import_template", args=["stores", "xlsx"]))
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    for kind, file_format in [("users", "csv"), ("stores", "json"), ("stores", "xls")]:
        url = reverse("campaigns:import_template", args=[kind, file_format])
        assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_the_portal_and_admin_import_pages_link_every_template(org, client):
    client.force_login(org.operator_a)
    portal_page = client.get(reverse("campaigns:import_create")).content.decode()
    client.force_login(org.marketer)
    admin_page = client.get(reverse("admin:campaigns_importjob_add"))
    assert admin_page.status_code == 200
    for kind in KINDS:
        for file_format in ("csv", "xlsx"):
            url = reverse("campaigns:import_template", args=[kind, file_format])
            assert f'href="{url}"' in portal_page
            assert f'href="{url}"' in admin_page.content.decode()
