"""Run the web server and a Celery worker (with beat) side by side; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from portal import demo


class Command(BaseCommand):
    help = "Start the portal (runserver) with a real Celery worker and beat beside it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="host:port to listen on")
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
        parser.add_argument("--no-worker", action="store_true", help="start the web server only")

    def handle(self, *args: Any, addr: str, concurrency: int, no_worker: bool, **opts: Any):
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        processes: list[subprocess.Popen] = []
        if not no_worker:
            processes.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        "portal",
                        "worker",
                        "--beat",
                        "--loglevel",
                        "INFO",
                        "--concurrency",
                        str(concurrency),
                        "--schedule",
                        settings.CELERY_BEAT_SCHEDULE_FILENAME,
                    ],
                    cwd=settings.BASE_DIR,
                    env=env,
                )
            )
            # API-triggered messages: a worker of their own, never behind batch chunks.
            processes.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        "portal",
                        "worker",
                        "-Q",
                        "priority",
                        "--hostname",
                        "priority@%h",
                        "--loglevel",
                        "INFO",
                        "--concurrency",
                        "1",
                    ],
                    cwd=settings.BASE_DIR,
                    env=env,
                )
            )
        processes.append(
            subprocess.Popen(
                [python, manage, "runserver", addr, "--noreload"], cwd=settings.BASE_DIR, env=env
            )
        )
        site = f"http://{addr}"
        self.stdout.write("")
        for line in demo.login_lines(site):
            self.stdout.write(self.style.SUCCESS(line))
        self.stdout.write(
            "Web server, Celery worker (with beat) and priority worker running; Ctrl-C stops them."
        )
        try:
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            self.stderr.write("A process stopped; stopping the others.")
        except KeyboardInterrupt:
            self.stdout.write("Stopping…")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for process in processes:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
