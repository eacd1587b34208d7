"""GPU tasks (the ``train`` queue: every ``workers.training.*`` task is routed there).

Policy of ``train_run``: late-acked with ``reject_on_worker_lost``, because training is idempotent
under the run's lease: the service claims the run with a compare-and-set update and trains only when
no live worker holds it, resuming from the last checkpoint. So a worker killed mid-run gets the task
redelivered, which waits out the dead worker's lease (``busy`` → retry) and resumes; a duplicate
delivery while the first worker lives does nothing. The soft time limit (``TRAIN_TIME_LIMIT_S``) ends
the run ``failed``; the hard limit a minute later stops a worker that ignores it.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from training.services.runs import run_train


@shared_task(
    bind=True,
    name="workers.training.train_run",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.TRAIN_TIME_LIMIT_S,
    time_limit=settings.TRAIN_TIME_LIMIT_S + 60,
    max_retries=20,
)
def train_run(self: Task, run_id: int) -> str:
    outcome = run_train(run_id=run_id)
    if outcome == "busy":
        raise self.retry(countdown=settings.RETRAIN_RUN_LEASE_S)
    return outcome
