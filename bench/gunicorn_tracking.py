"""Gunicorn settings of the tracking benchmark, and the model for production
(``gunicorn portal.wsgi -c bench/gunicorn_tracking.py``, see the README): buffered engagement
events are written whenever a worker exits other than by SIGKILL.

- SIGTERM to the master (graceful stop): each worker finishes its requests, then
  ``worker_exit`` flushes.
- SIGINT or SIGQUIT (quick stop): the worker's ``worker_int`` flushes, then it exits (and
  ``worker_exit``/``atexit`` flush whatever came after).
- A worker timed out (SIGABRT): ``worker_abort`` flushes.
- SIGKILL (or the OOM killer): nothing runs; the worker loses what waited in its buffer, at
  most ENGAGEMENT_BUFFER_MS (200 ms) of hits and never much more than ENGAGEMENT_BUFFER_MAX
  (2,000) of them.

Worker class: measured with ``python -m bench.engagement --worker-class sync|gthread``
(README); the sync worker answers these hits at the highest rate per process, so it stays.
"""

import os

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))


def _flush(worker):
    from campaigns.engagement import tracking

    try:
        tracking.flush()
    except Exception:  # logged; the process is exiting anyway
        worker.log.exception("Engagement events: the flush at exit failed")


def worker_exit(server, worker):
    _flush(worker)


def worker_int(worker):
    _flush(worker)


def worker_abort(worker):
    _flush(worker)
