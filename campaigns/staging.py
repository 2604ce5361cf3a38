"""The set-based check and write of an import: one staging table per import.

django-import-export stays the format and user-facing layer (resources, widgets, messages);
this module is its write path at database speed. Each row is converted once in Python with the
resource's widgets and the model fields' own validation (the very messages a full_clean()
gives), then loaded into a temporary staging table (PostgreSQL: ``COPY``; SQLite: chunked
``executemany``). Everything that needs the database is then one SQL statement over the
whole file: references to entities, stores and contacts looked up among the importing
entity's rows only, the existing row under each key and its owner (the security rule: another
entity's key is answered exactly as an unknown one), unchanged rows, keys repeated within the
file. The rows are applied with one ``INSERT … ON CONFLICT DO UPDATE`` per kind (an ``UPDATE …
FROM`` plus an ``INSERT … SELECT`` for subscriptions, whose key has no unique constraint).

A temporary table lives in the database session: it is dropped when the import ends, and by
the server itself when the worker's connection dies (a killed worker leaves nothing behind).
The caller runs the check and the write in one transaction holding the kind's lock (see
``lock``), so a kill writes nothing and two imports of the same kind are serialised. On
PostgreSQL a clean file is written chunk by chunk in that transaction while a thread reads and
converts the next chunk (``stream``), so that Python's work and the database's overlap; the
first problem found sends the file back to the whole-file path, which reports every problem.

Table and column names come from the model's metadata and a counter, never from the file.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, models
from django.utils import timezone

LOAD_CHUNK = 5000  # rows per executemany / COPY progress step
STREAM_CHUNK = 50_000  # rows per staged, checked and written chunk of ``stream``
FIRST_CHUNK = 5_000  # ``stream``'s first chunk: the database starts sooner
# While ``stream`` runs: a chunk is small beside the tables it reads, so each row's key and
# references are looked up through their indexes (a hash join would read the whole target
# table once per chunk); a chunk's row count comes from a small sample; a chunk is sorted in
# memory; no statement is worth compiling (JIT).
STREAM_SETTINGS = {
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "default_statistics_target": "1",
    "work_mem": "64MB",
    "jit": "off",
}
LOCK_NAMESPACE = 0x1D17  # first key of the kinds' advisory locks (the second is the kind)
LOCK_KINDS = {"contacts": 1, "stores": 2, "bookings": 3, "subscriptions": 4}
STAGE_PREFIX = "import_stage_"
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
PLAIN_NUMBER = re.compile(r"-?\d{1,30}(\.\d{1,30})?\Z")
_counter = itertools.count(1)

Problem = tuple[int, str, str]


class ImportChanged(Exception):
    """Rows changed under the import between its check and its write (outside imports, which
    are serialised): nothing was written."""


def q(name: str) -> str:
    return connection.ops.quote_name(name)


def lock(kind: str) -> None:
    """Serialise imports of one kind: held until the end of the caller's transaction (SQLite
    serialises every write transaction already)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, LOCK_KINDS[kind]]
            )


@contextlib.contextmanager
def _settings(cursor: Any, values: dict[str, str]) -> Iterator[None]:
    """PostgreSQL settings for the statements inside, local to the transaction, and put
    back as they were after them (an error rolls them back with the rest)."""
    names = list(values)
    marks = ", ".join(["current_setting(%s)"] * len(names))
    cursor.execute(f"SELECT {marks}", names)
    before = dict(zip(names, cursor.fetchone(), strict=True))

    def apply(chosen: dict[str, str]) -> None:
        marks = ", ".join(["set_config(%s, %s, true)"] * len(chosen))
        cursor.execute(f"SELECT {marks}", [part for pair in chosen.items() for part in pair])

    apply(values)
    yield
    apply(before)


def staging_tables() -> list[str]:
    """The staging tables this database session can see (for tests and checks)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE %s AND relkind = 'r'",
                [STAGE_PREFIX + "%"],
            )
        else:
            cursor.execute(
                "SELECT name FROM sqlite_temp_master WHERE type = 'table' AND name LIKE %s",
                [STAGE_PREFIX + "%"],
            )
        return sorted(row[0] for row in cursor.fetchall())


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]").search
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_value(value: Any) -> str:
    """One value in COPY's text format (NULL, booleans, escaped text, the rest as str())."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if type(value) is str:
        return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL(value) else value
    return str(value)  # numbers, decimals, dates: their ISO text


def copy_line(row: tuple[Any, ...]) -> str:
    """A row as one line of COPY's text format."""
    return "\t".join([copy_value(value) for value in row]) + "\n"


class _Bad(Exception):
    pass


class Column:
    """One resource field as the staging table sees it."""

    def __init__(self, resource: Any, field: Any, index: int) -> None:
        from campaigns.imports import ScopedForeignKeyWidget

        self.field = field
        self.index = index  # position in the incoming row
        self.model_field: models.Field = resource._meta.model._meta.get_field(field.attribute)
        self.name = self.model_field.name
        self.is_ref = isinstance(field.widget, ScopedForeignKeyWidget)
        if self.is_ref:
            widget = field.widget
            self.stage = f"r_{self.name}"
            self.ref_table = widget.model._meta.db_table
            self.ref_lookup = widget.model._meta.get_field(widget.field).column
            scope = widget.scope_path  # "pk" for entities, "entity" for stores and contacts
            self.ref_scope = (
                widget.model._meta.pk.column
                if scope == "pk"
                else widget.model._meta.get_field(scope).column
            )
            self.plural = widget.plural
            self.sql_type = "text"
        else:
            self.stage = f"c_{self.model_field.column}"
            self.sql_type = self.model_field.db_type(connection)
        self.convert = self._converter()
        self.prepare = self._preparer()

    # Conversion: a fast path for clean values, the exact Django path for everything else.

    def _converter(self) -> Callable[[Any], Any]:
        field, model_field = self.field, self.model_field
        if self.is_ref:
            required = not self.model_field.blank

            def reference(raw: Any) -> Any:
                value = None if raw is None else str(raw).strip() or None
                if (value is None and required) or (value is not None and "\x00" in value):
                    raise _Bad
                return value

            return reference
        default = None if field.default is models.NOT_PROVIDED else field.default
        if isinstance(model_field, models.BooleanField):
            clean = field.widget.clean

            def boolean(raw: Any) -> Any:
                try:
                    value = clean(raw)
                except ValueError:  # not a yes/no word: the exact path words the error
                    raise _Bad from None
                return default if value is None else value

            return boolean
        if isinstance(model_field, models.CharField):
            limit = model_field.max_length
            blank = model_field.blank
            choices = {str(key) for key, _ in model_field.flatchoices} or None
            validators = [
                v for v in model_field.validators if not hasattr(v, "limit_value")
            ]  # the length is checked here; an email field keeps its EmailValidator

            def text(raw: Any) -> Any:
                value = "" if raw is None else raw if type(raw) is str else str(raw)
                if value == "" and default is not None:
                    value = default
                if "\x00" in value:
                    raise _Bad
                if value == "":
                    if blank:
                        return value
                    raise _Bad
                if (limit and len(value) > limit) or (choices and value not in choices):
                    raise _Bad
                for validator in validators:
                    try:
                        validator(value)
                    except ValidationError:
                        raise _Bad from None
                return value

            return text
        if isinstance(model_field, models.DateField) and not isinstance(
            model_field, models.DateTimeField
        ):
            nullable = model_field.null

            def day(raw: Any) -> Any:
                if raw is None or raw == "":
                    if nullable and default is None:
                        return None
                    raise _Bad
                if type(raw) is str and ISO_DATE.match(raw):
                    try:
                        return datetime.date.fromisoformat(raw)
                    except ValueError:
                        raise _Bad from None
                raise _Bad

            return day
        if isinstance(model_field, models.DecimalField):
            validators = model_field.validators

            def number(raw: Any) -> Any:
                if type(raw) is not str or not PLAIN_NUMBER.match(raw):
                    raise _Bad
                value = Decimal(raw)
                for validator in validators:
                    try:
                        validator(value)
                    except ValidationError:
                        raise _Bad from None
                return value

            return number

        def exact(raw: Any) -> Any:
            value, problems = self._exact(raw)
            if problems:
                raise _Bad
            return value

        return exact

    def _preparer(self) -> Callable[[Any], Any] | None:
        """How a clean value is handed to the database: as is (psycopg adapts dates and
        decimals itself; text and booleans everywhere), else Django's own conversion."""
        if self.is_ref or connection.vendor == "postgresql":
            return None
        if isinstance(self.model_field, models.CharField | models.BooleanField):
            return None
        if isinstance(self.model_field, models.DecimalField):
            return str  # as Django stores it: text that the column's affinity makes a number
        if type(self.model_field) is models.DateField:
            return datetime.date.isoformat
        field = self.model_field
        return lambda value: field.get_db_prep_save(value, connection)

    def _exact(self, raw: Any) -> tuple[Any, list[tuple[str, str]]]:
        """The value and the messages import-export's field and the model field's clean()
        give (the exact path: used for any value the fast path did not accept)."""
        field, model_field = self.field, self.model_field
        try:
            value = field.clean({field.column_name: raw})
        except ValueError as exc:
            return None, [(field.attribute, str(exc))]
        except (ArithmeticError, TypeError):
            return None, [(field.attribute, "Enter a number.")]
        if model_field.blank and value in model_field.empty_values:
            return value, []
        try:
            return model_field.clean(value, None), []
        except ValidationError as exc:
            return None, [(model_field.name, message) for message in exc.messages]

    def clean(self, raw: Any) -> tuple[Any, list[tuple[str, str]]]:
        """The value and its problems (the slow path, for a row the fast one refused)."""
        if type(raw) is str and "\x00" in raw:  # no database column can hold it
            return None, [(self.name, "Null characters are not allowed.")]
        if self.is_ref:
            value = None if raw is None else str(raw).strip() or None
            if value is None and not self.model_field.blank:
                return None, [(self.name, str(self.model_field.error_messages["null"]))]
            return value, []
        try:
            value = self.convert(raw)
        except _Bad:
            return self._exact(raw)
        except ValidationError as exc:
            return None, [(self.name, message) for message in exc.messages]
        return value, []


class StagedImport:
    """One import's staging table: load rows, check them in SQL, apply them.

    ``columns`` are the incoming rows' column names (each row a list in that order).
    Use as a context manager: the staging tables are dropped on exit, whatever happened.
    """

    def __init__(self, *, kind: str, entity: Any, columns: list[str], expect: str = "") -> None:
        from campaigns.imports import RESOURCES

        self.kind = kind
        self.resource = RESOURCES[kind](entity=entity)
        self.model = self.resource._meta.model
        self.allowed = self.resource.allowed_entities()
        self.expect = expect
        self.entity_code = entity.code if entity is not None else None
        self.plural = self.resource.plural
        position = {name: number for number, name in enumerate(columns)}
        self.columns = [
            Column(self.resource, field, position[field.column_name])
            for field in self.resource.get_import_fields()
            if field.attribute and field.column_name in position
        ]
        self.by_name = {column.name: column for column in self.columns}
        self.stage_names = ", ".join(["line", "dkey", "bad"] + [q(c.stage) for c in self.columns])
        self.plan = [(column.convert, column.index) for column in self.columns]
        self.preparers = [
            (3 + number, column.prepare)
            for number, column in enumerate(self.columns)
            if column.prepare is not None
        ]
        self.keys = list(self.resource._meta.import_id_fields)
        self.key_index = [position.get(self.resource.fields[key].column_name) for key in self.keys]
        # where the keys sit in a converted row (line, dkey, bad, then the columns)
        self.key_at = [
            3 + self.columns.index(self.by_name[key]) for key in self.keys if key in self.by_name
        ]
        entity_column = self.resource.entity_column
        self.entity_index = position.get(entity_column) if entity_column else None
        number = next(_counter)
        self.table = f"{STAGE_PREFIX}{number}"
        self.resolved = f"{STAGE_PREFIX}{number}_r"
        self.python_problems: dict[int, list[tuple[str, str]]] = {}
        self.new_row_problems = self._new_row_problems()
        self.loaded = 0
        self.to_write: int | None = None  # set by the check (``_counts``)

    def _new_row_problems(self) -> list[tuple[str, str]]:
        """What a new row's full_clean() says of the fields the file leaves out (their
        defaults): the same for every new row of the file."""
        instance = self.model()
        present = [column.name for column in self.columns]
        try:
            instance.clean_fields(exclude=present)
        except ValidationError as exc:
            return [
                (name, str(message))
                for name, messages in exc.message_dict.items()
                for message in messages
            ]
        return []

    # Staging ---------------------------------------------------------------------------

    def __enter__(self) -> StagedImport:
        definition = ", ".join(
            ["line bigint NOT NULL", "dkey text NOT NULL", "bad smallint NOT NULL"]
            + [f"{q(column.stage)} {column.sql_type}" for column in self.columns]
        )
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMPORARY TABLE {q(self.table)} ({definition})")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.drop()

    def drop(self) -> None:
        if connection.connection is None:
            return  # the session is gone, and its temporary tables with it
        try:
            with connection.cursor() as cursor:
                for table in (self.resolved, self.table):
                    cursor.execute(f"DROP TABLE IF EXISTS {q(table)}")
        except DatabaseError:  # an aborted outer transaction: its rollback drops them
            pass

    def _row(self, line: int, values: list[Any], problem: str) -> tuple[Any, ...]:
        raw_key = "\x1f".join(
            "" if index is None or values[index] is None else str(values[index]).strip()
            for index in self.key_index
        )
        if problem:  # a line refused as a whole: only its key is kept (for repeated keys)
            self.python_problems[line] = [("", problem)]
            return (line, raw_key, 2, *([None] * len(self.columns)))
        if self.entity_code is not None and self.entity_index is not None:
            value = values[self.entity_index]
            if value is None or not str(value).strip():
                values[self.entity_index] = self.entity_code
        try:  # the fast path: every value clean
            out = [line, raw_key, 0, *[convert(values[index]) for convert, index in self.plan]]
        except Exception:  # any refusal: the slow path says which and why
            pass
        else:
            for position, prepare in self.preparers:
                if out[position] is not None:
                    out[position] = prepare(out[position])
            return tuple(out)
        out = [line, raw_key, 0]
        errors: list[tuple[str, str]] = []
        for column in self.columns:
            value, found = column.clean(values[column.index])
            if found:
                errors += found
                value = None
            elif column.prepare is not None and value is not None:
                value = column.prepare(value)
            out.append(value)
        if errors:
            out[2] = 1
            self.python_problems[line] = errors
        return tuple(out)

    def load(
        self,
        rows: Iterable[tuple[int, list[Any], str]],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Convert and stage (line, values, problem) rows; ``progress(count)`` after each
        chunk. Returns the number of rows staged."""
        names = self.stage_names
        converted = (self._row(line, values, problem) for line, values, problem in rows)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                raw = cursor.cursor
                while chunk := list(itertools.islice(converted, LOAD_CHUNK)):
                    with raw.copy(f"COPY {q(self.table)} ({names}) FROM STDIN") as copy:
                        for row in chunk:
                            copy.write_row(row)
                    self.loaded += len(chunk)
                    if progress:
                        progress(self.loaded)
            else:
                marks = ", ".join(["%s"] * (3 + len(self.columns)))
                sql = f"INSERT INTO {q(self.table)} ({names}) VALUES ({marks})"
                # Outside a transaction each row would be its own (a temporary table's
                # commit still visits the main database's WAL): one deferred transaction per
                # chunk, which writes only the temporary database and so locks nobody out.
                own = not connection.in_atomic_block
                while chunk := list(itertools.islice(converted, LOAD_CHUNK)):
                    if own:
                        cursor.execute("BEGIN DEFERRED")
                    try:
                        cursor.executemany(sql, chunk)
                    except BaseException:
                        if own:
                            cursor.execute("ROLLBACK")
                        raise
                    if own:
                        cursor.execute("COMMIT")
                    self.loaded += len(chunk)
                    if progress:
                        progress(self.loaded)
        return self.loaded

    def stream(
        self,
        rows: Iterable[tuple[int, list[Any], str]],
        progress: Callable[[int], None] | None = None,
    ) -> tuple[dict[str, int], int] | None:
        """PostgreSQL, in the caller's transaction holding the kind's lock: stage, check and
        write the rows chunk by chunk while a thread converts the next chunk (the database
        writes one chunk while Python reads the next, instead of one waiting for the other).

        Returns the counts and the rows written, or None at the first chunk with any problem
        (a bad value, an unknown or foreign reference, a key already staged): the caller then
        rolls back and takes the whole-file path (``load``, ``check``, ``apply``), which
        reports every problem. A clean file gives exactly the whole file's result: its keys
        are unique as converted (the converting thread keeps the hash of every key it met:
        about 60 MB for a million rows), so no chunk reads a row another chunk wrote.

        The staging table holds one chunk at a time; each chunk's check and write are the
        whole-file path's own statements (``_resolve``, ``apply``)."""
        names = self.stage_names
        counts = dict.fromkeys(("new", "updated", "unchanged", "errors", "total"), 0)
        written = 0
        table = q(self.table)
        converted = self._converted_in_thread(rows, STREAM_CHUNK, FIRST_CHUNK)
        with (
            connection.cursor() as cursor,
            contextlib.closing(converted) as chunks,
            _settings(cursor, STREAM_SETTINGS),
        ):
            for size, refused, data in chunks:
                if refused:  # a value Python refused, or a key met before
                    return None
                cursor.execute(f"TRUNCATE {table}")
                with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    copy.write(data)
                self.loaded += size
                cursor.execute(f"ANALYZE {table}")  # its row count, from a small sample
                self._resolve(chunk=True)
                found = self._counts()
                if found["errors"]:
                    return None
                written += self.apply()
                counts = {name: counts[name] + found[name] for name in counts}
                if progress:
                    progress(self.loaded)
        return counts, written

    def _converted_in_thread(
        self, rows: Iterable[tuple[int, list[Any], str]], size: int, first: int
    ) -> Iterator[tuple[int, bool, bytes]]:
        """The rows converted by ``_row``, ``first`` then ``size`` at a time, as (rows, any
        refused or with a key met before, COPY text), from a thread that keeps one or two
        chunks ahead. Its errors
        (an unreadable file) are raised here; closing this generator stops the thread and
        waits for it (before the caller closes the file)."""
        ahead: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        end = object()

        def offer(item: Any) -> None:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            try:
                converted = (self._row(line, values, problem) for line, values, problem in rows)
                # The hash of every key met, as converted (two spellings of one date are one
                # key): a collision only costs the fallback.
                seen: set[int] = set()
                wanted = min(first, size)
                while not stop.is_set() and (chunk := list(itertools.islice(converted, wanted))):
                    refused = any(row[2] for row in chunk)
                    before = len(seen)
                    seen.update(hash(tuple(row[at] for at in self.key_at)) for row in chunk)
                    refused |= len(seen) - before < len(chunk)  # a key met before
                    text = "".join([copy_line(row) for row in chunk]).encode()
                    offer((len(chunk), refused, text))
                    wanted = size
                offer(end)
            except BaseException as exc:  # handed to the consumer, raised there
                offer(exc)

        thread = threading.Thread(target=produce, name="import-convert", daemon=True)
        thread.start()
        try:
            while (item := ahead.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    # Checking ----------------------------------------------------------------------------

    def _in_allowed(self, expression: str) -> str:
        ids = ", ".join(str(int(pk)) for pk in sorted(self.allowed or ())) or "NULL"
        return f"{expression} IN ({ids})"

    def _target_join(self) -> tuple[str, str]:
        """The join finding the row under each key, and the SQL of that row's owner."""
        meta = self.model._meta
        target = q(meta.db_table)
        if self.kind == "subscriptions":
            contact = self.by_name["contact"]
            product = self.by_name["product"]
            start = self.by_name["start_date"]
            sub = (
                f"SELECT MIN(t2.id) FROM {target} t2 WHERE t2.contact_id = ref_contact.id "
                f"AND t2.{q(product.model_field.column)} = s.{q(product.stage)} "
                f"AND t2.{q(start.model_field.column)} = s.{q(start.stage)}"
            )
            assert contact.is_ref
            return f"LEFT JOIN {target} t ON t.id = ({sub})", "ref_contact.entity_id"
        key = self.by_name[self.keys[0]]
        join = f"LEFT JOIN {target} t ON t.{q(key.model_field.column)} = s.{q(key.stage)}"
        if self.resource.scope_path == "contact__entity":
            contact_table = q(meta.get_field("contact").related_model._meta.db_table)
            join += f" LEFT JOIN {contact_table} towner ON towner.id = t.contact_id"
            return join, "towner.entity_id"
        return join, "t.entity_id"

    def _resolve(self, chunk: bool = False) -> None:
        """(Re)create the resolved table: each staged row with its references, the row under
        its key, and its verdict (``chunk``: the staging table holds one chunk of ``stream``,
        whose keys are checked against the keys table)."""
        joins, values = [], []
        for column in self.columns:
            if column.is_ref:
                alias = f"ref_{column.name}"
                scope = (
                    f" AND {self._in_allowed(f'{alias}.{q(column.ref_scope)}')}"
                    if self.allowed is not None
                    else ""
                )
                joins.append(
                    f"LEFT JOIN {q(column.ref_table)} {alias} ON "
                    f"{alias}.{q(column.ref_lookup)} = s.{q(column.stage)}{scope}"
                )
                values.append(f"{alias}.id AS {q(column.model_field.column)}")
        target_join, owner = self._target_join()
        refused = (
            f"(t.id IS NOT NULL AND NOT COALESCE({self._in_allowed(owner)}, FALSE))"
            if self.allowed is not None and self.kind != "subscriptions"
            else "(1 = 0)"
        )
        same = [
            f"t.{q(c.model_field.column)} IS NOT DISTINCT FROM "
            + (f"ref_{c.name}.id" if c.is_ref else f"s.{q(c.stage)}")
            for c in self.columns
        ] or ["1 = 1"]
        unresolved = (
            " OR ".join(
                f"(s.{q(c.stage)} IS NOT NULL AND ref_{c.name}.id IS NULL)"
                for c in self.columns
                if c.is_ref
            )
            or "(1 = 0)"
        )
        table = q(self.table)
        if chunk:  # keys checked by ``stream`` itself, against every key staged so far
            repeated = "(1 = 0)"
        else:
            repeated = f"s.dkey IN (SELECT dkey FROM {table} GROUP BY dkey HAVING COUNT(*) > 1)"
        new_bad = "(t.id IS NULL)" if self.new_row_problems else "(1 = 0)"
        err0 = (
            f"(s.bad <> 0 OR {refused} OR (s.bad = 0 AND ({unresolved} OR {new_bad})) "
            f"OR {repeated})"
        )
        expect = {"new": "tid IS NOT NULL", "existing": "tid IS NULL"}.get(self.expect, "1 = 0")
        select = ", ".join(
            [
                "s.*",
                *values,
                "t.id AS tid",
                f"CASE WHEN {refused} THEN 1 ELSE 0 END AS refused",
                f"CASE WHEN t.id IS NULL OR ({' AND '.join(same)}) THEN 0 ELSE 1 END AS changed",
                f"CASE WHEN {err0} THEN 1 ELSE 0 END AS err0",
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {q(self.resolved)}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {q(self.resolved)} AS SELECT *, CASE WHEN err0 = 1 OR "
                f"({expect}) THEN 1 ELSE 0 END AS err FROM (SELECT {select} "
                f"FROM {table} s {' '.join(joins)} {target_join}) resolved"
            )

    def _counts(self) -> dict[str, int]:
        """New, updated, unchanged and refused rows of the resolved table, and all of them."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COALESCE(SUM(CASE WHEN err = 0 AND tid IS NULL THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN err = 0 AND changed = 1 THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN err = 0 AND tid IS NOT NULL AND changed = 0 "
                "THEN 1 ELSE 0 END), 0), COALESCE(SUM(err), 0), COUNT(*) "
                f"FROM {q(self.resolved)}"
            )
            new, updated, unchanged, errors, total = cursor.fetchone()
        self.to_write = int(new) + int(updated)  # what ``apply`` must write, no more, no less
        return {
            "new": int(new),
            "updated": int(updated),
            "unchanged": int(unchanged),
            "errors": int(errors),
            "total": int(total),
        }

    def check(self) -> tuple[list[Problem], dict[str, int]]:
        """Check the staged rows in SQL; problems (line, field, message) and the counts of
        new, updated, unchanged and refused rows."""
        self._resolve()
        problems: list[Problem] = []
        with connection.cursor() as cursor:
            resolved = q(self.resolved)
            cursor.execute(f"SELECT line, dkey FROM {resolved} WHERE refused = 1")
            refused_lines = set()
            for line, key in cursor.fetchall():
                refused_lines.add(line)
                problems.append((line, self.keys[0], self._not_found(key, self.plural)))
            for line, found in self.python_problems.items():
                if line not in refused_lines:
                    problems += [(line, name, message) for name, message in found]
            for column in self.columns:
                if column.is_ref:
                    cursor.execute(
                        f"SELECT line, {q(column.stage)} FROM {resolved} WHERE refused = 0 "
                        f"AND bad < 2 AND {q(column.stage)} IS NOT NULL "
                        f"AND {q(column.model_field.column)} IS NULL"
                    )
                    problems += [
                        (line, column.name, self._not_found(value, column.plural))
                        for line, value in cursor.fetchall()
                    ]
            if self.new_row_problems:
                cursor.execute(
                    f"SELECT line FROM {resolved} WHERE tid IS NULL AND refused = 0 AND bad < 2"
                )
                for (line,) in cursor.fetchall():
                    problems += [(line, name, message) for name, message in self.new_row_problems]
            cursor.execute(
                f"SELECT dkey, line FROM {q(self.table)} WHERE dkey IN (SELECT dkey FROM "
                f"{q(self.table)} GROUP BY dkey HAVING COUNT(*) > 1) ORDER BY dkey, line"
            )
            for key, group in itertools.groupby(cursor.fetchall(), key=lambda row: row[0]):
                lines = [line for _, line in group]
                shown = ", ".join(str(n) for n in lines[:10]) + (", …" if len(lines) > 10 else "")
                shown_key = key.replace("\x1f", "/")
                problems += [
                    (line, self.keys[0], f"“{shown_key}” appears on several lines ({shown}).")
                    for line in lines
                ]
            if self.expect:
                cursor.execute(f"SELECT line, dkey FROM {resolved} WHERE err0 = 0 AND err = 1")
                for line, key in cursor.fetchall():
                    message = (
                        f"“{key.replace(chr(31), '/')}” already exists."
                        if self.expect == "new"
                        else "No such row to update."
                    )
                    problems.append((line, self.keys[0], message))
        return problems, self._counts()

    def statuses(self) -> dict[str, list[int]]:
        """The lines of the accepted rows: new, updated and unchanged (after ``check``)."""
        out: dict[str, list[int]] = {"new": [], "updated": [], "unchanged": []}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT line, CASE WHEN tid IS NULL THEN 'new' WHEN changed = 1 THEN 'updated' "
                f"ELSE 'unchanged' END FROM {q(self.resolved)} WHERE err = 0"
            )
            for line, status in cursor.fetchall():
                out[status].append(line)
        return out

    @staticmethod
    def _not_found(value: Any, plural: str) -> str:
        from campaigns.imports import not_found_message

        return not_found_message(str(value).replace("\x1f", "/"), plural)

    # Writing -----------------------------------------------------------------------------

    def _value_sql(self, field: models.Field, now: datetime.datetime) -> tuple[str, list[Any]]:
        """The SELECT expression giving a new row's value of ``field``."""
        column = self.by_name.get(field.name)
        if column is not None:
            return (q(field.column) if column.is_ref else q(column.stage)), []
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value: Any = now
        else:
            value = field.get_default()
        value = field.get_db_prep_save(value, connection)
        if connection.vendor == "postgresql":
            return f"CAST(%s AS {field.db_type(connection)})", [value]
        return "%s", [value]

    def apply(self) -> int:
        """Write the accepted rows (call inside the transaction that ran ``check``): new rows
        inserted, changed rows updated, the rest left alone. Returns the rows written."""
        meta = self.model._meta
        table = q(meta.db_table)
        now = timezone.now()
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        insert_columns = ", ".join(q(f.column) for f in fields)
        expressions, params = [], []
        for field in fields:
            sql, values = self._value_sql(field, now)
            expressions.append(sql)
            params += values
        updates = [f for f in fields if f.name in self.by_name or getattr(f, "auto_now", False)]
        resolved = q(self.resolved)
        expected = self.to_write
        if expected is None:
            raise RuntimeError("apply() writes what check() accepted: check first.")
        with connection.cursor() as cursor:
            written = 0
            if updates:  # the rows found under their keys (checked under the kind's lock)
                assignments = ", ".join(
                    f"{q(f.column)} = {self._update_source(f)}" for f in updates
                )
                update_params = [
                    connection.ops.adapt_datetimefield_value(now)
                    for f in updates
                    if f.name not in self.by_name
                ]
                cursor.execute(
                    f"UPDATE {table} SET {assignments} FROM {resolved} r "
                    f"WHERE {table}.id = r.tid AND r.err = 0 AND r.changed = 1",
                    update_params,
                )
                written += cursor.rowcount
            insert = (
                f"INSERT INTO {table} ({insert_columns}) SELECT {', '.join(expressions)} "
                f"FROM {resolved} WHERE err = 0 AND tid IS NULL ORDER BY line"
            )
            if self.kind != "subscriptions":  # a key inserted meanwhile outside imports
                key = meta.get_field(self.keys[0]).column
                assignments = ", ".join(f"{q(f.column)} = EXCLUDED.{q(f.column)}" for f in updates)
                guard = ""
                if self.allowed is not None:
                    if self.resource.scope_path == "contact__entity":
                        contact_table = q(meta.get_field("contact").related_model._meta.db_table)
                        owner = (
                            f"(SELECT entity_id FROM {contact_table} WHERE "
                            f"{contact_table}.id = {table}.contact_id)"
                        )
                    else:
                        owner = f"{table}.entity_id"
                    guard = f" WHERE {self._in_allowed(owner)}"
                insert += (
                    f" ON CONFLICT ({q(key)}) DO UPDATE SET {assignments}{guard}"
                    if assignments
                    else f" ON CONFLICT ({q(key)}) DO NOTHING"
                )
            cursor.execute(insert, params)
            written += cursor.rowcount
        if written != expected:
            raise ImportChanged(f"{expected - written} row(s) changed since the check.")
        return written

    def _update_source(self, field: models.Field) -> str:
        column = self.by_name.get(field.name)
        if column is None:
            return "%s"  # auto_now
        return f"r.{q(field.column) if column.is_ref else q(column.stage)}"
