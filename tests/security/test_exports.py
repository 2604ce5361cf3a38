"""Finding 4: no export lets a cell be read as a spreadsheet formula (CSV injection).

Every CSV/XLSX the portal writes goes through ``portal.spreadsheets``: text starting with
=, +, -, @, tab or carriage return gets a leading single quote, and XLSX cells are strings.
"""

import csv
import io

import pytest
from django.contrib import admin
from django.urls import reverse
from import_export.admin import ExportMixin
from openpyxl import load_workbook

from campaigns import imports
from campaigns.delivery import reports, sending
from portal import spreadsheets
from tests.security.conftest import EVIL


def csv_cells(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"))))


def xlsx_cells(content: bytes) -> list:
    """Every cell of the first sheet, as openpyxl reads it (formulas are NOT evaluated)."""
    sheet = load_workbook(io.BytesIO(content)).active
    return [cell for row in sheet.iter_rows() for cell in row]


def assert_no_formula(cells: list) -> None:
    assert [c.value for c in cells if c.data_type == "f"] == []
    texts = [c.value for c in cells if isinstance(c.value, str)]
    assert not [t for t in texts if t.startswith(spreadsheets.FORMULA_PREFIXES)]


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_safe_cell_quotes_every_formula_prefix(text):
    assert spreadsheets.safe_cell(text) == "'" + text


def test_safe_cell_leaves_plain_text_and_numbers_alone():
    assert spreadsheets.safe_cell("Pat O'Neil") == "Pat O'Neil"
    assert spreadsheets.safe_cell(-5) == -5
    assert spreadsheets.safe_cell(None) is None


def test_every_admin_export_offers_only_the_safe_formats():
    exporting = [a for a in admin.site._registry.values() if isinstance(a, ExportMixin)]
    assert exporting  # contacts and orders at least
    for model_admin in exporting:
        assert model_admin.get_export_formats() == spreadsheets.EXPORT_FORMATS, model_admin


def _export_contacts(client, fmt: str):
    return client.post(
        reverse("admin:campaigns_contact_export"),
        {"format": fmt, **{f"contactexportresource_{name}": "on"
                           for name in ("external_id", "first_name", "last_name", "phone")}},
    )  # fmt: skip


def test_the_admin_contact_csv_export_quotes_formulas(evil_contact, org, client):
    client.force_login(org.marketer)
    response = _export_contacts(client, "0")
    assert response.status_code == 200
    rows = csv_cells(response.getvalue())
    assert rows[1] == ["EVIL", "'" + EVIL, "'+SUM(1,2)", "'-2+3"]


def test_the_admin_contact_xlsx_export_writes_strings_never_formulas(evil_contact, org, client):
    client.force_login(org.marketer)
    response = _export_contacts(client, "1")
    assert response.status_code == 200
    cells = xlsx_cells(response.getvalue())
    assert_no_formula(cells)
    assert "'" + EVIL in [c.value for c in cells]
    assert {c.data_type for c in cells if c.value == "'" + EVIL} == {"s"}


def test_the_admin_order_exports_quote_a_store_comment(make_package, org, client):
    from packages import services

    package = make_package()
    services.place_order(package=package, entity=org.store_a, actor=org.operator_a, data={},
                         comment="@SUM(1+1)*cmd|' /C calc'!A0", submit=True)  # fmt: skip
    client.force_login(org.marketer)
    data = {"resource": "0", "orderresource_id": "on", "orderresource_comment": "on"}
    as_csv = client.post(reverse("admin:packages_order_export"), {**data, "format": "0"})
    assert as_csv.status_code == 200
    assert csv_cells(as_csv.getvalue())[1][1] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    as_xlsx = client.post(reverse("admin:packages_order_export"), {**data, "format": "1"})
    cells = xlsx_cells(as_xlsx.getvalue())
    assert_no_formula(cells)
    assert "'@SUM(1+1)*cmd|' /C calc'!A0" in [c.value for c in cells]


@pytest.mark.parametrize("export_format", ["csv", "xlsx"])
def test_direct_mail_files_quote_formulas(
    export_format, campaign, evil_contact, prepared, org, django_capture_on_commit_callbacks
):
    paper = prepared(campaign, channel="direct_mail", export_format=export_format,
                     columns=["first_name", "last_name", "phone"])  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        sending.confirm(delivery=paper, actor=org.marketer)
    paper.refresh_from_db()
    content = paper.export_file.read()
    if export_format == "csv":
        assert csv_cells(content)[1][1:] == ["'" + EVIL, "'+SUM(1,2)", "'-2+3"]
    else:
        cells = xlsx_cells(content)
        assert_no_formula(cells)
        assert {"'" + EVIL, "'+SUM(1,2)", "'-2+3"} <= {c.value for c in cells}


def test_the_delivery_report_quotes_an_entity_name(campaign, evil_contact, prepared, org, client):
    org.store_a.name = "=cmd|' /C calc'!A0"
    org.store_a.save()
    delivery = prepared(campaign)
    client.force_login(org.marketer)
    response = client.get(reverse("campaigns:delivery", args=[delivery.pk]), {"export": "csv"})
    assert csv_cells(response.content)[1][:2] == ["STORE_A", "'=cmd|' /C calc'!A0"]
    assert csv_cells(reports.entity_csv(delivery, delivery.messages.all()))[1][1].startswith("'")


def test_the_import_error_report_quotes_formulas():
    report = imports._report([(2, "first_name", '=HYPERLINK("http://evil.example")')])
    assert csv_cells(report.read())[1] == ["2", "first_name", '\'=HYPERLINK("http://evil.example")']
