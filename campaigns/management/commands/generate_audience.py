"""Generate a large synthetic audience quickly (COPY on PostgreSQL) for benchmarks."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from campaigns import synthetic


class Command(BaseCommand):
    help = "Add N synthetic contacts with bookings and subscriptions (deterministic per seed)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--contacts", type=int, default=100_000)
        parser.add_argument("--bookings-per-contact", type=float, default=3.0)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--prefix", default="S", help="external id prefix (default S)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["contacts"] < 1:
            raise CommandError("--contacts must be at least 1.")
        started = time.perf_counter()
        try:
            result = synthetic.generate(
                contacts=options["contacts"],
                bookings_per_contact=options["bookings_per_contact"],
                seed=options["seed"],
                prefix=options["prefix"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"{result.contacts} contacts, {result.bookings} bookings, "
            f"{result.subscriptions} subscriptions in {elapsed:.1f} s"
        )
