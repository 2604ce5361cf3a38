"""Export benchmark: memory growth and time of a large contact export, the export job
(``portal.exports``: keyset chunks, CSV streamed to a file, XLSX in openpyxl's write-only
mode) against the admin's former in-memory export (django-import-export resource → tablib
dataset → whole file in memory).

    DATABASE_URL=postgres://… python -m bench.export_memory --contacts 250000

Each measurement runs in a fresh Python process, so the peak resident memory (``VmHWM``) of
one does not hide another's: "RSS growth" is the process's peak minus its resident memory just
before the export started; "Python peak" is tracemalloc's peak during the export (a second
run, since tracing slows Python down). Synthetic contacts (prefix EXPORT, no bookings) are made
once per database. The goal (issue 19): a 250k-row export with memory growth under 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from campaigns import synthetic  # noqa: E402
from campaigns.models import Contact  # noqa: E402

PREFIX = "EXPORT"
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ["job-csv", "job-xlsx", "former-csv", "former-xlsx"]


def rss_kib(field: str) -> int:
    """A line of /proc/self/status in KiB (VmRSS: now; VmHWM: the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ensure_audience(contacts: int) -> int:
    from bench.targeting import ensure_entities

    existing = Contact.objects.filter(external_id__startswith=f"{PREFIX}-").count()
    if existing >= contacts:
        return Contact.objects.count()
    if existing:
        sys.exit(f"A smaller {PREFIX} audience exists ({existing}); use a fresh database.")
    started = time.perf_counter()
    spread = ensure_entities(60)
    made = synthetic.generate(
        contacts=contacts, bookings_per_contact=0, subscription_share=0, prefix=PREFIX,
        seed=7, entities=spread,
    )  # fmt: skip
    print(f"Generated {made.contacts} contacts in {time.perf_counter() - started:.1f} s")
    return Contact.objects.count()


def exporter():  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(
        username="bench-exporter", defaults={"is_superuser": True, "is_staff": True}
    )
    return user


def export_once(mode: str) -> tuple[int, int]:
    """Run one export; returns (rows, bytes of the file)."""
    if mode.startswith("job-"):
        from portal import exports
        from portal.models import ExportJob

        job = ExportJob.objects.create(
            owner=exporter(), kind="contacts", file_format=mode.removeprefix("job-")
        )
        job = exports.run_export(job_id=job.pk)
        assert job.state == "done", job.message
        size = job.file.size
        job.file.delete(save=False)
        return job.done_rows, size
    from campaigns.admin import ContactExportResource
    from portal import spreadsheets

    dataset = ContactExportResource().export(queryset=Contact.objects.select_related("entity"))
    fmt = spreadsheets.XLSX() if mode == "former-xlsx" else spreadsheets.CSV()
    content = fmt.export_data(dataset)
    return len(dataset), len(content)


def measure(mode: str, trace: bool) -> dict:
    Contact.objects.exists()  # connect and load before the baseline
    before = rss_kib("VmRSS")
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    rows, size = export_once(mode)
    seconds = time.perf_counter() - started
    result = {"mode": mode, "rows": rows, "bytes": size, "seconds": round(seconds, 1)}
    if trace:
        result["python_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    else:
        result["rss_growth_mb"] = round((rss_kib("VmHWM") - before) / 1024, 1)
    return result


def run_child(mode: str, trace: bool) -> dict:
    command = [sys.executable, "-m", "bench.export_memory", "--child", mode]
    if trace:
        command.append("--trace")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=250_000)
    parser.add_argument("--modes", default=",".join(MODES), help=f"among {', '.join(MODES)}")
    parser.add_argument(
        "--trace", action="store_true", help="also measure the Python peak (tracemalloc; slow)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.trace)))
        return 0
    total = ensure_audience(args.contacts)
    from django.db import connection

    print(f"{total} contacts on {connection.vendor}; a fresh process per export.", flush=True)
    header = f"{'export':<12} {'rows':>8} {'file MB':>8} {'time s':>7} {'RSS growth MB':>14} "
    print(header + f"{'Python peak MB':>15}")
    results = []
    for mode in [m for m in args.modes.split(",") if m]:
        plain = run_child(mode, trace=False)
        if args.trace:
            plain["python_peak_mb"] = run_child(mode, trace=True)["python_peak_mb"]
        results.append(plain)
        peak = plain.get("python_peak_mb")
        print(
            f"{mode:<12} {plain['rows']:>8} {plain['bytes'] / 2**20:>8.1f} "
            f"{plain['seconds']:>7.1f} {plain['rss_growth_mb']:>14.1f} "
            f"{'—' if peak is None else peak:>15}",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_memory.json").write_text(
        json.dumps({"database": connection.vendor, "contacts": total, "results": results}, indent=2)
    )
    job_growth = [r["rss_growth_mb"] for r in results if r["mode"].startswith("job-")]
    return 1 if any(growth >= 50 for growth in job_growth) else 0


if __name__ == "__main__":
    sys.exit(main())
