"""Issue 16, items 5 and 6 for packages: "Cancel package…" asks for a reason first (audit
entry, email with a link to the package); each transition button says what it did."""

from django.urls import reverse

from packages import services
from packages.models import Package
from portal.models import AuditLog, Notification


def cancel_url(package):
    return reverse("admin:packages_package_run", args=[package.pk, "cancel"])


def ordered_package(make_package, org, values):
    package = make_package(audience=[org.store_a, org.store_b])
    services.place_order(
        package=package, entity=org.store_a, actor=org.operator_a, data=values, submit=True
    )
    return package


def test_the_change_form_offers_cancel_package_as_a_link_to_a_confirmation(
    make_package, org, client
):
    package = make_package()
    client.force_login(org.marketer)
    page = client.get(reverse("admin:packages_package_change", args=[package.pk])).content
    assert (
        f'<a href="{cancel_url(package)}" class="transition-button confirm-first">'.encode() in page
    )
    assert b"Cancel package\xe2\x80\xa6</a>" in page
    assert b">Cancel</button>" not in page


def test_cancel_asks_for_a_reason_and_changes_nothing_until_given(make_package, org, client):
    package = make_package(audience=[org.store_a, org.store_b])
    client.force_login(org.marketer)
    page = client.get(cancel_url(package))
    assert page.status_code == 200
    body = page.content.decode()
    assert f"Cancel the package “{package}”?" in body
    assert "Every entity concerned is emailed the reason" in body
    assert 'name="reason"' in body and "csrfmiddlewaretoken" in body
    # The old one-click POST (no reason field) only shows the page again.
    assert client.post(cancel_url(package)).status_code == 200
    refused = client.post(cancel_url(package), {"reason": "   "})
    assert "This field is required." in refused.content.decode()
    package.refresh_from_db()
    assert package.state == "published"
    assert not Notification.objects.filter(kind="package_cancelled").exists()


def test_the_reason_goes_to_the_audit_entry_and_the_email_with_a_link(
    make_package, valid_values, org, client, settings
):
    package = ordered_package(make_package, org, valid_values)
    client.force_login(org.marketer)
    response = client.post(
        cancel_url(package), {"reason": "Supplier withdrew the offer"}, follow=True
    )
    package.refresh_from_db()
    assert package.state == "cancelled"
    entry = AuditLog.objects.for_object(package).get(action="cancel")
    assert entry.comment == "Supplier withdrew the offer"
    emails = Notification.objects.filter(kind="package_cancelled")
    # store A's people (it had ordered): its operator and its approver
    assert {e.entity_id for e in emails} == {org.store_a.pk} and emails.count() == 2
    link = settings.SITE_URL + reverse("packages:package_detail", args=[package.pk])
    assert "Reason: Supplier withdrew the offer" in emails[0].body_text
    assert link in emails[0].body_text and f'href="{link}"' in emails[0].body_html
    assert "Cancelled; 1 order cancelled, 1 entity notified." in response.content.decode()


def test_the_cancelled_package_the_email_links_to_opens_for_its_audience(make_package, org, client):
    package = make_package(audience=[org.store_a, org.store_b])
    services.cancel_package(package=package, actor=org.marketer, reason="Budget cut")
    client.force_login(org.operator_b)  # offered it, never ordered
    assert client.get(reverse("packages:package_detail", args=[package.pk])).status_code == 200
    assert package in Package.objects.visible_to(org.operator_b)
    draft = make_package(audience=[org.store_b], publish=False)
    services.cancel_package(package=draft, actor=org.marketer, reason="Never mind")
    assert draft not in Package.objects.visible_to(org.operator_b)  # never published


def test_publish_says_how_many_entities_were_notified(make_package, org, client):
    package = make_package(audience=[org.store_a, org.store_b], publish=False)
    client.force_login(org.marketer)
    url = reverse("admin:packages_package_run", args=[package.pk, "publish"])
    response = client.post(url, follow=True)
    assert "Published; 2 entities notified." in response.content.decode()
    assert (
        Notification.objects.filter(kind="package_published").values("entity").distinct().count()
        == 2
    )


def test_publish_in_automatic_mode_also_counts_the_pre_registered(make_package, org, client):
    package = make_package(audience=[org.store_a], publish=False, approval_mode="automatic")
    client.force_login(org.marketer)
    url = reverse("admin:packages_package_run", args=[package.pk, "publish"])
    response = client.post(url, follow=True)
    assert "Published; 1 entity notified; 1 entity pre-registered." in response.content.decode()


def test_close_and_archive_say_what_they_did(make_package, org, client):
    package = make_package()
    client.force_login(org.marketer)
    run = "admin:packages_package_run"
    closed = client.post(reverse(run, args=[package.pk, "close"]), follow=True).content.decode()
    assert f"Closed; “{package}” takes no new orders." in closed
    archived = client.post(reverse(run, args=[package.pk, "archive"]), follow=True)
    assert f"Archived; “{package}” is kept for the record." in archived.content.decode()
