"""Gunicorn settings of the tracking benchmark (also a model for production): buffered
engagement events are written when a worker exits cleanly (``atexit`` does it too)."""


def worker_exit(server, worker):
    from campaigns.engagement import tracking

    tracking.flush()
