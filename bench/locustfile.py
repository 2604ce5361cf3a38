"""Load test: store operators browsing the portal under gunicorn (issue 19's "30 store users on
gunicorn with 2 workers": goal ≥ 25 requests/s at p95 ≤ 500 ms).

Each simulated user logs in once as its own store operator (``bench-store-NN``), then browses:
campaigns, the audience page, an audience search (about 6 % of the requests), its orders and
the dashboard, with a think time of 0.5-2 s between pages, as a person does.

    # 1. the data and the 30 operators (the bench's synthetic audience; once per database)
    DATABASE_URL=postgres://… python -m bench.locustfile --setup --contacts 20000 --users 30
    # 2. the site, as in production (2 sync workers), and the load
    DATABASE_URL=postgres://… gunicorn portal.wsgi -w 2 -b 127.0.0.1:8100 &
    BENCH_PASSWORD=… locust -f bench/locustfile.py --headless -u 30 -r 5 -t 90s \\
        --host http://127.0.0.1:8100 --csv var/locust --only-summary

The statistics restart when the last user has logged in (see ``StoreOperator``), so give
``-t`` the log-ins' time on top of the 60 s measured.

The operators' password is ``BENCH_PASSWORD`` (default ``bench-store-password``), the same
for setup and load.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading

from locust import HttpUser, between, task

PASSWORD = os.environ.get("BENCH_PASSWORD", "bench-store-password")
USERNAME = "bench-store-{:02d}"
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
SEARCHES = ["Last1", "Last10", "Smith", "Ann", "BENCH-1", "Mar"]

_numbers = itertools.count(1)
_lock = threading.Lock()
_logged_in = 0


def _next_username() -> str:
    with _lock:
        return USERNAME.format(next(_numbers))


class StoreOperator(HttpUser):
    """One store operator: logs in once, then browses its store's pages."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.username = _next_username()
        page = self.client.get("/accounts/login/", name="login page")
        token = CSRF.search(page.text)
        response = self.client.post(
            "/accounts/login/",
            data={
                "username": self.username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": token.group(1) if token else "",
            },
            headers={"Referer": f"{self.host}/accounts/login/"},
            name="log in",
        )
        if response.status_code != 200 or "/accounts/login/" in response.url:
            raise RuntimeError(f"{self.username} could not log in ({response.status_code}).")
        self._measure_from_now_when_everyone_is_in()

    def _measure_from_now_when_everyone_is_in(self) -> None:
        """The figures are the browsing's: the statistics restart once the last user has
        logged in (30 password hashes at once on 2 workers take many seconds, once a day in
        real life). BENCH_KEEP_LOGIN_STATS=1 keeps them."""
        global _logged_in
        runner = self.environment.runner
        with _lock:
            _logged_in += 1
            everyone = runner is not None and _logged_in == runner.target_user_count
        if everyone and os.environ.get("BENCH_KEEP_LOGIN_STATS") != "1":
            runner.stats.reset_all()
            print(f"All {_logged_in} users logged in: statistics restart now.", flush=True)

    @task(4)
    def campaigns(self) -> None:
        self.client.get("/campaigns/", name="campaigns")

    @task(3)
    def audience(self) -> None:
        self.client.get("/audience/", name="audience")

    @task(1)
    def audience_search(self) -> None:
        self.client.get(f"/audience/?q={random.choice(SEARCHES)}", name="audience search")

    @task(4)
    def orders(self) -> None:
        self.client.get("/orders/", name="orders")

    @task(4)
    def dashboard(self) -> None:
        self.client.get("/", name="dashboard")


def setup(*, contacts: int, users: int, entities: int) -> None:
    """The bench's synthetic audience (``bench.targeting``) and ``users`` store operators,
    spread over the stores with the most contacts (a store has several operators)."""
    from bench.targeting import ensure_audience  # sets Django up

    ensure_audience(contacts, entities)
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from portal import services
    from portal.choices import Role
    from portal.models import Entity

    stores = list(
        Entity.objects.filter(kind="local", active=True)
        .annotate(n=Count("contacts"))
        .order_by("-n", "pk")[: max(1, users // 3)]
    )
    model = get_user_model()
    for number in range(1, users + 1):
        user, made = model.objects.get_or_create(username=USERNAME.format(number))
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        if made:
            services.add_membership(
                user=user, entity=stores[number % len(stores)], role=Role.LOCAL_OPERATOR
            )
    print(f"{users} store operators over {len(stores)} stores; password from BENCH_PASSWORD.")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Prepare the load test's data and users.")
    parser.add_argument("--setup", action="store_true", required=True)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--entities", type=int, default=20, help="local entities (stores)")
    args = parser.parse_args()
    setup(contacts=args.contacts, users=args.users, entities=args.entities)
