"""Screenshot tour: the portal as each demo role sees it, written to ``docs/tour/``.

Run with ``make tour`` (or ``python docs/tour.py``). The script builds a throw-away SQLite
database in a temporary folder (migrate + ``seed_demo``), starts its own web server on a free
port with Celery tasks run in-process, logs in as each demo role with Chromium (Playwright,
``/usr/bin/chromium`` unless ``CHROMIUM_PATH`` says otherwise), visits the main pages and saves
one PNG per page. Nothing outside the temporary folder and ``docs/tour/`` is touched.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "tour"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 800

# (file name, role, path or "link:<css selector>" followed from the previous page, caption)
# A "link:" step opens the first matching link of the page shown before it.
TOUR: list[tuple[str, str, str, str]] = [
    ("01-login", "", "/accounts/login/", "Log-in page"),
    ("02-marketer-dashboard", "marketer", "/", "Central marketer: dashboard"),
    ("03-marketer-admin", "marketer", "/admin/", "Central marketer: central workspace (admin)"),
    (
        "04-marketer-packages-admin",
        "marketer",
        "/admin/packages/package/",
        "Central marketer: packages",
    ),
    ("05-marketer-package-admin", "marketer", "link:#result_list tbody th a", "A package"),
    ("06-marketer-orders-admin", "marketer", "/admin/packages/order/", "Orders"),
    ("07-marketer-order-admin", "marketer", "link:#result_list tbody th a", "An order"),
    ("08-marketer-campaigns", "marketer", "/campaigns/", "Campaigns (portal)"),
    ("09-marketer-campaign", "marketer", "link:main table tbody a", "A campaign and its workflow"),
    ("10-approver-dashboard", "approver", "/", "Central approver: dashboard"),
    ("11-approver-inbox", "approver", "/approvals/", "Central approver: approvals inbox"),
    ("12-approver-request", "approver", "link:main table tbody a", "An approval request"),
    ("13-store-dashboard", "lille", "/", "Store operator (Lille): dashboard"),
    ("14-store-catalogue", "lille", "/packages/", "Store operator: packages to order"),
    ("15-store-package", "lille", "link:main .card h2 a, main table tbody a", "A package"),
    ("16-store-orders", "lille", "/orders/", "Store operator: orders"),
    ("17-store-order", "lille", "link:main table tbody a", "An order"),
    ("18-store-campaigns", "lille", "/campaigns/", "Store operator: campaigns"),
    ("19-store-campaign", "lille", "link:main table tbody a", "A child campaign"),
    ("20-store-audience", "lille", "/audience/", "Store operator: audience"),
    ("21-store-import", "lille", "/audience/imports/", "Store operator: import contacts"),
    ("22-store-approver-inbox", "lille.boss", "/approvals/", "Store approver: approvals"),
    ("23-region-dashboard", "north", "/", "Regional operator: dashboard"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


def run_tour(base: str, only: set[str]) -> list[tuple[str, str]]:
    from playwright.sync_api import sync_playwright

    from portal.demo import DEMO_PASSWORD

    OUT.mkdir(parents=True, exist_ok=True)
    shots: list[tuple[str, str]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        role = None
        context = page = None
        for name, user, target, caption in TOUR:
            if only and name not in only:
                continue
            if page is None or user != role:
                if context is not None:
                    context.close()
                context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                page = context.new_page()
                role = user
                if user:
                    page.goto(f"{base}/accounts/login/")
                    page.get_by_label("Username").fill(user)
                    page.get_by_label("Password").fill(DEMO_PASSWORD)
                    page.get_by_role("button", name="Log in").click()
                    page.wait_for_load_state()
            if target.startswith("link:"):
                link = page.locator(target.removeprefix("link:")).first
                if not link.count():
                    print(f"skipped {name}: no link {target!r} on {page.url}")
                    continue
                link.click()
                page.wait_for_load_state()
            else:
                page.goto(base + target)
            path = OUT / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append((name, caption))
            print(f"{path.relative_to(ROOT)}  {caption}  ({page.url.removeprefix(base)})")
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these screenshots (file names, no .png)")
    parser.add_argument("--keep", action="store_true", help="keep the server running (Ctrl-C)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portal-tour-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PORTAL_VAR_DIR": tmp,
            "DATABASE_URL": f"sqlite:///{tmp}/tour.sqlite3",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "SITE_URL": f"http://127.0.0.1:{port}",
            "EMAIL_URL": "locmem://",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
        }
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "seed_demo", "--quiet-logins")
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/health/")
            sys.path.insert(0, str(ROOT))
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
            run_tour(base, set(options.names))
            if options.keep:
                print(f"Server at {base}; Ctrl-C stops it.")
                server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
