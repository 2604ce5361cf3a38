"""Spreadsheet-safe exports: the one place every CSV and XLSX file the portal writes goes through.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by spreadsheet programs, so a contact named ``=HYPERLINK(…)`` would become a live link
in the file a marketer opens (CSV injection). Following OWASP's guidance, such text cells are
prefixed with a single quote; XLSX cells are moreover written as strings, never as formulas.

Used by the admin's exports (``EXPORT_FORMATS``, the django-import-export formats), the
direct-mail files, the delivery reports and the import error reports. django-import-export's
own ``IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT`` only strips a leading ``=`` (not ``+``, ``-``,
``@``, tab or carriage return), so it is not relied on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from import_export.formats import base_formats

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value, with a single quote before text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]


class SafeCSVWriter:
    """``csv.writer`` whose every cell goes through ``safe_cell``."""

    def __init__(self, out: Any, **kwargs: Any) -> None:
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(out: Any, **kwargs: Any) -> SafeCSVWriter:
    return SafeCSVWriter(out, **kwargs)


def csv_bytes(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> bytes:
    """A UTF-8 CSV file: the header line, then the rows."""
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def _xlsx_value(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if hasattr(value, "isoformat"):  # dates and times: as text, time zones kept
        value = value.isoformat()
    if isinstance(value, str):
        # Control characters XLSX cannot hold would make the whole export fail.
        return safe_cell(ILLEGAL_CHARACTERS_RE.sub("\N{REPLACEMENT CHARACTER}", value))
    return value


xlsx_value = _xlsx_value  # a value as an XLSX cell holds it (safe text, dates as ISO text)


def write_xlsx(
    target: Any, header: Iterable[Any], rows: Iterable[Iterable[Any]], *, title: str
) -> None:
    """A one-sheet workbook written row by row (openpyxl's write-only mode) into ``target`` (a
    path or a binary file); every text cell is a string cell, never a formula."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet((title or "Sheet")[:31])

    def cells(row: Iterable[Any]) -> list[Any]:
        written = []
        for value in row:
            cell = WriteOnlyCell(sheet, value=_xlsx_value(value))
            if isinstance(cell.value, str):
                cell.data_type = "s"
            written.append(cell)
        return written

    sheet.append(cells(header))
    for row in rows:
        sheet.append(cells(row))
    book.save(target)


def xlsx_bytes(header: Iterable[Any], rows: Iterable[Iterable[Any]], *, title: str) -> bytes:
    """``write_xlsx`` into memory, for small files."""
    out = io.BytesIO()
    write_xlsx(out, header, rows, title=title)
    return out.getvalue()


def write_csv(target: Any, header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> None:
    """A UTF-8 CSV file written line by line into the binary file ``target``."""
    text = io.TextIOWrapper(target, encoding="utf-8", newline="")
    writer = csv_writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    text.flush()
    text.detach()  # leave ``target`` open for the caller


class CSV(base_formats.CSV):
    """django-import-export's CSV format, with every cell made safe."""

    def export_data(self, dataset: Any, **kwargs: Any) -> str:
        return csv_bytes(dataset.headers or [], dataset).decode("utf-8")


class XLSX(base_formats.XLSX):
    """django-import-export's XLSX format, written as strings through ``xlsx_bytes``."""

    def export_data(self, dataset: Any, **kwargs: Any) -> bytes:
        return xlsx_bytes(dataset.headers or [], dataset, title=dataset.title or "Export")


# The only formats the admin offers for export (every ExportMixin admin uses them).
EXPORT_FORMATS = [CSV, XLSX]
