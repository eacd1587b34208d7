"""The Celery app. Queues, routes and the beat schedule live here, in one place.

Queues: ``default`` (CPU nodes: imports, batching, datasets, evaluation, guesses, housekeeping) and
``train`` (GPU nodes: fine-tunes). A worker started with ``-Q default,train`` serves both (the demo).
The per-task acknowledgement policy is written on each task in ``workers/``.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("priceloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("train"))
app.conf.task_routes = {"workers.training.*": {"queue": "train"}}

# Every periodic job of PriceLoop, with why it runs at that rate.
app.conf.beat_schedule: dict[str, dict[str, object]] = {
    # Proves the worker and beat are alive (the health page shows the last beat).
    "heartbeat": {"task": "workers.system.heartbeat", "schedule": 60.0},
}
app.autodiscover_tasks(["workers"], related_name="tasks")
