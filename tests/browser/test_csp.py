"""Finding 10: the portal and the admin run under the Content-Security-Policy with no violation.

The demo is built (``seed_demo``: packages, orders, campaigns with workflows and deliveries,
approvals, audience), then each role logs in and walks its pages: every link of the portal's
main navigation, a few detail pages from each list, and for central users the admin index,
its changelists, a change form from each, the query builder and an export page. The browser
reports every ``securitypolicyviolation`` event, console error and uncaught script error.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

from portal.demo import DEMO_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} ` +
    `(${event.sourceFile || location.pathname}:${event.lineNumber})`
  );
});
"""

# Links followed from list pages (GET only; none of these changes anything).
DETAIL = re.compile(
    r"^/(packages/\d+|orders/\d+|campaigns/\d+|campaigns/lists/\d+|approvals/\d+|deliveries/\d+"
    r"|entities/[^/]+|audience/contacts/\d+|audience/imports/\d+)/$"
)
ADMIN_CHANGELIST = re.compile(r"^/admin/[a-z_]+/[a-z_]+/$")
ADMIN_ADD = re.compile(r"^/admin/[a-z_]+/[a-z_]+/add/$")
ROLES = [
    ("admin", "superuser"),
    ("marketer", "central marketer"),
    ("approver", "central approver"),
    ("lille", "local operator"),
    ("lille.boss", "local approver"),
]


class Walk:
    def __init__(self, context, base: str, who: str):
        self.page = context.new_page()
        self.page.set_default_timeout(10_000)
        self.base = base
        self.who = who
        self.problems: list[str] = []
        self.visited: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self._report(f"script error: {error}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self._report(f"console error: {message.text}")

    def _report(self, problem: str) -> None:
        where = urlsplit(self.page.url).path
        self.problems.append(f"{self.who} {where}: {problem}")

    def visit(self, path: str) -> None:
        if path in self.visited:
            return
        self.visited.append(path)
        response = self.page.goto(self.base + path)
        if response is None or response.status >= 400:
            self._report(f"answered {response.status if response else 'nothing'}")
        self.collect_violations()

    def collect_violations(self) -> None:
        for violation in self.page.evaluate("window.__cspViolations || []"):
            self._report(f"CSP violation: {violation}")
        self.page.evaluate("window.__cspViolations = []")

    def links(self, selector: str, pattern: re.Pattern, limit: int | None = None) -> list[str]:
        found = []
        for href in self.page.eval_on_selector_all(
            selector, "links => links.map(link => link.getAttribute('href'))"
        ):
            path = urlsplit(href or "").path
            if pattern.match(path) and path not in found and path not in self.visited:
                found.append(path)
        return found[:limit]

    def log_in(self, username: str) -> None:
        self.page.goto(f"{self.base}/accounts/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(DEMO_PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(f"{self.base}/")
        self.visited.append("/")
        self.collect_violations()

    def walk_portal(self) -> None:
        self.page.goto(f"{self.base}/")
        sections = self.links("nav.mainnav a", re.compile(r"^/(?!admin/)[a-z]+/$"))
        assert sections, f"{self.who} sees no navigation"
        for section in sections:
            self.visit(section)
            for detail in self.links("main a", DETAIL, limit=2):
                self.visit(detail)
                for nested in self.links("main a", DETAIL, limit=1):
                    self.visit(nested)
        count = self.page.get_by_role("button", name="Count")
        if "/audience/" in self.visited:
            self.page.goto(f"{self.base}/audience/")
        if "/audience/" in self.visited and count.count():
            count.click()
            self.page.locator("#count-output").filter(has_text=re.compile(r"\d")).wait_for()
            self.collect_violations()

    def walk_admin(self) -> None:
        self.visit("/admin/")
        changelists = self.links("#content-main a", ADMIN_CHANGELIST)
        for changelist in changelists:
            self.visit(changelist)
            first = self.links(
                "#result_list tbody a", re.compile(r"^/admin/[a-z_]+/[a-z_]+/\d+/change/$"), 1
            )
            for form in first + self.links(".object-tools a", ADMIN_ADD):
                self.visit(form)
        # The query builder (builder.js, count.js) and django-import-export's export page.
        if "/admin/campaigns/savedquery/" in changelists:
            self.visit("/admin/campaigns/savedquery/add/")
        if "/admin/campaigns/contact/" in changelists:
            self.visit("/admin/campaigns/contact/export/")


def email_preview_path() -> str:
    """A delivery of Lille's campaign previewed for one of its contacts: marketers' HTML, with
    its inline styles, shown in a sandboxed frame that inherits the page's policy."""
    from campaigns.models import Campaign, Contact, Delivery

    campaign = Campaign.objects.filter(entity__code="LIL").first()
    contact = Contact.objects.filter(entity__code="LIL").first()
    delivery = Delivery.objects.create(
        campaign=campaign,
        label="Newsletter",
        channel="email",
        subject="Hello {{ contact.first_name }}",
        html_body=(
            "<style>p{margin:0}</style><table style='width:100%'><tr><td style='color:#c00'>"
            "Dear {{ contact.first_name }}</td></tr></table>"
        ),
        text_body="Dear {{ contact.first_name }}",
    )
    return f"/deliveries/{delivery.pk}/?preview={contact.external_id}"


def test_no_page_of_any_role_violates_the_content_security_policy(
    transactional_db, live_server, browser
):
    # The database first: it is then set up before Playwright starts, and torn
    # down after it stops (Django refuses database work beside its running event loop).
    call_command("seed_demo", quiet_logins=True, audience_size=5)
    preview = email_preview_path()
    problems: list[str] = []
    pages = 0
    for username, role in ROLES:
        context = browser.new_context()
        context.add_init_script(LISTEN)
        walk = Walk(context, live_server.url, f"{username} ({role})")
        walk.log_in(username)
        walk.walk_portal()
        if username in {"admin", "marketer", "lille"}:
            walk.visit(preview)
            assert walk.page.locator("iframe[srcdoc]").count() == 1, f"{username}: no preview"
        if username in {"admin", "marketer", "approver"}:
            walk.walk_admin()
        problems += walk.problems
        pages += len(walk.visited)
        context.close()
    print(f"{pages} pages visited")
    assert pages > 60
    assert problems == []
