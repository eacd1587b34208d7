"""The retraining loop, in order: each step, the task that runs it and the queue it runs on.

    step      task (queue)                              what it does                sent after
    dataset   workers.pipeline.build_dataset  (default)  labels → JSONL + manifest   batches.batch_approve
    train     workers.training.train_run      (train)    QLoRA from last checkpoint  runs.dataset_build
    evaluate  workers.pipeline.evaluate_run   (train)    test split, gate, promote   registry.version_register
    guess     workers.pipeline.guess_products (train)    champion guesses the pool   registry (a promotion)

``default`` is the CPU workers' queue, ``train`` the GPU workers' (everything that loads a model).

The services in ``training/services`` call this module after their transaction commits
(``transaction.on_commit(lambda: pipeline.run_step_send(run_id))``) and never import ``workers/``:
tasks are sent by name, so the Django side does not load Celery task modules. A run's stage says which
step it needs; ``run_step_send`` sends that step's task. When the broker cannot take it,
``BrokerUnavailable`` says so and the run stays recorded: ``training.services.recovery`` (a beat job)
sends every run whose step has no live task, so an approval is durable intent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError

from training.exceptions import BrokerUnavailable
from training.models import RunStage, RunStatus, TrainingRun
from webapp.celery import app

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    task: str
    queue: str


CPU, GPU = "default", "train"
DATASET = Step("workers.pipeline.build_dataset", CPU)
TRAIN = Step("workers.training.train_run", GPU)
EVALUATE = Step("workers.pipeline.evaluate_run", GPU)
GUESS = Step("workers.pipeline.guess_products", GPU)

# The step a run at each stage waits for (a run at ``done`` waits for nothing).
STEP_OF_STAGE = {RunStage.DATASET: DATASET, RunStage.TRAIN: TRAIN, RunStage.EVALUATE: EVALUATE}


def send(step: Step, *, args: list[object] | None = None, kwargs: dict[str, object] | None = None) -> str:
    """Publish ``step``'s task on its queue; its id. ``BrokerUnavailable`` when the broker refuses.

    A message not started within ``RUN_RESEND_AFTER_S`` expires (the worker drops it): by then the
    recovery job has sent a fresh one, so a run never has a pile of stale messages behind a long job.
    """
    try:
        result = app.send_task(
            step.task,
            args=args,
            kwargs=kwargs,
            queue=step.queue,
            routing_key=step.queue,
            expires=float(settings.RUN_RESEND_AFTER_S),
        )
    except (OperationalError, ConnectionError, OSError) as exc:
        # The client hears which component is down; the driver's text (host, port) goes to the log.
        logger.warning("broker unavailable: %s not sent", step.task, exc_info=exc)
        raise BrokerUnavailable("the task queue (broker) is unreachable") from exc
    return str(result.id or "")


def run_step_send(run_id: int) -> str | None:
    """Send the task of the step the run is waiting for; its id (``None`` when it waits for nothing).

    Recorded on the run (``celery_task_id``, ``enqueued_at``) so the recovery job knows a task is live.
    """
    run = TrainingRun.objects.only("status", "stage").get(pk=run_id)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return None
    step = STEP_OF_STAGE.get(RunStage(run.stage))
    if step is None:
        return None
    task_id = send(step, args=[run_id])
    TrainingRun.objects.filter(pk=run_id).update(celery_task_id=task_id, enqueued_at=timezone.now())
    return task_id


def run_step_send_quietly(run_id: int) -> None:
    """``run_step_send`` for a worker's hand-over to the next step: a broker outage only logs (the
    recovery job sends the step once the broker is back)."""
    try:
        run_step_send(run_id)
    except BrokerUnavailable:
        logger.warning("run %s: next step not sent; the recovery job will send it", run_id)


def guess_send(version_id: int) -> None:
    """The new champion guesses the pool (the ``guess_new_products`` beat catches up a lost send)."""
    try:
        send(GUESS, kwargs={"version_id": version_id})
    except BrokerUnavailable:
        logger.warning("guesses of version %s not sent; the guess beat catches up", version_id)
