"""Personalisation values: form fields generated from the definitions, server-side cleaning
into JSON-ready values, and storage of uploaded files.

The same functions serve the portal's order form, the admin and any other entry point, so a
value is valid or not whatever way it arrives.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import FileExtensionValidator
from django.utils.text import get_valid_filename

from campaigns.choices import FieldType
from campaigns.models import PersonalisationField

# First bytes of the file types we can recognise; a file claiming one of these extensions must
# start with the matching signature (a renamed executable is refused).
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "pdf": (b"%PDF-",),
    "webp": (b"RIFF",),
}


class UploadValidator:
    """Allowed extension, size limit and, for known types, a matching file signature."""

    def __init__(self, definition: PersonalisationField) -> None:
        self.extensions = definition.extensions
        self.max_bytes = (definition.max_file_size_kb or 0) * 1024

    def __call__(self, upload: UploadedFile) -> None:
        FileExtensionValidator(self.extensions)(upload)
        if self.max_bytes and upload.size > self.max_bytes:
            raise ValidationError(
                f"The file is {upload.size // 1024} KiB; the limit is {self.max_bytes // 1024} KiB."
            )
        extension = PurePath(upload.name).suffix.lower().lstrip(".")
        signatures = SIGNATURES.get(extension)
        if signatures:
            upload.seek(0)
            head = upload.read(16)
            upload.seek(0)
            if not head.startswith(signatures):
                raise ValidationError(f"The file's content is not a .{extension} file.")


def default_problems(definition: PersonalisationField) -> dict[str, list[str]]:
    """A definition's default passes its own form field (registered as the definition's
    check in ``CampaignsConfig.ready``; its model checks the options first)."""
    if not definition.default or definition.field_type == FieldType.FILE:
        return {}
    try:
        form_field_for(definition).clean(definition.default)
    except ValidationError as exc:
        return {"default": ["The default is not valid: " + " ".join(exc.messages)]}
    return {}


def form_field_for(definition: PersonalisationField) -> forms.Field:
    """The Django form field enforcing one definition's type and limits."""
    common: dict[str, Any] = {
        "label": definition.label,
        "help_text": definition.help_text,
        "required": definition.required,
    }
    kind = definition.field_type
    if kind == FieldType.TEXT:
        return forms.CharField(max_length=definition.max_length or 500, **common)
    if kind == FieldType.LONG_TEXT:
        return forms.CharField(
            max_length=definition.max_length or 5000, widget=forms.Textarea, **common
        )
    if kind == FieldType.NUMBER:
        return forms.DecimalField(
            min_value=_plain(definition.min_value),
            max_value=_plain(definition.max_value),
            max_digits=18,
            decimal_places=4,
            **common,
        )
    if kind == FieldType.DATE:
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    if kind == FieldType.CHOICE:
        options = [("", "—")] if not definition.required else []
        options += [(choice, choice) for choice in definition.choices]
        return forms.ChoiceField(choices=options, **common)
    if kind == FieldType.BOOLEAN:
        return forms.BooleanField(**common)
    if kind == FieldType.FILE:
        accept = ",".join(f".{ext}" for ext in definition.extensions)
        return forms.FileField(
            validators=[UploadValidator(definition)],
            widget=forms.ClearableFileInput(attrs={"accept": accept}),
            **common,
        )
    raise ValueError(f"Unknown field type {kind!r}")


def plain_decimal(number: Decimal | None) -> Decimal | None:
    """50.0000 → 50 and 2.5000 → 2.5, so limits read naturally in messages and forms."""
    if number is None:
        return None
    number = Decimal(number)
    return number.quantize(Decimal(1)) if number == number.to_integral() else number.normalize()


_plain = plain_decimal


def to_json(value: Any) -> Any:
    """A cleaned Python value as stored in the order's JSON."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if value == "":
        return None
    return value


def initial_for(definition: PersonalisationField, stored: Mapping[str, Any] | None) -> Any:
    """The form's initial value: the stored one, else the definition's default."""
    if stored and definition.name in stored:
        return stored[definition.name]
    if definition.field_type == FieldType.BOOLEAN:
        return definition.default.strip().lower() in {"1", "true", "yes", "on"}
    return definition.default or None


def clean_values(
    definitions: Iterable[PersonalisationField],
    data: Mapping[str, Any],
    files: Mapping[str, UploadedFile] | None = None,
    existing: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    """Validate raw values against the definitions.

    Returns the JSON-ready values and the uploads still to store (see ``store_uploads``).
    Raises ``ValidationError`` with a message list per field name. A file field keeps its
    stored file when no new one is uploaded (unless ``<name>-clear`` is ticked). ``strict``
    refuses keys that are not defined fields (JSON input, where a typo would be lost).
    """
    files = files or {}
    existing = existing or {}
    values: dict[str, Any] = {}
    uploads: dict[str, UploadedFile] = {}
    errors: dict[str, list[str]] = {}
    known = set()
    for definition in definitions:
        name = definition.name
        known.add(name)
        field = form_field_for(definition)
        try:
            if definition.field_type == FieldType.FILE:
                upload = files.get(name)
                clear = str(data.get(f"{name}-clear", "")).lower() in {"on", "true", "1"}
                if upload:
                    field.clean(upload)
                    uploads[name] = upload
                elif existing.get(name) and not clear:
                    values[name] = existing[name]
                elif definition.required:
                    raise ValidationError("This field is required.", code="required")
                else:
                    values[name] = None
            else:
                values[name] = to_json(field.clean(data.get(name)))
        except ValidationError as exc:
            errors[name] = exc.messages
    unknown = [key for key in data if key not in known and not _is_form_noise(key, known)]
    if strict and unknown:
        errors["__all__"] = [f"Unknown personalisation field(s): {', '.join(sorted(unknown))}."]
    if errors:
        raise ValidationError(errors)
    return values, uploads


def _is_form_noise(key: str, known: set[str]) -> bool:
    return key.endswith("-clear") and key[: -len("-clear")] in known


def store_uploads(uploads: Mapping[str, UploadedFile], *, folder: str) -> dict[str, dict]:
    """Save uploads through Django storage; returns their JSON descriptions by field name."""
    stored: dict[str, dict] = {}
    for name, upload in uploads.items():
        filename = get_valid_filename(PurePath(upload.name).name) or "file"
        path = default_storage.save(f"{folder}/{uuid.uuid4().hex}/{filename}", upload)
        stored[name] = {
            "name": filename,
            "path": path,
            "size": upload.size,
            "content_type": getattr(upload, "content_type", "") or "",
        }
    return stored


def delete_stored(descriptions: Iterable[Mapping[str, Any]]) -> None:
    for description in descriptions:
        if description and description.get("path"):
            default_storage.delete(description["path"])


def default_values(definitions: Iterable[PersonalisationField]) -> dict[str, Any]:
    """The JSON values an order starts with when nobody filled the form (pre-registration):
    each definition's default, cleaned like a typed value."""
    values: dict[str, Any] = {}
    for definition in definitions:
        initial = initial_for(definition, None)
        if definition.field_type == FieldType.FILE or initial in (None, ""):
            values[definition.name] = None
        elif definition.field_type == FieldType.BOOLEAN:
            values[definition.name] = bool(initial)
        else:
            values[definition.name] = to_json(form_field_for(definition).clean(initial))
    return values


@dataclass
class ValueChange:
    """New values of an order or child campaign, with what changed and which stored files
    the change replaced (to delete once committed) or added (to delete if it fails)."""

    values: dict[str, Any]
    changed: list[str]
    replaced: list[Mapping[str, Any]]
    stored: dict[str, dict]


def change_values(
    definitions: Iterable[PersonalisationField],
    data: Mapping[str, Any],
    files: Mapping[str, UploadedFile] | None,
    existing: Mapping[str, Any],
    *,
    folder: str,
    strict: bool = False,
) -> ValueChange:
    """Validate new values against ``existing`` and store the uploads (call it inside the
    transaction; delete ``stored`` if that transaction fails)."""
    values, uploads = clean_values(definitions, data, files, existing, strict=strict)
    stored = store_uploads(uploads, folder=folder)
    new = {**values, **stored}
    return ValueChange(
        values=new,
        changed=sorted(key for key in new if new[key] != existing.get(key)),
        replaced=[
            old
            for name, old in existing.items()
            if isinstance(old, Mapping) and old.get("path") and new.get(name) != old
        ],
        stored=stored,
    )


def display_value(definition: PersonalisationField, value: Any) -> str:
    """A value as shown to people (order pages, approval emails)."""
    if value is None or value == "":
        return "—"
    if definition.field_type == FieldType.BOOLEAN:
        return "Yes" if value else "No"
    if definition.field_type == FieldType.FILE and isinstance(value, Mapping):
        return str(value.get("name", "file"))
    return str(value)


def value_rows(
    definitions: Iterable[PersonalisationField],
    values: Mapping[str, Any],
    *,
    file_url: Any,
) -> list[dict[str, Any]]:
    """Label, displayed value and (for files) download URL of each defined value."""
    rows = []
    for definition in definitions:
        value = values.get(definition.name)
        url = None
        if definition.field_type == FieldType.FILE and isinstance(value, Mapping):
            url = file_url(definition.name)
        rows.append(
            {"label": definition.label, "value": display_value(definition, value), "url": url}
        )
    return rows


class PersonalisationForm(forms.Form):
    """Renders one field per definition. Validation is the service's (the same rules for
    every entry point); its errors are attached back to the fields here."""

    def __init__(
        self,
        definitions: Iterable[PersonalisationField],
        *args: Any,
        stored: Mapping[str, Any] | None = None,
        with_comment: bool = True,
        comment: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.definitions = list(definitions)
        self.stored = dict(stored or {})
        for definition in self.definitions:
            field = form_field_for(definition)
            stored_file = self.stored.get(definition.name)
            if definition.field_type == "file" and isinstance(stored_file, Mapping):
                field.required = False  # the stored file stays unless replaced
                field.stored_file = stored_file
                field.may_clear = not definition.required
            field.initial = initial_for(definition, self.stored)
            self.fields[definition.name] = field
        if with_comment:
            self.fields["comment"] = forms.CharField(
                label="Comment for the central team",
                required=False,
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 3}),
                initial=comment,
            )

    def stored_file(self, name: str) -> Mapping[str, Any] | None:
        value = self.stored.get(name)
        return value if isinstance(value, Mapping) else None

    def attach_errors(self, error: ValidationError) -> None:
        """Show the service's errors; the form's own cleaning found the same ones already
        when the rule is a field's, so each message appears once."""
        for name, messages in error.message_dict.items():
            target = name if name in self.fields else None
            shown = self.errors.get(target or "__all__", [])
            for message in messages:
                if message not in shown:
                    self.add_error(target, message)
