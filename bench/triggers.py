"""Trigger benchmark: API-triggered messages through one gunicorn web process.

    DATABASE_URL=postgres://… python -m bench.triggers --batch 100000 --triggers 200

1. Latency: a batch delivery of ``--batch`` messages is sending (one worker on the batch
   queue) while triggers are POSTed at ``--rate`` per second; each one's latency runs from
   its POST until the SMTP sink (its own process) accepted it, with one worker on the
   ``priority`` queue. The target is p95 <= 1 s.
2. Throughput: ``--throughput`` triggers POSTed by ``--clients`` client processes as fast as
   the one web process (gunicorn, one sync worker) accepts them, workers stopped (the
   messages wait in the broker); the target is >= 200 accepted per second.

Every trigger must reach the sink exactly once (counted by Message-ID). Results go to
bench/results/triggers.{md,json}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from api.services import create_token  # noqa: E402
from bench.sending import SENDER, SUBJECT, TEXT, Sink, _free_port, _use_broker, _wait_port  # noqa: E402
from campaigns import synthetic, targeting, triggers  # noqa: E402
from campaigns.delivery import preparation, sending  # noqa: E402
from campaigns.models import (  # noqa: E402
    Campaign,
    Contact,
    Delivery,
    Message,
    Quarantine,
    TriggerDefinition,
    TriggeredMessage,
)
from portal.models import Entity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAME = "Bench trigger"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"


def _process(args: list[str], env: dict[str, str], ready: str) -> subprocess.Popen:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 90
    seen = []
    for line in process.stdout:  # type: ignore[union-attr]
        seen.append(line)
        if ready in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError("A process did not start:\n" + "".join(seen))
    # keep draining its output, or it blocks on a full pipe
    import threading

    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    return process


def _worker(queue: str, env: dict[str, str], concurrency: int = 1) -> subprocess.Popen:
    return _process(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "prefork",
         "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-heartbeat",
         "--without-gossip", "--without-mingle", "-Q", queue, "--hostname", f"{queue}-bench@%h"],
        env, " ready.",
    )  # fmt: skip


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def _post(conn_port: int, path: str, token: str, body: dict, key: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", conn_port, timeout=30)
    conn.request(
        "POST", path, body=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 "Idempotency-Key": key},
    )  # fmt: skip
    response = conn.getresponse()
    data = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, data


def _client(port: int, path: str, token: str, contact_ids: list[int], tag: str) -> list[int]:
    statuses = []
    for index, contact_id in enumerate(contact_ids):
        body = {"recipient": {"contact_id": contact_id},
                "payload": {"order_id": f"{tag}-{index}", "total": index}}  # fmt: skip
        statuses.append(_post(port, path, token, body, f"{tag}-{index}")[0])
    return statuses


def _definition() -> TriggerDefinition:
    central = Entity.objects.get(kind="central")
    old = TriggerDefinition.objects.filter(name=NAME)
    for definition in old:
        _purge(definition)
    definition = TriggerDefinition(
        name=NAME, entity=central, channel="email", kind="transactional",
        subject="Order {{ payload.order_id }} confirmed",
        text_body="Dear {{ contact.first_name }}, your order {{ payload.order_id }} "
        "({{ payload.total }} EUR) is confirmed.",
        payload_schema={"type": "object", "required": ["order_id", "total"], "properties": {
            "order_id": {"type": "string"}, "total": {"type": "number"}}},
    )  # fmt: skip
    definition.full_clean(exclude=["state"])
    definition.save()
    return triggers.publish(definition=definition, actor=None)


def _purge(definition: TriggerDefinition) -> None:
    TriggeredMessage.objects.filter(definition=definition).delete()
    delivery = definition.delivery
    if delivery is not None:
        Message.objects.filter(delivery=delivery).delete()
    definition.delete()
    if delivery is not None:
        campaign, typology = delivery.campaign, delivery.typology
        delivery.delete()
        campaign.delete()
        typology.delete()


def _ensure_contacts(count: int) -> list[int]:
    have = Contact.objects.count()
    if have < count:
        synthetic.generate(contacts=count - have, bookings_per_contact=0, prefix=f"TRIG{have}")
    return list(Contact.objects.order_by("id").values_list("id", flat=True)[:count])


def _cpu_seconds(root: int) -> float:
    """User + system CPU time of a process and its children (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=100_000, help="batch messages sending")
    parser.add_argument("--triggers", type=int, default=200, help="triggers timed for latency")
    parser.add_argument("--rate", type=float, default=10.0, help="triggers per second (latency)")
    parser.add_argument("--throughput", type=int, default=3000, help="triggers for the rate")
    parser.add_argument("--clients", type=int, default=4, help="client processes (rate)")
    parser.add_argument(
        "--threads", type=int, default=8,
        help="threads of the one gunicorn worker process (1: a sync worker)",
    )  # fmt: skip
    parser.add_argument(
        "--priority-concurrency", type=int, default=8,
        help="processes of the one worker on the priority queue (prefetch 1 each)",
    )  # fmt: skip
    parser.add_argument("--broker", default="", help="Redis URL (default BENCH_BROKER_URL)")
    args = parser.parse_args()

    batch_ids = _ensure_contacts(args.batch)
    # Trigger recipients: contacts a transactional message can reach (an address, not
    # blocklisted, not in quarantine).
    contact_ids = list(
        Contact.objects.exclude(email="")
        .filter(blocklisted=False)
        .exclude(email__in=Quarantine.objects.filter(channel="email").values("address"))
        .order_by("id")
        .values_list("id", flat=True)[: max(args.throughput, args.triggers)]
    )
    user, _ = get_user_model().objects.get_or_create(
        username="bench-trigger", defaults={"is_superuser": True, "is_staff": True}
    )
    token = create_token(user=user, name="bench", scopes=["trigger"]).key
    definition = _definition()
    path = f"/api/v1/triggers/{definition.key}/"
    central = Entity.objects.get(kind="central")
    Campaign.objects.filter(name="Bench trigger batch").delete()
    campaign = Campaign.objects.create(name="Bench trigger batch", kind="parent", entity=central)
    run_key = "bench-triggers"
    targeting.drop_run(run_key)
    targeting.materialise(
        Contact.objects.filter(pk__in=batch_ids),
        dimension="contact", run_key=run_key, name="b",
    )  # fmt: skip
    batch = Delivery.objects.create(
        campaign=campaign, label="Bench batch", channel="email", subject=SUBJECT, text_body=TEXT
    )
    preparation.prepare(delivery=batch, run_key=run_key, table="b")
    Message.objects.filter(delivery=batch, address="").update(address="x@example.com")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Message._meta.db_table)}")
    broker = args.broker or os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    _use_broker(broker)
    sink = Sink()
    web_port = _free_port()
    env = {
        **os.environ, "CELERY_BROKER_URL": broker,
        "EMAIL_URL": f"smtp://127.0.0.1:{sink.port}?timeout=30", "DELIVERY_SENDER": SENDER,
        "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING", "API_TRIGGER_RATE": "1000000/min",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }  # fmt: skip
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    web = _process(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", "1",
         *(["--threads", str(args.threads), "--worker-class", "gthread"]
           if args.threads > 1 else []),
         "--bind", f"127.0.0.1:{web_port}", "--log-level", "info"],
        env, "Booting worker",
    )  # fmt: skip
    _wait_port(web_port)
    processes = [web]
    result: dict[str, Any] = {}
    try:
        workers = [
            _worker("celery", env),
            _worker("priority", env, concurrency=args.priority_concurrency),
        ]
        processes += workers
        _post(web_port, path, token, {"recipient": {"contact_id": contact_ids[0]},
              "payload": {"order_id": "warm", "total": 0}}, "warm")  # fmt: skip
        sending.confirm(delivery=batch, actor=None)
        while not Message.objects.filter(delivery=batch, status="sent").exists():
            time.sleep(0.05)
        batch_before = Message.objects.filter(delivery=batch, status="sent").count()
        posted: dict[int, float] = {}
        interval = 1 / args.rate
        next_at = time.monotonic()
        for index in range(args.triggers):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            started = time.time()
            status, data = _post(
                web_port, path, token,
                {"recipient": {"contact_id": contact_ids[index % len(contact_ids)]},
                 "payload": {"order_id": f"L-{index}", "total": index}},
                f"lat-{uuid.uuid4()}",
            )  # fmt: skip
            if status != 202:
                raise SystemExit(f"Trigger refused: {status} {data}")
            posted[data["message_id"]] = started
        prefix = f"<d{definition.delivery_id}.m"
        deadline = time.monotonic() + 120
        accepted: dict[int, float] = {}
        while time.monotonic() < deadline:
            accepted = {}
            duplicates = 0
            for line in sink.file.read_text().splitlines():
                message_id, _, at = line.partition(" ")
                if message_id.startswith(prefix):
                    pk = int(message_id[len(prefix) :].split("@")[0])
                    duplicates += pk in accepted
                    accepted[pk] = float(at)
            if all(pk in accepted for pk in posted):
                break
            time.sleep(0.2)
        batch_after = Message.objects.filter(delivery=batch, status="sent").count()
        still_sending = Delivery.objects.get(pk=batch.pk).state == "sending"
        missing = [pk for pk in posted if pk not in accepted]
        latencies = [accepted[pk] - t for pk, t in posted.items() if pk in accepted]
        result["load_average"] = os.getloadavg()[0]
        result["latency"] = {
            "triggers": args.triggers, "rate_per_s": args.rate, "batch_messages": args.batch,
            "batch_sent_during": batch_after - batch_before, "batch_still_sending": still_sending,
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1), "missing": len(missing),
            "duplicates": duplicates, "priority_worker_processes": args.priority_concurrency,
        }  # fmt: skip
        print(
            f"trigger latency, {args.triggers} triggers at {args.rate:g}/s during a "
            f"{args.batch:,}-message batch ({batch_after - batch_before:,} batch messages sent "
            f"meanwhile, batch still sending: {still_sending}): p50 "
            f"{result['latency']['p50_ms']} ms, p95 {result['latency']['p95_ms']} ms, p99 "
            f"{result['latency']['p99_ms']} ms, max "
            f"{result['latency']['max_ms']} ms; missing {len(missing)}, duplicates {duplicates}"
        )
        _stop(workers)
        processes = [web]
        # Throughput: one web process, the workers stopped (messages wait in the broker).
        per_client = args.throughput // args.clients
        context = multiprocessing.get_context("fork")
        connection.close()
        with context.Pool(args.clients) as pool:
            cpu_before = _cpu_seconds(web.pid)
            started = time.perf_counter()
            outcomes = pool.starmap(
                _client,
                [(web_port, path, token, contact_ids[i * per_client : (i + 1) * per_client],
                  f"T{i}-{uuid.uuid4().hex[:6]}") for i in range(args.clients)],
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(web.pid) - cpu_before
        codes = [code for part in outcomes for code in part]
        accepted_count = codes.count(202)
        rate = accepted_count / elapsed
        result["throughput"] = {
            "triggers": len(codes), "accepted": accepted_count, "clients": args.clients,
            "seconds": round(elapsed, 2), "per_second": round(rate, 1),
            "gunicorn": f"1 worker process, {args.threads} thread(s)",
            "web_cpu_ms_per_trigger": round(cpu / max(1, len(codes)) * 1000, 2),
            "load_average": os.getloadavg()[0],
        }  # fmt: skip
        print(
            f"trigger acceptance, one gunicorn process ({args.threads} thread(s)), "
            f"{args.clients} clients: "
            f"{accepted_count}/{len(codes)} accepted in {elapsed:.2f} s = {rate:.0f}/s; the web "
            f"process used {cpu / max(1, len(codes)) * 1000:.1f} ms of CPU per trigger "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
    finally:
        _stop(processes)
        sink.stop()
        _use_broker(broker)  # flush what the stopped workers left in the broker
        targeting.drop_run(run_key)
        Message.objects.filter(delivery=batch).delete()
        batch.delete()
        campaign.delete()
        _purge(TriggerDefinition.objects.get(pk=definition.pk))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triggers.json").write_text(json.dumps(result, indent=2) + "\n")
    latency, through = result["latency"], result["throughput"]
    (RESULTS / "triggers.md").write_text(
        "| measure | figure | target |\n|---|---|---|\n"
        f"| trigger latency p95 (p50, p99, max), {latency['triggers']} triggers at "
        f"{latency['rate_per_s']:g}/s during a {latency['batch_messages']:,}-message batch "
        f"send | {latency['p95_ms']} ms ({latency['p50_ms']}, {latency['p99_ms']}, "
        f"{latency['max_ms']}) | <= 1000 ms |\n"
        f"| triggers accepted per second, one gunicorn process ({through['gunicorn']}) | "
        f"{through['per_second']} ({through['web_cpu_ms_per_trigger']} ms CPU each) | "
        ">= 200 |\n"
    )
    ok = latency["missing"] == 0 and latency["duplicates"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
