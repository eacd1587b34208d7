"""CPU tasks of the retraining pipeline (the ``default`` queue): batch, dataset, evaluate, guess, sync.

Each task takes ids, calls one service, and states its failure policy:

- ``build_dataset``, ``evaluate_run``: late-acked with ``reject_on_worker_lost`` — idempotent, because
  the services claim the run by compare-and-set on (status, stage) and the dataset file is
  deterministic; a redelivery finds the step done and does nothing.
- ``guess_products``: acknowledged early — guessing twice would record duplicate guesses; a lost
  delivery is caught up by the ``guess_new_products`` beat (products without a guess).
- ``batch_resolved_labels``, ``recover_runs``, ``guess_new_products``: beat jobs, idempotent by
  construction (they act on what is pending now); early ack — the next beat repeats them.
- ``langsmith_sync``: early ack, retried with backoff on network errors; its cursor advances only
  after a successful send, so a retry resends the same rows (never blocks annotation).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from training import langsmith_sync as langsmith
from training.exceptions import NotEnoughLabelsError
from training.services.batches import batch_create_from_resolved
from training.services.guesses import champion_guess_products
from training.services.recovery import runs_recover
from training.services.registry import run_evaluate_and_gate
from training.services.runs import dataset_build


@shared_task(
    name="workers.pipeline.build_dataset",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=600,
    time_limit=660,
)
def build_dataset(run_id: int) -> int | None:
    dataset = dataset_build(run_id=run_id)
    return dataset.pk if dataset else None


@shared_task(
    name="workers.pipeline.evaluate_run",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.TRAIN_TIME_LIMIT_S,
    time_limit=settings.TRAIN_TIME_LIMIT_S + 60,
)
def evaluate_run(run_id: int) -> dict[str, Any] | None:
    return run_evaluate_and_gate(run_id=run_id)


@shared_task(
    name="workers.pipeline.guess_products",
    soft_time_limit=settings.TRAIN_TIME_LIMIT_S,
    time_limit=settings.TRAIN_TIME_LIMIT_S + 60,
)
def guess_products(version_id: int | None = None, product_ids: list[int] | None = None) -> int:
    return champion_guess_products(version_id=version_id, product_ids=product_ids)


@shared_task(name="workers.pipeline.guess_new_products", soft_time_limit=1800, time_limit=1860)
def guess_new_products() -> int:
    return champion_guess_products(reguess_pool=False)


@shared_task(name="workers.pipeline.batch_resolved_labels", soft_time_limit=120, time_limit=150)
def batch_resolved_labels() -> int | None:
    try:
        return batch_create_from_resolved().pk
    except NotEnoughLabelsError:
        return None


@shared_task(name="workers.pipeline.recover_runs", soft_time_limit=60, time_limit=90)
def recover_runs() -> dict[str, list[int]]:
    return runs_recover().to_dict()


@shared_task(
    name="workers.pipeline.langsmith_sync",
    autoretry_for=(langsmith.LangSmithSendError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=8,
    soft_time_limit=120,
    time_limit=150,
)
def langsmith_sync() -> dict[str, int]:
    return langsmith.sync_all()
