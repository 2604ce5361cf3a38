"""Set-based bulk upsert of contacts for the API (``POST /api/v1/contacts/bulk/``).

The rules are the import's (``campaigns.imports``): the same resource parses each column
(its widgets), resolves the entity among the importer's entities and refuses a key owned
elsewhere with the same message; the model's own field validation checks each value. What
differs is the database work: ``full_clean`` in django-import-export costs two queries per
row (the entity's existence, the key's uniqueness); here the existing rows are read once
(``external_id IN …``, locked when writing), references once per distinct code, and the
rows are written with one ``INSERT`` per batch for new rows and one
``INSERT … ON CONFLICT (external_id) DO UPDATE`` per batch for changed ones. Measured by
``bench/api_bulk.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg import sql

from campaigns import imports
from campaigns.choices import ImportKind
from campaigns.models import Contact
from portal.models import Entity

Problem = tuple[int, str, str]
READ_CHUNK = 5000
WRITE_BATCH = 2000
KEY = "external_id"


def _messages(error: ValidationError) -> list[tuple[str, str]]:
    if hasattr(error, "error_dict"):
        return [
            (imports.report_field(name), str(message))
            for name, errors in error.error_dict.items()
            for item in errors
            for message in item.messages
        ]
    return [("", message) for message in error.messages]


def _existing(keys: list[str], *, lock: bool) -> dict[str, Contact]:
    found: dict[str, Contact] = {}
    for start in range(0, len(keys), READ_CHUNK):
        queryset = Contact.objects.filter(external_id__in=keys[start : start + READ_CHUNK])
        if lock:
            queryset = queryset.select_for_update()
        found.update((contact.external_id, contact) for contact in queryset.order_by())
    return found


def upsert_contacts(
    *,
    rows: list[dict[str, Any]],
    actor: Any,
    entity: Entity | None = None,
    import_valid_rows: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Check then write contact rows: the answer of ``imports.import_rows`` (counts, whether
    written, problems ``(row, field, message)`` numbered from 0), nothing written when a row
    is wrong unless ``import_valid_rows``; the same rows again are reported unchanged."""
    imports.import_scope(actor=actor, entity=entity)
    if dry_run:
        return _upsert(rows, entity, import_valid_rows=False, write=False)
    with transaction.atomic():
        return _upsert(rows, entity, import_valid_rows=import_valid_rows, write=True)


def _upsert(
    rows: list[dict[str, Any]], entity: Entity | None, *, import_valid_rows: bool, write: bool
) -> dict[str, Any]:
    resource = imports.RESOURCES[ImportKind.CONTACTS](entity=entity)
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for number, row in enumerate(rows):
        key = str(row.get(KEY) or "").strip()
        if not key:
            problems.append((number, KEY, "This field is required."))
        elif key in first:
            problems.append((number, KEY, f"“{key}” appears on several rows ({first[key]})."))
        else:
            first[key] = number
    existing = _existing(list(first), lock=write)
    now = timezone.now()
    new: list[tuple[int, Contact]] = []
    changed: list[tuple[int, Contact]] = []
    unchanged = 0
    columns_changed: set[str] = set()
    plans: dict[frozenset[str], _Plan] = {}
    for key, number in first.items():
        row = dict(rows[number])
        row[KEY] = key
        resource.before_import_row(row)
        instance = existing.get(key)
        is_new = instance is None
        try:
            if is_new:
                instance = Contact()
            else:
                resource.after_init_instance(instance, False, row)
                before = {c: getattr(instance, _attr(c)) for c in row}
            columns = frozenset(row)
            plan = plans.get(columns) or plans.setdefault(columns, _Plan(resource, columns))
            _validate(plan, instance, row)
            if not resource.in_scope(instance):
                raise resource.refusal(row)
        except ValidationError as error:
            problems += [(number, field, message) for field, message in _messages(error)]
            continue
        if is_new:
            instance.created_at = instance.updated_at = now
            new.append((number, instance))
            continue
        differs = [c for c in row if getattr(instance, _attr(c)) != before[c]]
        if differs:
            instance.updated_at = now
            columns_changed.update(_attr(c) for c in differs)
            changed.append((number, instance))
        else:
            unchanged += 1
    bad = {number for number, _, _ in problems}
    written = write and (not bad or import_valid_rows)
    if written:
        late = _write(new, changed, columns_changed)
        if late:
            problems += late
            bad |= {number for number, _, _ in late}
            written = False
    return {
        "new": len([n for n, _ in new if n not in bad]),
        "updated": len([n for n, _ in changed if n not in bad]),
        "unchanged": unchanged,
        "errors": len(bad),
        "written": written,
        "problems": sorted(problems, key=lambda item: (item[0], item[1])),
    }


class _Plan:
    """For one set of columns: the resource's fields that import them (what
    ``import_instance`` would loop over) and the model fields to validate (those the row
    sets: the others keep values that were valid, or the model's defaults on a new row;
    a row without an entity is refused whatever its columns)."""

    def __init__(self, resource: Any, columns: frozenset[str]) -> None:
        self.fields = [
            field
            for field in resource.get_import_fields()
            if field.attribute and field.column_name in columns
        ]
        names = {field.attribute.split("__")[0] for field in self.fields}
        self.exclude = {f.name for f in Contact._meta.concrete_fields} - names


def _validate(plan: _Plan, instance: Contact, row: dict[str, Any]) -> None:
    """The resource's parsing errors merged with the model's field validation, as
    ``import_instance`` and ``validate_instance`` do, minus their queries: the entity was
    found by the widget among the importer's entities, and the key's uniqueness is the
    set-based lookup's business."""
    errors: dict[str, Any] = {}
    for field in plan.fields:
        try:
            field.save(instance, row)
        except ValueError as error:
            errors[field.attribute] = ValidationError(str(error), code="invalid")
    exclude = plan.exclude | set(errors)
    if instance.entity_id is not None:
        exclude.add("entity")
    elif "entity" not in errors:
        exclude.discard("entity")  # "This field cannot be null.", with no query
    try:
        instance.clean_fields(exclude=exclude)
    except ValidationError as error:
        errors = error.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)


def _attr(column: str) -> str:
    return "entity_id" if column == "entity" else column


def _write(
    new: list[tuple[int, Contact]], changed: list[tuple[int, Contact]], columns: set[str]
) -> list[Problem]:
    """Write inside the caller's transaction; a key inserted meanwhile by someone else
    refuses the rows (and, through the caller's rollback, everything)."""
    update = sorted(columns | {"updated_at"})
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                _copy_write([c for _, c in new], [c for _, c in changed], update)
            else:
                Contact.objects.bulk_create([c for _, c in new], batch_size=WRITE_BATCH)
                Contact.objects.bulk_update(
                    [c for _, c in changed], update, batch_size=WRITE_BATCH // 4
                )
    except IntegrityError:
        taken = set(
            Contact.objects.filter(external_id__in=[c.external_id for _, c in new]).values_list(
                KEY, flat=True
            )
        )
        transaction.set_rollback(True)
        late = [(n, "", imports.CHANGED_MESSAGE) for n, c in new if c.external_id in taken]
        return late or [(new[0][0] if new else 0, "", imports.CHANGED_MESSAGE)]
    return []


def _copy_write(new: list[Contact], changed: list[Contact], update: list[str]) -> None:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT … SELECT for the new
    ones and one UPDATE … FROM for the changed ones (already locked by the caller)."""
    fields = [f for f in Contact._meta.concrete_fields if not f.primary_key]
    names = [f.attname for f in fields]
    columns = sql.SQL(", ").join(sql.Identifier(f.column) for f in fields)
    table = sql.Identifier(Contact._meta.db_table)
    staging = sql.Identifier(f"api_bulk_contacts_{uuid.uuid4().hex[:12]}")
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "
                "SELECT id, {columns} FROM {table} WITH NO DATA"
            ).format(staging=staging, columns=columns, table=table)
        )
        copy_sql = sql.SQL("COPY {staging} (id, {columns}) FROM STDIN").format(
            staging=staging, columns=columns
        )
        with cursor.cursor.copy(copy_sql) as copy:
            for contact in (*new, *changed):
                copy.write_row([contact.pk, *(getattr(contact, name) for name in names)])
        if new:
            cursor.execute(
                sql.SQL(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
                    "WHERE id IS NULL"
                ).format(table=table, columns=columns, staging=staging)
            )
        if changed:
            by_name = {f.attname: f.column for f in fields}
            assignments = sql.SQL(", ").join(
                sql.SQL("{column} = s.{column}").format(column=sql.Identifier(by_name[name]))
                for name in update
            )
            cursor.execute(
                sql.SQL(
                    "UPDATE {table} AS t SET {assignments} FROM {staging} AS s "
                    "WHERE s.id IS NOT NULL AND t.id = s.id"
                ).format(table=table, assignments=assignments, staging=staging)
            )
        cursor.execute(sql.SQL("DROP TABLE {staging}").format(staging=staging))
