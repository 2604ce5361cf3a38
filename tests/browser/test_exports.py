"""The export progress page: it says the export is being prepared, follows the worker's
progress without reloading, and offers the download link once the file is ready."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from campaigns.models import Contact
from portal import exports
from portal.models import ExportJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_progress_page_shows_the_download_link_when_the_worker_is_done(
    org, log_in, live_server, settings, monkeypatch
):
    settings.EXPORT_IMMEDIATE_MAX_ROWS = 1  # more rows than this: a background job
    queued: list[int] = []
    monkeypatch.setattr(exports, "_enqueue", queued.append)  # the worker is started by hand
    for n in range(5):
        Contact.objects.create(external_id=f"A{n}", last_name="Smith", entity=org.store_a)
    Contact.objects.create(external_id="B0", last_name="Smith", entity=org.store_b)
    page = log_in(org.operator_a)
    page.get_by_role("link", name="Audience").click()
    page.get_by_label("Export all your contacts as").select_option("csv")
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator("[data-export-text]")).to_contain_text("being prepared: waiting")
    expect(page.get_by_role("link", name="Download the file (CSV)")).to_be_hidden()
    page.evaluate("window.notReloaded = true")
    assert len(queued) == 1
    exports.run_export(job_id=queued[0])  # the worker writes the file
    link = page.get_by_role("link", name="Download the file (CSV)")
    expect(link).to_be_visible(timeout=10_000)
    expect(page.locator("[data-export-text]")).to_have_text("Your export is ready: 5 rows.")
    expect(page.locator("[data-export-progress]")).to_have_attribute("value", "100")
    assert page.evaluate("window.notReloaded") is True  # polled, not reloaded
    with page.expect_download() as download_info:
        link.click()
    content = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert content.splitlines()[0].startswith("external_id,first_name")
    assert {line.split(",")[0] for line in content.splitlines()[1:]} == {f"A{n}" for n in range(5)}
    assert ExportJob.objects.get().state == "done"
