"""Test helpers: email backends that fail on purpose, sends started at the same moment."""

from __future__ import annotations

import threading
import time

from django.core.mail.backends.base import BaseEmailBackend


class FailingEmailBackend(BaseEmailBackend):
    """Every send raises, like an SMTP server that refuses the connection."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("SMTP server refused the connection")


def confirm_at_the_same_moment(deliveries, monkeypatch, *, hold: float = 0.5, timeout: float = 60):
    """Start the sends of ``deliveries`` in threads released together, each held inside its
    transaction for ``hold`` seconds after applying its rules, so that the other start arrives
    while the first is still open. Returns the exceptions raised (none expected)."""
    from django.db import connection, transaction

    from campaigns.delivery import sending, typology

    apply_rules = typology.apply_rules

    def slow(delivery, rules):
        counts = apply_rules(delivery, rules)
        time.sleep(hold)
        return counts

    monkeypatch.setattr(typology, "apply_rules", slow)
    barrier = threading.Barrier(len(deliveries))
    errors: list[Exception] = []

    def start(delivery) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                sending.confirm(delivery=delivery, actor=None)
        except Exception as exc:  # returned to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
