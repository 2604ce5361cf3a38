"""Sending benchmark: email sent by real Celery worker processes (1, then 2, concurrency 1
each, over a Redis broker) to an SMTP sink in its own process, against bare smtplib sending the
same messages to the same sink (one connection per process, as many processes as workers).
Duplicates and losses are counted at the sink by Message-ID.

The product's time runs from the send's confirmation (chunks enqueued) until the delivery is
finished; it includes claiming, rendering, building each message, SMTP, the in-flight marks
and the heartbeat. The baseline's time runs from reading its recipients until its last
connection is closed."""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from campaigns import targeting
from campaigns.delivery import preparation, sending
from campaigns.models import Campaign, Contact, Delivery, Message
from portal.celery import app as celery_app
from portal.models import Entity

ROOT = Path(__file__).resolve().parents[1]
NAME = "Bench sending"
SUBJECT = "Hello {{ contact.first_name }}, news from {{ entity.name }}"
TEXT = "Dear {{ contact.first_name }} {{ contact.last_name }}, our offers are in store."
SENDER = "Marketing <marketing@localhost>"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_port(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("The SMTP sink did not start.")


class Sink:
    """The SMTP sink process and the Message-IDs it received."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.file = Path(settings.VAR_DIR) / f"bench-sink-{self.port}.txt"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", str(self.port), str(self.file)], cwd=ROOT
        )
        _wait_port(self.port)

    def clear(self) -> None:
        self.file.write_text("")

    def cpu(self) -> float:
        """The sink process's CPU seconds so far (user + system): over a run's seconds, how
        busy the sink was (near 100% of one core: the sink, not the sender, sets the pace)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def received(self, prefix: str) -> Counter:
        return Counter(line for line in self.file.read_text().split() if line.startswith(prefix))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.file.unlink(missing_ok=True)


class Workers:
    """``count`` Celery worker processes (prefork, concurrency 1), started and ready."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.processes: list[subprocess.Popen] = []
        for _ in range(count):
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "prefork",
                 "--concurrency", "1", "--loglevel", "INFO", "--without-heartbeat",
                 "--without-gossip", "--without-mingle", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            self.processes.append(process)
        for process in self.processes:
            ready, lines = threading.Event(), []

            def read(process: subprocess.Popen = process, ready=ready, lines=lines) -> None:
                for line in process.stdout:
                    lines.append(line)
                    if " ready." in line:
                        ready.set()

            threading.Thread(target=read, daemon=True).start()
            if not ready.wait(60):
                self.stop()
                raise RuntimeError("A worker did not start:\n" + "".join(lines))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def _use_broker(url: str) -> None:
    """This process enqueues the chunk tasks on the workers' broker (no eager mode)."""
    from kombu import pools

    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(url).flushdb()  # the bench's own database number
    celery_app.conf.broker_url = url
    celery_app.conf.task_always_eager = False
    pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def _smtplib_part(port: int, rows: list[tuple]) -> None:
    """Bare smtplib: one connection, each message built with the standard library."""
    smtp = smtplib.SMTP("127.0.0.1", port)
    for pk, email, first_name, last_name, entity in rows:
        note = EmailMessage()
        note["From"], note["To"] = SENDER, email or "x@example.com"
        note["Subject"] = f"Hello {first_name}, news from {entity}"
        note["Message-ID"] = f"<raw.{pk}@bench>"
        note.set_content(f"Dear {first_name} {last_name}, our offers are in store.")
        smtp.send_message(note)
    smtp.quit()


def measure_sending(*, sends: int, repeat: int, workers: tuple[int, ...] = (1, 2),
                    broker: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Rows for the bench table: one per number of workers, product against smtplib."""
    central = Entity.objects.get(kind="central")
    Campaign.objects.filter(name=NAME).delete()
    campaign = Campaign.objects.create(name=NAME, kind="parent", entity=central)
    few = list(Contact.objects.order_by("id").values_list("id", flat=True)[:sends])
    run_key = "bench-sending"
    targeting.drop_run(run_key)
    targeting.materialise(
        Contact.objects.filter(pk__in=few), dimension="contact", run_key=run_key, name="s"
    )
    broker = broker or os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER)
    _use_broker(broker)
    sink = Sink()
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "EMAIL_URL": f"smtp://127.0.0.1:{sink.port}?timeout=30",
        "DELIVERY_SENDER": SENDER,
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        for count in workers:
            rows.append(_measure(count, sends, repeat, campaign, run_key, sink, env, problems))
    finally:
        sink.stop()
        targeting.drop_run(run_key)
        campaign.delete()
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit("Sending lost or duplicated messages.")
    return rows


def _measure(count: int, sends: int, repeat: int, campaign: Campaign, run_key: str, sink: Sink,
             env: dict[str, str], problems: list[str]) -> dict[str, Any]:  # fmt: skip
    """The product and smtplib in turns (product, smtplib, product, smtplib…), so that both
    see the same load on a shared machine; medians of ``repeat`` runs each. The workers are
    warmed up first by a small send that is not timed (a worker's first chunk loads the URL
    configuration and the templates, once per process)."""
    name = f"email sending, {count} worker{'s' if count > 1 else ''}"
    product: list[float] = []
    baseline: list[float] = []
    busy: dict[str, list[float]] = {"product": [], "smtplib": []}
    sent = 0
    pool = Workers(count, env)
    try:
        _send_once(campaign, run_key, sink, min(sends, 100 * count), name, None)
        for _ in range(repeat):
            cpu = sink.cpu()
            seconds, sent = _send_once(campaign, run_key, sink, sends, name, problems)
            product.append(seconds)
            busy["product"].append((sink.cpu() - cpu) / seconds)
            sink.clear()
            cpu = sink.cpu()
            seconds = _smtplib(count, sends, run_key, sink.port)
            baseline.append(seconds)
            busy["smtplib"].append((sink.cpu() - cpu) / seconds)
            time.sleep(0.3)
            received = sink.received("<raw.")
            if len(received) != sends or any(n > 1 for n in received.values()):
                problems.append(f"{name}: smtplib delivered {len(received)} of {sends}")
    finally:
        pool.stop()
    product_s, raw_s = statistics.median(product), statistics.median(baseline)
    rate, raw_rate = sent / product_s, sends / raw_s
    sink_busy = {key: statistics.median(values) for key, values in busy.items()}
    turns = ", ".join(f"{raw / mine:.2f}" for mine, raw in zip(product, baseline, strict=True))
    print(
        f"{name:<42} product {rate:7.0f}/s ({rate / count:.0f}/s per worker)   smtplib "
        f"{raw_rate:7.0f}/s   ratio {rate / raw_rate:.2f}x   sent {sent}, duplicates and "
        f"losses counted at the sink; sink CPU {sink_busy['product']:.0%} (product), "
        f"{sink_busy['smtplib']:.0%} (smtplib) of one core; rate ratios of the "
        f"{repeat} turns: {turns}"
    )
    return {
        "operation": name, "product_ms": round(product_s * 1000, 1),
        "raw_ms": round(raw_s * 1000, 1), "ratio": round(product_s / raw_s, 2),
        "rows": sent, "raw_rows": sends, "rate": f"{rate:,.0f}/s", "raw_rate": f"{raw_rate:,.0f}/s",
        "rate_ratio": round(rate / raw_rate, 2),
        "sink_cpu": {key: round(value, 2) for key, value in sink_busy.items()},
    }  # fmt: skip


def _send_once(campaign: Campaign, run_key: str, sink: Sink, sends: int, name: str,
               problems: list[str] | None) -> tuple[float, int]:  # fmt: skip
    """One delivery of ``sends`` messages through the workers: its seconds (from the send's
    confirmation to the delivery finished) and messages sent, checked at the sink."""
    delivery = Delivery.objects.create(
        campaign=campaign, label="Bench send", channel="email", subject=SUBJECT, text_body=TEXT,
    )  # fmt: skip
    preparation.prepare(delivery=delivery, run_key=run_key, table="s")
    extra = Message.objects.filter(delivery=delivery).order_by("id").values_list("id", flat=True)
    Message.objects.filter(delivery=delivery, id__in=list(extra[sends:])).delete()
    Message.objects.filter(delivery=delivery, address="").update(address="x@example.com")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Message._meta.db_table)}")
    sink.clear()
    started = time.perf_counter()
    sending.confirm(delivery=delivery, actor=None)  # chunk tasks enqueued on commit
    deadline = time.monotonic() + max(120, sends / 50)
    while Delivery.objects.get(pk=delivery.pk).state != "sent":
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: the delivery did not finish in time.")
        time.sleep(0.05)  # (a closer look would load the database the workers use)
    seconds = time.perf_counter() - started
    sent = Message.objects.filter(delivery=delivery, status="sent").count()
    time.sleep(0.3)  # the sink's last writes
    received = sink.received(f"<d{delivery.pk}.")
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    losses = sent - len(received)
    if problems is not None and (duplicates or losses or sent != sends):
        problems.append(f"{name}: {sent}/{sends} sent, {duplicates} duplicates, "
                        f"{losses} losses at the sink")  # fmt: skip
    Message.objects.filter(delivery=delivery).delete()
    delivery.delete()
    return seconds, sent


def _smtplib(count: int, sends: int, run_key: str, port: int) -> float:
    """``count`` processes of bare smtplib, the recipients split between them."""
    started = time.perf_counter()
    rows = list(
        targeting.work_table(run_key, "s")
        .order_by("contact_id")
        .values_list("contact_id", "contact__email", "contact__first_name",
                     "contact__last_name", "contact__entity__name")[:sends]
    )  # fmt: skip
    context = multiprocessing.get_context("fork")
    parts = [context.Process(target=_smtplib_part, args=(port, rows[i::count]))
             for i in range(count)]  # fmt: skip
    for part in parts:
        part.start()
    for part in parts:
        part.join()
    return time.perf_counter() - started
