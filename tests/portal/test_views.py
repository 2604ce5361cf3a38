import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from portal.models import AuditLog


def login(client, user):
    client.force_login(user)
    return client


def test_the_dashboard_needs_a_login(client, org):
    response = client.get(reverse("portal:dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_dashboard_shows_my_entity_and_role(client, org):
    response = login(client, org.operator_a).get(reverse("portal:dashboard"))
    assert response.status_code == 200
    assert "Store A" in response.content.decode()
    assert "Local operator" in response.content.decode()


def test_a_user_without_entity_is_told_so(client, org):
    response = login(client, org.outsider).get(reverse("portal:dashboard"))
    assert "do not belong to any entity" in response.content.decode()


@pytest.mark.parametrize(
    ("actor", "code", "status"),
    [
        ("operator_a", "STORE_A", 200),
        ("operator_a", "STORE_B", 404),
        ("operator_a", "NORTH", 404),
        ("operator_b", "STORE_A", 404),
        ("regional", "STORE_A", 200),
        ("regional", "STORE_B", 404),
        ("marketer", "STORE_B", 200),
        ("outsider", "STORE_A", 404),
        ("operator_a", "NO_SUCH", 404),
    ],
)
def test_entity_pages_answer_404_for_what_is_not_yours(client, org, actor, code, status):
    response = login(client, getattr(org, actor)).get(reverse("portal:entity_detail", args=[code]))
    assert response.status_code == status


def test_the_404_page_is_friendly_and_leaks_nothing(client, org):
    response = login(client, org.operator_a).get(reverse("portal:entity_detail", args=["STORE_B"]))
    body = response.content.decode()
    assert "Page not found" in body
    assert "Store B" not in body


def test_the_entity_list_shows_only_visible_entities(client, org):
    body = login(client, org.regional).get(reverse("portal:entity_list")).content.decode()
    assert "Store A" in body and "North" in body
    assert "Store B" not in body


def test_the_entity_page_shows_its_history(client, org):
    AuditLog.objects.create(
        content_type_id=None
        or __import__("django.contrib.contenttypes.models", fromlist=["ContentType"])
        .ContentType.objects.get_for_model(org.store_a)
        .pk,
        object_id=str(org.store_a.pk),
        object_repr=str(org.store_a),
        action="renamed",
        comment="New shop sign",
        entity=org.store_a,
    )
    body = (
        login(client, org.operator_a)
        .get(reverse("portal:entity_detail", args=["STORE_A"]))
        .content.decode()
    )
    assert "New shop sign" in body


def test_logout_is_a_post(client, org):
    login(client, org.operator_a)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("portal:dashboard")).status_code == 302


def test_health(client, db):
    assert client.get(reverse("health")).json() == {"status": "ok"}


# Admin -------------------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_admin_login(client, org):
    response = client.get(reverse("admin:portal_entity_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_local_operator_has_no_admin(client, org):
    response = login(client, org.operator_a).get(reverse("admin:portal_entity_changelist"))
    assert response.status_code == 302


def test_central_marketer_lists_every_entity(client, org):
    response = login(client, org.marketer).get(reverse("admin:portal_entity_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "STORE_A" in body and "STORE_B" in body


def test_a_staff_local_operator_cannot_list_another_entity(client, org):
    org.operator_a.is_staff = True
    org.operator_a.save()
    org.operator_a.user_permissions.add(Permission.objects.get(codename="view_entity"))
    login(client, org.operator_a)
    body = client.get(reverse("admin:portal_entity_changelist")).content.decode()
    assert "STORE_A" in body
    assert "STORE_B" not in body
    response = client.get(reverse("admin:portal_entity_change", args=[org.store_b.pk]))
    assert response.status_code == 302  # "does not exist", back to the index
    assert (
        client.get(reverse("admin:portal_entity_change", args=[org.store_a.pk])).status_code == 200
    )


def test_audit_log_admin_is_read_only(client, org):
    login(client, org.marketer)
    assert client.get(reverse("admin:portal_auditlog_changelist")).status_code == 200
    assert client.get(reverse("admin:portal_auditlog_add")).status_code == 403


def test_entity_admin_edits_are_audited(client, org):
    login(client, org.marketer)
    response = client.post(
        reverse("admin:portal_entity_change", args=[org.store_a.pk]),
        {
            "name": "Store A (renovated)",
            "kind": "local",
            "parent": org.north.pk,
            "contact_email": "a@example.com",
            "active": "on",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "portal-auditlog-content_type-object_id-TOTAL_FORMS": "0",
            "portal-auditlog-content_type-object_id-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = AuditLog.objects.for_object(org.store_a).get(action="change_entity")
    assert entry.actor == org.marketer


def test_seed_demo_twice_is_idempotent(db, django_capture_on_commit_callbacks):
    from django.contrib.auth import get_user_model

    from portal.models import Entity, Membership

    with django_capture_on_commit_callbacks(execute=True):  # the worker's part, in-process
        call_command("seed_demo", "--quiet-logins", "--seed", "7", "--audience-size", "4")
    counts = (Entity.objects.count(), Membership.objects.count(), get_user_model().objects.count())
    names = list(Entity.objects.values_list("name", flat=True))
    call_command("seed_demo", "--quiet-logins", "--seed", "7", "--audience-size", "4")
    assert counts == (
        Entity.objects.count(),
        Membership.objects.count(),
        get_user_model().objects.count(),
    )
    assert names == list(Entity.objects.values_list("name", flat=True))
    assert counts[0] == 11
    # The by-target-approval demo ran up to its local approval: each store has a pending
    # list, reviewable by its operators; seeding again started no second run.
    from campaigns.models import LocalApproval, WorkflowRun
    from campaigns.workflow import local_approval

    run = WorkflowRun.objects.get(campaign__collaborative_type="by_target_approval")
    lists = LocalApproval.objects.filter(execution__run=run).select_related("entity")
    assert len(lists) == 8 and all(0 < item.rows <= 30 for item in lists)
    assert {local_approval.request_of(item).state for item in lists} == {"pending"}
    lille = next(item for item in lists if item.entity.code == "LIL")
    reviewers = set(local_approval.request_of(lille).approvers.values_list("username", flat=True))
    assert reviewers == {"lille", "lille.boss"}


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/password_reset/"])
def test_the_login_pages_show_the_product_not_the_host(client, db, settings, path):
    settings.SITE_NAME = "Acme Local Marketing"
    page = client.get(path, HTTP_HOST="127.0.0.1:8105").content.decode()
    assert "<title>" in page
    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.endswith("· Acme Local Marketing")
    assert '<a class="brand" href="/">Acme Local Marketing</a>' in page
    assert '<footer class="footer">Acme Local Marketing' in page
    assert "127.0.0.1:8105" not in page


def test_the_favicon_answers_and_pages_link_to_it(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert "max-age=86400" in response["Cache-Control"]
    page = client.get("/accounts/login/").content.decode()
    assert '<link rel="icon" href="/static/portal/favicon.ico">' in page
