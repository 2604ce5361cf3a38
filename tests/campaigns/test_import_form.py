"""The import form: the entity preselected, a refused submission keeps its file, and the
report names the field and the value of every unknown reference."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from campaigns import imports
from campaigns.models import Contact, ImportJob, Store
from tests.campaigns.test_imports import HEADER, job_for, report


def test_the_entity_is_preselected_for_a_user_of_one_entity(org, client):
    client.force_login(org.operator_a)
    form = client.get(reverse("campaigns:import_create")).context["form"]
    assert form["entity"].value() == org.store_a.pk


def test_the_entity_is_left_to_choose_for_a_user_of_several(org, client):
    client.force_login(org.marketer)
    form = client.get(reverse("campaigns:import_create")).context["form"]
    assert form["entity"].value() is None


def test_a_refused_submission_keeps_the_file_for_the_next_one(org, client):
    client.force_login(org.operator_a)
    url = reverse("campaigns:import_create")
    upload = SimpleUploadedFile("people.csv", (HEADER + "K1,Kim,K,,,1,\n").encode())
    response = client.post(url, {"kind": "contacts", "file": upload, "dry_run": "on"})
    assert response.status_code == 200  # no entity chosen
    body = response.content.decode()
    assert "This field is required." in body
    assert "Kept from your last attempt: people.csv." in body
    reference = response.context["kept_upload"]
    assert reference and not ImportJob.objects.exists()
    response = client.post(
        url, {"kind": "contacts", "entity": org.store_a.pk, "kept_upload": reference}
    )
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert job.file.name.endswith(".csv") and job.entity == org.store_a
    with job.file.open("rb") as handle:
        assert b"K1,Kim" in handle.read()


def test_a_kept_file_belongs_to_whoever_sent_it(org, client):
    client.force_login(org.operator_a)
    url = reverse("campaigns:import_create")
    upload = SimpleUploadedFile("people.csv", HEADER.encode())
    reference = client.post(url, {"kind": "contacts", "file": upload}).context["kept_upload"]
    client.force_login(org.operator_b)
    response = client.post(
        url, {"kind": "contacts", "entity": org.store_b.pk, "kept_upload": reference}
    )
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert not ImportJob.objects.exists()


def test_unknown_references_name_their_field_and_value(org):
    Contact.objects.create(external_id="MINE", entity=org.store_a)
    Store.objects.create(code="THEIRS", name="B", entity=org.store_b)
    job = job_for(
        "reference,contact,store,product,booking_date,amount,status\n"
        "B1,NOBODY,THEIRS,Ski,2026-01-02,1,confirmed\n",
        kind="bookings",
        actor=org.operator_a,
        entity=org.store_a,
    )
    job2 = job_for(HEADER + "X1,Ann,A,,NOWHERE,1,\n", actor=org.operator_a, entity=org.store_a)
    assert report(job)[1:] == [
        ["2", "contact", "“NOBODY” is not found among your contacts."],
        ["2", "store", "“THEIRS” is not found among your stores."],
    ]
    assert report(job2)[1:] == [["2", "entity", "“NOWHERE” is not found among your entities."]]


def test_a_problem_of_the_whole_row_leaves_the_field_column_blank():
    assert imports.report_field("__all__") == ""
    assert imports.report_field("store") == "store"
