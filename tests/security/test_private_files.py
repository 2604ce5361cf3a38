"""Finding 11: private files are downloaded through a view that checks rights, in production
settings (DEBUG off), and no page links to /media/.

Kinds: package documents, import files and their error reports, direct-mail exports.
"""

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from campaigns.models import Delivery, ImportJob
from packages.models import PackageDocument
from portal import files
from tests.factories import CampaignFactory


@pytest.fixture(autouse=True)
def _production(settings):
    settings.DEBUG = False


@pytest.fixture
def stored(org, make_package):
    """One file of each kind, all belonging to STORE_A (the package is offered to it)."""
    package = make_package(audience=[org.store_a])
    document = PackageDocument.objects.create(
        package=package, title="Brief", file=ContentFile(b"%PDF-1.4 brief", name="brief.pdf")
    )
    job = ImportJob.objects.create(
        kind="contacts",
        entity=org.store_a,
        file=ContentFile(b"external_id\nA1\n", name="upload.csv"),
        error_report=ContentFile(b"line,field,error\n2,email,bad\n", name="errors.csv"),
    )
    delivery = Delivery.objects.create(
        campaign=CampaignFactory(entity=org.store_a, kind="parent", collaborative_type=""),
        label="Paper",
        channel="direct_mail",
        export_file=ContentFile(b"message,first_name\n1,Ann\n", name="direct-mail.csv"),
    )
    return {
        "document": (document.file, b"%PDF-1.4 brief"),
        "import file": (job.file, b"external_id\nA1\n"),
        "import report": (job.error_report, b"line,field,error\n2,email,bad\n"),
        "direct mail": (delivery.export_file, b"message,first_name\n1,Ann\n"),
        "objects": (package, job, delivery),
    }


KINDS = ["document", "import file", "import report", "direct mail"]


def test_a_stored_file_url_is_the_checking_view_never_media(stored):
    for kind in KINDS:
        field, _ = stored[kind]
        assert field.url == reverse("private_file", kwargs={"name": field.name})
        assert not field.url.startswith("/media/")


@pytest.mark.parametrize("kind", KINDS)
def test_an_authorised_user_downloads_each_kind(kind, stored, org, client):
    field, content = stored[kind]
    for user in (org.operator_a, org.marketer):
        client.force_login(user)
        response = client.get(field.url)
        assert response.status_code == 200, (kind, user)
        assert b"".join(response.streaming_content) == content
        assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("kind", KINDS)
def test_another_entity_gets_404_and_anonymous_goes_to_login(kind, stored, org, client):
    field, _ = stored[kind]
    client.force_login(org.operator_b)
    assert client.get(field.url).status_code == 404
    client.logout()
    response = client.get(field.url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_nothing_is_served_from_media_and_unknown_files_are_404(stored, org, client, settings):
    field, _ = stored["document"]
    client.force_login(org.marketer)
    assert client.get(f"{settings.MEDIA_URL}{field.name}").status_code == 404
    # A file on disk that no row owns (or a path outside the storage) is never served.
    field.storage.save("orphans/secret.txt", ContentFile(b"secret"))
    assert client.get(reverse("private_file", args=["orphans/secret.txt"])).status_code == 404
    assert client.get(reverse("private_file", args=["../settings.py"])).status_code == 404


def test_every_file_field_is_a_registered_private_kind():
    from django.apps import apps
    from django.db.models import FileField

    declared = {
        (field.model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, FileField)
    }
    assert declared == {(kind.model, kind.field) for kind in files.registered()}


def test_no_page_links_to_media(stored, org, client):
    package, job, delivery = stored["objects"]
    client.force_login(org.marketer)
    admin_pages = {
        reverse("admin:packages_package_change", args=[package.pk]): "document",
        reverse("admin:campaigns_importjob_change", args=[job.pk]): "import file",
        reverse("admin:campaigns_delivery_change", args=[delivery.pk]): "direct mail",
    }
    for url, kind in admin_pages.items():
        page = client.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert "/media/" not in body and stored[kind][0].url in body, url
    client.force_login(org.operator_a)
    portal_pages = {
        reverse("packages:package_detail", args=[package.pk]): None,
        reverse("campaigns:import_detail", args=[job.pk]): None,
        reverse("campaigns:delivery", args=[delivery.pk]): stored["direct mail"][0].url,
    }
    for url, link in portal_pages.items():
        page = client.get(url)
        assert page.status_code == 200, url
        body = page.content.decode()
        assert "/media/" not in body and (link is None or link in body), url
