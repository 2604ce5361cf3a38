"""Engagement benchmarks (PostgreSQL, DATABASE_URL):

- ``endpoints``: the click redirect and the open pixel under gunicorn (one worker, sync by
  default, ``--worker-class gthread --threads 4`` to compare; the portal's WSGI
  application), loaded by a small asyncio HTTP client: requests per second,
  p50/p99 latency, and a check that every answered hit became an event once the server
  stopped (``--stop TERM|INT|QUIT``: events are buffered in the worker and flushed on exit;
  ``--stop KILL`` kills the worker and shows what its buffer lost). Why not locust:
  on this 2-core machine the load generator competes with the server for CPU; a raw asyncio
  client costs a fraction of locust's per-request CPU, so the figure is the server's.
- ``reports``: the report queries (figures, per entity, per link, per hour) on a delivery of
  1M messages with 3M events, generated in SQL.

    python -m bench.engagement [--only endpoints|reports] [--requests 20000] [--messages 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from campaigns.delivery import reports  # noqa: E402
from campaigns.engagement import sent, tracking  # noqa: E402
from campaigns.engagement.events import rebuild  # noqa: E402
from campaigns.models import (  # noqa: E402
    Campaign,
    Delivery,
    EngagementHour,
    Event,
    Message,
    MessageEngagement,
    SentBlock,
)
from portal.models import Entity  # noqa: E402

NAME = "Bench engagement"
LINKS = ["https://shop.example/spring", "https://shop.example/summer", "https://blog.example/"]
ROOT = Path(__file__).resolve().parent.parent
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def forget(delivery_id: int) -> None:
    """The delivery's events and their summaries, deleted."""
    for model in (Event, MessageEngagement, EngagementHour):  # (the sent counts stay)
        model.objects.filter(delivery_id=delivery_id).delete()


def raw(sql: str, params: list | tuple = ()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def bench_delivery(label: str, messages: int, entities: list[int]) -> Delivery:
    """A sent delivery of ``messages`` messages spread over ``entities`` (made in SQL, once)."""
    central = Entity.objects.filter(kind="central").first() or Entity.objects.first()
    campaign, _ = Campaign.objects.get_or_create(
        name=NAME, defaults={"kind": "parent", "entity": central}
    )
    delivery = Delivery.objects.filter(campaign=campaign, label=label).first()
    if delivery and delivery.messages.count() == messages:
        return delivery
    if delivery:
        Delivery.objects.filter(pk=delivery.pk).delete()
    delivery = Delivery.objects.create(
        campaign=campaign, label=label, channel="email", subject="Hi", html_body="<p>Hi</p>"
    )
    Delivery.objects.filter(pk=delivery.pk).update(
        state="sent", sent_at=timezone.now() - timezone.timedelta(hours=80), tracked_links=LINKS
    )
    started = time.perf_counter()
    q = connection.ops.quote_name
    raw(
        f"INSERT INTO {q(Message._meta.db_table)} (delivery_id, contact_id, secondary_id, "
        "entity_id, channel, address, status, rule, error, attempts, sent_at, created_at) "
        "SELECT %s, 900000000 + n, 0, (%s::bigint[])[1 + n %% %s], 'email', "
        "'b' || n || '@example.com', 'sent', '', '', 1, %s, %s FROM generate_series(1, %s) n",
        [delivery.pk, entities, len(entities), timezone.now() - timezone.timedelta(hours=80),
         timezone.now(), messages],
    )  # fmt: skip
    print(f"Made {messages} messages in {time.perf_counter() - started:.1f} s")
    return Delivery.objects.get(pk=delivery.pk)


# --------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------


async def load(port: int, paths: list[str], concurrency: int, keep_alive: bool = False,
               ) -> tuple[list[float], dict]:  # fmt: skip
    """GET every path, ``concurrency`` at a time; returns the latencies (ms) and the count
    per status. One connection per request (Connection: close, as gunicorn's sync worker
    answers, and as most mail clients fetch one pixel), or with ``keep_alive`` one per
    client, reused while the server keeps it open (gthread does; sync closes each)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    queue = iter(paths)
    header = "keep-alive" if keep_alive else "close"

    async def worker() -> None:
        reader = writer = None
        for path in queue:
            started = time.perf_counter()
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: {BROWSER}\r\n"
                f"Connection: {header}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next((int(line[15:]) for line in lines
                           if line.startswith("content-length:")), 0)  # fmt: skip
            if length:
                await reader.readexactly(length)
            if not keep_alive or "connection: close" in lines:
                writer.close()
                reader = writer = None
            latencies.append((time.perf_counter() - started) * 1000)
            status = head[9:12].decode() or "---"
            statuses[status] = statuses.get(status, 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (its gunicorn worker)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *map(int, children.read_text().split())] if children.exists() else [pid]
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("gunicorn did not start")


def worker_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(one) for one in children.read_text().split()] if children.exists() else []


def measure_endpoints(requests: int, concurrency: int, messages: int, *,
                      worker_class: str = "sync", threads: int = 1, stop: str = "TERM",
                      keep_alive: bool = False, config: str = "") -> dict:  # fmt: skip
    entities = list(Entity.objects.order_by("pk").values_list("pk", flat=True)[:20])
    delivery = bench_delivery("Bench tracking endpoints", messages, entities)
    forget(delivery.pk)
    ids = list(delivery.messages.order_by("pk").values_list("pk", flat=True)[:messages])
    sent = int(time.time()) - 3600
    paths = []
    for n in range(requests):
        message = ids[n % len(ids)]
        if n % 2:
            paths.append("/t/c/" + tracking.click_token(message, delivery.pk, n % 3, sent))
        else:
            paths.append("/t/o/" + tracking.open_token(message, delivery.pk, sent) + ".gif")
    port = free_port()
    config = config or str(ROOT / "bench" / "gunicorn_tracking.py")
    env = {**os.environ, "ENGAGEMENT_BUFFER_MS": os.environ.get("ENGAGEMENT_BUFFER_MS", "200"),
           "GUNICORN_WORKER_CLASS": worker_class, "GUNICORN_THREADS": str(threads)}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", "1",
         "--bind", f"127.0.0.1:{port}", "--config", config,
         "--log-level", "warning", "--backlog", "2048"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    waiting = 0
    try:
        wait_for(port)
        asyncio.run(load(port, paths[:200], concurrency, keep_alive))  # warm-up (recorded)
        cpu = cpu_seconds(server.pid)
        started = time.perf_counter()
        latencies, statuses = asyncio.run(load(port, paths, concurrency, keep_alive))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu
        if stop == "KILL":  # the worker killed at once: what its buffer held is lost
            waiting = Event.objects.filter(delivery_id=delivery.pk).count()
            for pid in worker_pids(server.pid):
                os.kill(pid, signal.SIGKILL)
    finally:
        # TERM: graceful stop; INT, QUIT: quick stop. Each worker flushes its buffer.
        server.send_signal(getattr(signal, f"SIG{stop if stop != 'KILL' else 'TERM'}"))
        server.wait(timeout=60)
    answered = statuses.get("200", 0) + statuses.get("302", 0)
    recorded = Event.objects.filter(delivery_id=delivery.pk).count()
    latencies.sort()
    result = {
        "requests": requests,
        "concurrency": concurrency,
        "worker": worker_class if threads <= 1 else f"{worker_class} x{threads} threads",
        "stop": stop,
        "keep_alive": keep_alive,
        "load_average": os.getloadavg()[0],
        "per_second": round(requests / elapsed),
        "per_cpu_second": round(requests / cpu) if cpu else None,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "statuses": statuses,
        "events_recorded": recorded,
        "events_expected": answered + min(200, requests),
    }
    lost = ""
    if stop == "KILL":
        lost = (f"; {waiting} were written when the worker was killed, so "
                f"{result['events_expected'] - recorded} lost with its buffer")  # fmt: skip
    print(
        f"Tracking endpoints, 1 gunicorn {result['worker']} worker, {concurrency} clients"
        f"{' (keep-alive)' if keep_alive else ''}: "
        f"{result['per_second']} req/s ({result['per_cpu_second']} per CPU-second of the "
        f"server; load average {result['load_average']:.1f} on {os.cpu_count()} cores), p50 "
        f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms, statuses {statuses}; stopped by "
        f"SIG{stop}: events recorded {recorded} of {result['events_expected']} hits "
        "(warm-up included)" + lost
    )
    return result


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def ensure_events(delivery: Delivery, events: int) -> None:
    """``events`` events over the delivery's messages: per 10 messages, 6 delivered... in
    the proportions of a real send (delivered, opens, machine opens, clicks, bounces,
    unsubscribes), over the first three days."""
    have = Event.objects.filter(delivery_id=delivery.pk).count()
    if have == events:
        if not MessageEngagement.objects.filter(delivery_id=delivery.pk).exists():
            summarise_again(delivery)
        elif not SentBlock.objects.filter(delivery_id=delivery.pk).exists():
            started = time.perf_counter()  # the sent counts the sending code keeps
            sent.refresh(delivery.pk)
            raw(f"VACUUM ANALYZE {connection.ops.quote_name(SentBlock._meta.db_table)}")
            print(f"Counted the sent messages in {time.perf_counter() - started:.1f} s")
        return
    forget(delivery.pk)
    first, last = (
        delivery.messages.order_by("pk").values_list("pk", flat=True)[0],
        (delivery.messages.order_by("-pk").values_list("pk", flat=True)[0]),
    )
    count = last - first + 1
    q = connection.ops.quote_name
    started = time.perf_counter()
    # kind by position: 40% delivered, 30% opens (a fifth of them machine), 15% clicks, the
    # rest bounces, complaints, unsubscribes; at spread over 72 hours after the send.
    raw(
        f"INSERT INTO {q(Event._meta.db_table)} (message_id, delivery_id, entity_id, kind, at, "
        "link, agent, machine, detail, ref) "
        "SELECT m.id, m.delivery_id, m.entity_id, "
        "  CASE WHEN r < 40 THEN 1 WHEN r < 70 THEN 2 WHEN r < 85 THEN 3 WHEN r < 90 THEN 4 "
        "       WHEN r < 95 THEN 5 WHEN r < 97 THEN 6 ELSE 7 END, "
        "  %s::timestamptz + (n %% 259200) * interval '1 second', "
        "  CASE WHEN r >= 70 AND r < 85 THEN n %% 3 END, 1, (n %% 5 = 0 AND r >= 40 AND r < 85), "
        "  '', '' "
        "FROM generate_series(1::bigint, %s::bigint) AS n "
        "JOIN LATERAL (SELECT (n * 7919) %% 100 AS r) x ON true "
        f"JOIN {q(Message._meta.db_table)} m ON m.id = %s + (n * 104729) %% %s",
        [delivery.sent_at, events, first, count],
    )  # fmt: skip
    raw(f"VACUUM ANALYZE {q(Event._meta.db_table)}")
    print(f"Made {events} events in {time.perf_counter() - started:.1f} s")
    summarise_again(delivery)


def summarise_again(delivery: Delivery) -> None:
    """The summaries the event writes keep, computed from the generated events at once."""
    started = time.perf_counter()
    engaged = rebuild(delivery.pk)
    q = connection.ops.quote_name
    for model in (MessageEngagement, EngagementHour, SentBlock):
        raw(f"VACUUM ANALYZE {q(model._meta.db_table)}")
    print(f"Summarised {engaged} engaged messages in {time.perf_counter() - started:.1f} s")


def measure_reports(messages: int, events: int, repeat: int) -> dict:
    entities = list(Entity.objects.order_by("pk").values_list("pk", flat=True)[:20])
    delivery = bench_delivery("Bench engagement report", messages, entities)
    ensure_events(delivery, events)
    local = Entity.objects.filter(pk__in=entities[1:2])
    timings = {}
    calls = {
        "figures": lambda: reports.engagement(delivery),
        "by_entity": lambda: reports.engagement_by_entity(delivery),
        "links": lambda: reports.link_clicks(delivery),
        "timeline": lambda: reports.timeline(delivery),
        "figures_one_entity": lambda: reports.engagement(delivery, entities=local),
    }
    for name, call in calls.items():
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
        timings[name] = round(statistics.median(samples))
    figures = reports.engagement(delivery)
    total = sum(timings[name] for name in ("by_entity", "links", "timeline"))  # the page's
    print(
        f"Engagement report of {messages} messages / {events} events (median of {repeat}, "
        f"ms): {timings}; the whole page's queries {total} ms. Figures: sent {figures.sent}, "
        f"opened {figures.opened}, clicked {figures.clicked}"
    )
    return {"messages": messages, "events": events, "ms": timings, "page_ms": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="endpoints or reports")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker-class", default="sync", help="gunicorn: sync or gthread")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn gthread threads")
    parser.add_argument(
        "--stop",
        default="TERM",
        choices=["TERM", "INT", "QUIT", "KILL"],
        help="how the server is stopped (KILL: its worker, SIGKILL)",
    )
    parser.add_argument(
        "--gunicorn-config",
        default="",
        help="another gunicorn config file (default bench/gunicorn_tracking.py)",
    )
    parser.add_argument("--keep-alive", action="store_true",
                        help="reuse each client's connection (gthread keeps it)")  # fmt: skip
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("Note: the targets are for PostgreSQL (set DATABASE_URL).")
    if args.only in ("", "endpoints"):
        measure_endpoints(args.requests, args.concurrency, min(args.messages, 20_000),
                          worker_class=args.worker_class, threads=args.threads,
                          stop=args.stop, keep_alive=args.keep_alive,
                          config=args.gunicorn_config)  # fmt: skip
    if args.only in ("", "reports"):
        measure_reports(args.messages, args.events, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
