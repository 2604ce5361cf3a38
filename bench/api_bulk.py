"""API bulk upsert benchmark: POST /api/v1/contacts/bulk/ with N rows per request.

    DATABASE_URL=postgres://… python -m bench.api_bulk --rows 10000 --repeat 3

Runs the whole request in-process (middleware, token, parsing, validation, scoping, write)
through Django's test client, on the database of DATABASE_URL, for three cases: new rows,
the same rows again (unchanged) and every row changed (updated). Prints rows/s per case
(median of --repeat requests) and where the time goes (``--profile`` prints the top of a
cProfile of one request). The rows it writes have external ids starting with BENCHAPI-
and are deleted at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from api.services import create_token  # noqa: E402
from campaigns.models import Contact  # noqa: E402
from portal.choices import EntityKind, Role  # noqa: E402
from portal.models import Entity, Membership  # noqa: E402

User = get_user_model()

PREFIX = "BENCHAPI"
RESULTS = Path(__file__).resolve().parent / "results"


def setup_caller() -> tuple[Client, Entity]:
    """A central superuser's token and a local entity to load contacts into."""
    central = Entity.objects.filter(kind=EntityKind.CENTRAL).first()
    if central is None:
        central = Entity.objects.create(code="HQ", name="Headquarters", kind=EntityKind.CENTRAL)
    local = Entity.objects.filter(kind=EntityKind.LOCAL).first()
    if local is None:
        local = Entity.objects.create(
            code=f"{PREFIX}-STORE", name="Bench store", kind=EntityKind.LOCAL, parent=central
        )
    user, _ = User.objects.get_or_create(
        username="bench-api", defaults={"is_superuser": True, "is_staff": True}
    )
    Membership.objects.get_or_create(user=user, entity=central, role=Role.CENTRAL_MARKETER)
    user.api_tokens.all().delete()
    key = create_token(user=user, name="bench", scopes=["read", "write"]).key
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}"), local


def rows(count: int, run: int, entity: Entity, *, variant: str) -> list[dict]:
    return [
        {
            "external_id": f"{PREFIX}-{run}-{number:07d}",
            "first_name": f"First{number}",
            "last_name": f"Last {variant}",
            "email": f"c{number}.{run}@example.com",
            "language": "en",
            "entity": entity.code,
            "email_consent": True,
            "email_consent_source": "bench",
        }
        for number in range(count)
    ]


def post(client: Client, body: bytes) -> tuple[float, float, dict]:
    """Wall seconds, this process's CPU seconds (the web side, without the database's) and
    the answer of one request."""
    started, cpu = time.perf_counter(), time.process_time()
    response = client.post("/api/v1/contacts/bulk/", body, content_type="application/json")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if response.status_code != 200:
        raise SystemExit(f"HTTP {response.status_code}: {response.content[:2000]!r}")
    return elapsed, cpu, response.json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=settings.API_BULK_MAX_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one request")
    parser.add_argument("--target", type=float, default=10_000, help="rows/s to reach")
    args = parser.parse_args()
    settings.API_MAX_BODY_BYTES = max(settings.API_MAX_BODY_BYTES, 400 * args.rows)
    client, entity = setup_caller()
    Contact.objects.filter(external_id__startswith=f"{PREFIX}-").delete()
    figures: dict[str, list[float]] = {"new": [], "unchanged": [], "updated": []}
    cpu_figures: dict[str, list[float]] = {case: [] for case in figures}
    try:
        for run in range(args.repeat):
            first = json.dumps({"rows": rows(args.rows, run, entity, variant="a")}).encode()
            changed = json.dumps({"rows": rows(args.rows, run, entity, variant="b")}).encode()
            for case, body in (("new", first), ("unchanged", first), ("updated", changed)):
                elapsed, cpu, result = post(client, body)
                assert result[case] == args.rows, (case, result)
                figures[case].append(args.rows / elapsed)
                cpu_figures[case].append(args.rows / max(cpu, 1e-6))
        if args.profile:
            profiler = cProfile.Profile()
            body = json.dumps({"rows": rows(args.rows, 99, entity, variant="p")}).encode()
            profiler.runcall(post, client, body)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
            print(out.getvalue())
    finally:
        Contact.objects.filter(external_id__startswith=f"{PREFIX}-").delete()
    vendor = connection.vendor
    load = os.getloadavg()[0]
    print(
        f"API bulk upsert of {args.rows} contacts per request on {vendor}, median of "
        f"{args.repeat} (load average {load:.1f} on {os.cpu_count()} CPUs):"
    )
    summary = {case: round(statistics.median(values)) for case, values in figures.items()}
    cpu_summary = {case: round(statistics.median(v)) for case, v in cpu_figures.items()}
    for case, value in summary.items():
        mark = "ok" if value >= args.target else f"below {args.target:.0f}"
        print(
            f"  {case:<10} {value:>8} rows/s wall ({mark}), "
            f"{cpu_summary[case]:>8} rows per CPU-second of the web process"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api_bulk.json").write_text(
        json.dumps(
            {
                "rows": args.rows,
                "vendor": vendor,
                "load_average": load,
                "rows_per_second": summary,
                "rows_per_cpu_second": cpu_summary,
            },
            indent=2,
        )
    )
    return 0 if min(summary.values()) >= args.target else 1


if __name__ == "__main__":
    raise SystemExit(main())
