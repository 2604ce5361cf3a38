"""Private files: every uploaded or generated file is downloaded through a view that checks the
rights on the row that owns it; nothing under ``MEDIA_ROOT`` is ever public.

The default storage's ``url()`` points at that view (``/files/<name>``), so every link the
admin or a template builds from a ``FileField`` (``file.url``) goes through the check. Each app
registers, for each of its file fields, which rows a user may download the file of
(``register``, called from its ``AppConfig.ready``). A file no registered row owns, or owned by
a row the user may not see, answers 404 — the same as a file that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.files.storage import FileSystemStorage
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse

from portal.web import file_response


class PrivateFileSystemStorage(FileSystemStorage):
    """Files under ``MEDIA_ROOT`` whose URL is the rights-checking download view, never
    ``MEDIA_URL``."""

    def url(self, name: str | None) -> str:
        if not name:
            raise ValueError("This file is not stored.")
        return reverse("private_file", kwargs={"name": name.replace("\\", "/")})


@dataclass(frozen=True)
class PrivateFiles:
    """A file field and the rows of its model a user may download the file of."""

    model: type[Model]
    field: str
    visible: Callable[[Any], QuerySet]


_KINDS: list[PrivateFiles] = []


def register(model: type[Model], field: str, visible: Callable[[Any], QuerySet]) -> None:
    """Declare who may download the files of ``model.field``: ``visible(user)`` is the
    queryset of rows whose file that user may download."""
    kind = PrivateFiles(model=model, field=field, visible=visible)
    if kind not in _KINDS:
        _KINDS.append(kind)


def registered() -> list[PrivateFiles]:
    return list(_KINDS)


def may_download(user: Any, name: str) -> bool:
    """Whether ``name`` is the file of a row ``user`` may see (of a registered kind)."""
    if not name or not user.is_authenticated:
        return False
    return any(
        kind.visible(user).filter(**{kind.field: name}).exists()
        for kind in _KINDS
        if name.startswith(_folder(kind))
    )


def _folder(kind: PrivateFiles) -> str:
    """The fixed folder the field's files are stored under ('' when it is computed)."""
    upload_to = kind.model._meta.get_field(kind.field).upload_to  # type: ignore[union-attr]
    return upload_to if isinstance(upload_to, str) else ""


@login_required
def download(request: HttpRequest, name: str) -> HttpResponse:
    if not may_download(request.user, name):
        raise Http404("No such file.")
    return file_response(name, PurePath(name).name)
