"""Finding 5, end to end: the web request stores the file and returns; a real Celery worker
reads, checks and writes it."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from campaigns.models import Contact, ImportJob
from tests.integration.conftest import broker_url, producer, start_worker, wait_for  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_imports_the_file_the_request_only_stored(
    org,
    client,
    settings,
    start_worker,  # noqa: F811
):
    worker = start_worker(MEDIA_ROOT=str(settings.MEDIA_ROOT))
    client.force_login(org.operator_a)
    content = "external_id,first_name\n" + "".join(f"W{i},Name{i}\n" for i in range(5))
    response = client.post(
        reverse("campaigns:import_create"),
        {
            "kind": "contacts",
            "file": SimpleUploadedFile("people.csv", content.encode()),
            "entity": org.store_a.pk,
        },
    )
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert wait_for(lambda: ImportJob.objects.get(pk=job.pk).state == "done", 60), "".join(
        worker.lines
    )
    job.refresh_from_db()
    assert (job.new_rows, job.written_rows, job.rows_to_write) == (5, 5, 5)
    assert set(Contact.objects.values_list("entity__code", flat=True)) == {"STORE_A"}
    assert Contact.objects.count() == 5
