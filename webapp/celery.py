"""The Celery app. Queues, routes and the beat schedule live here, in one place.

Queues by resource: ``default`` (CPU nodes: imports, batching, datasets, housekeeping) and ``train``
(GPU nodes: everything that loads a model — fine-tunes, evaluations, guesses). A worker started with
``-Q default,train`` serves both (the demo).
The per-task acknowledgement policy is written on each task in ``workers/``.
"""

from __future__ import annotations

import os

from celery import Celery
from django.conf import settings
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("priceloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Explicit routing keys: without them both queues bind the default exchange with the key "default", so a
# message published to that exchange and key would reach both.
app.conf.task_queues = (Queue("default", routing_key="default"), Queue("train", routing_key="train"))
_GPU = {"queue": "train", "routing_key": "train"}
app.conf.task_routes = {
    "workers.training.*": _GPU,
    # These load the whole model: on a CPU worker of a split deployment they would crawl or run out of memory.
    "workers.pipeline.evaluate_run": _GPU,
    "workers.pipeline.guess_products": _GPU,
    "workers.pipeline.guess_new_products": _GPU,
}

# Every periodic job of PriceLoop, with why it runs at that rate.
BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # Proves the worker and beat are alive (the health page shows the last beat).
    "heartbeat": {"task": "workers.system.heartbeat", "schedule": 60.0},
    # The same through the `train` queue: /healthz shows whether a training worker takes tasks. A beat it
    # has not taken within 2 minutes expires (a busy worker renews its run's lease instead).
    "heartbeat-train": {
        "task": "workers.system.heartbeat",
        "schedule": 60.0,
        "args": ("train-worker",),
        "options": {**_GPU, "expires": 120},
    },
    # Resolved labels become a retrain batch once there are RETRAIN_MIN_BATCH_SIZE of them.
    "retrain-batch": {
        "task": "workers.pipeline.batch_resolved_labels",
        "schedule": float(settings.RETRAIN_BATCH_EVERY_S),
    },
    # Recovery (training/services/recovery.py): sends the step of every run that has no live task (an
    # approval made while the broker was down, a lost message) and retries a run whose worker died.
    "retrain-recover-runs": {
        "task": "workers.pipeline.recover_runs",
        "schedule": float(settings.RUN_RECOVER_EVERY_S),
    },
    # Newly imported products get a champion guess (catches up any lost guess task).
    "guess-new-products": {"task": "workers.pipeline.guess_new_products", "schedule": 120.0},
    # LangSmith: send new guesses and annotation feedback (a no-op unless configured).
    "langsmith-sync": {"task": "workers.pipeline.langsmith_sync", "schedule": 30.0},
    # Leases past their TTL go back to the queue; every 30 s so an abandoned item waits at most TTL + 30 s.
    "annotation-leases-expire": {"task": "workers.annotation.leases_expire", "schedule": 30.0},
}
app.conf.beat_schedule = BEAT_SCHEDULE
app.autodiscover_tasks(["workers"], related_name="tasks")
