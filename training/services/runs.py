"""Training runs: dataset, fine-tune, cancel, and the reaper for runs whose worker died.

Every step claims the run with a compare-and-set update on (status, stage), so a redelivered task finds
the step done (or owned by a live worker) and does nothing. Training holds a lease (``heartbeat``,
renewed at every step); a second delivery of the same run trains only after that lease expired,
i.e. after the first worker died, and then resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotation.models import Product, SeedLabel, Split
from training import paths, pipeline, selectors, storage
from training.exceptions import BrokerUnavailable, RunStateError
from training.models import (
    RUN_FINAL_STATES,
    AuditAction,
    AuditEvent,
    BatchItem,
    BatchStatus,
    ModelVersion,
    ProgressPoint,
    RunStage,
    RunStatus,
    TrainingDataset,
    TrainingRun,
    VersionStatus,
)
from training.recipes import run_recipe
from training.services.registry import version_register
from training.services.run_log import append_log as _append_log
from training.services.run_log import failure_cause, lease_kept, run_fail
from webapp.roles import Role, has_role

logger = logging.getLogger(__name__)


def _finish_cancelled(run_id: int) -> bool:
    ended = (
        TrainingRun.objects.filter(pk=run_id, cancel_requested=True)
        .exclude(status__in=RUN_FINAL_STATES)
        .update(status=RunStatus.CANCELLED, finished=timezone.now())
    )
    if ended:
        _append_log(run_id, "cancelled")
    return bool(ended)


def run_cancel(*, reviewer: User, run_id: int) -> TrainingRun:
    """Ask a run to stop. A queued run stops at once; a training one at its next step."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in RUN_FINAL_STATES:
            raise RunStateError(f"run {run_id} already ended ({run.status}); there is nothing to cancel.")
        if run.stage == RunStage.EVALUATE:
            raise RunStateError(
                f"run {run_id} has finished training and is being evaluated; it cannot stop now."
            )
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested", "updated"])
        AuditEvent.objects.create(action=AuditAction.RUN_CANCEL, actor=reviewer, run=run)
        if run.status == RunStatus.QUEUED:
            _finish_cancelled(run_id)
    run.refresh_from_db()
    return run


def _label_rows(batch_ids: list[int]) -> list[Any]:
    from training.engine.datasets import LabelRow

    items = (
        BatchItem.objects.filter(batch_id__in=batch_ids, excluded=False)  # a reviewer's exclusions stay out
        .select_related("product", "guess_version")
        .order_by("batch_id", "id")
    )
    rows = []
    for item in items:
        guess = float(item.guess_price) if item.guess_price is not None else None
        price = float(item.price) if item.price is not None else (guess if guess is not None else 0.0)
        rows.append(
            LabelRow(
                product_id=item.product.external_id,
                text=item.product.text,
                price=price,
                guess_price=guess,
                verdict=item.verdict,  # type: ignore[arg-type]
                codebook_version=item.codebook_version,
                batch_id=item.batch_id,
                guess_model_version=item.guess_version.number if item.guess_version else None,
            )
        )
    return rows


def _seed_rows() -> list[Any]:
    """The named seed set's labels (``SeedLabel``), as rows a replay can draw from."""
    from training.engine.datasets import LabelRow

    return [
        LabelRow(
            product_id=seed.product.external_id,
            text=seed.product.text,
            price=float(seed.price),
            guess_price=None,
            verdict="correct",
        )
        for seed in SeedLabel.objects.select_related("product").order_by("product_id")
    ]


def _test_ids() -> set[str]:
    return set(Product.objects.filter(split=Split.TEST).values_list("external_id", flat=True))


def _load_tokenizer(base_model: str) -> Any:
    from transformers import AutoTokenizer

    from training.engine.model_io import base_check

    base_check(base_model, timeout=float(settings.HUB_TIMEOUT_S))  # an unreachable hub id fails in seconds
    return AutoTokenizer.from_pretrained(base_model)


def dataset_build(*, run_id: int) -> TrainingDataset | None:
    """Build the run's JSONL (its batch, plus the replay share of earlier approved batches).

    Refusals (a test-split product, nothing trainable) fail the run with the engine's message.
    """
    from training.engine.datasets import BUILDERS, EmptyDatasetError, TestSplitLeak, mix_replay
    from training.engine.model_io import BaseModelError, base_ref
    from training.engine.prompts import COMPLETION_RESERVE

    claimed = TrainingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED, cancel_requested=False).update(
        status=RunStatus.RUNNING, stage=RunStage.DATASET, started=timezone.now(), heartbeat=timezone.now()
    )
    run = TrainingRun.objects.select_related("batch").get(pk=run_id)
    if not claimed:
        if run.status == RunStatus.QUEUED and run.cancel_requested:
            _finish_cancelled(run_id)
            return None
        if not (run.status == RunStatus.RUNNING and run.stage == RunStage.DATASET):
            return None  # done already (a redelivery) or ended
    if run.batch_id is None:
        raise RunStateError(f"run {run_id} has no batch; bootstrap runs build their dataset themselves.")
    _append_log(run_id, f"building the {run.recipe} dataset of batch {run.batch_id}")
    try:
        # The base first: lineage names it exactly, and a base that cannot be used fails the run now.
        base = base_ref(run.base_model, timeout=float(settings.HUB_TIMEOUT_S))
        TrainingRun.objects.filter(pk=run_id).update(base_revision=base.revision)
        recipe = run_recipe(
            recipe_name=run.recipe_name,
            method=run.recipe,
            base_model=run.base_model,
            overrides=run.hyperparameters,
        )
        rows = _label_rows([run.batch_id])
        replay_ids: list[int] = []
        share = float(settings.RETRAIN_REPLAY_SHARE)
        if settings.RETRAIN_FROM == "base":
            # A fresh adapter learns every label so far; old rows first, so a product's newest label wins.
            replay_ids = list(
                selectors.approved_batches_before(run.batch_id).order_by("pk").values_list("pk", flat=True)
            )
            rows = _seed_rows() + _label_rows(replay_ids) + rows
            _append_log(run_id, f"from the base: the seed set and {len(replay_ids)} earlier approved batches")
        elif share > 0:
            replay_ids = list(
                TrainingRun.objects.filter(
                    batch__status=BatchStatus.APPROVED, status=RunStatus.SUCCEEDED, batch_id__lt=run.batch_id
                ).values_list("batch_id", flat=True)
            )
            # Earlier labels are the approved batches' and the seed set v1 was trained on: both came
            # from people, and a candidate that sees only its own batch forgets the rest.
            old = _seed_rows() + _label_rows(replay_ids)
            rows = mix_replay(rows, old, share, seed=run_id)
            replay_ids = sorted({r.batch_id for r in rows if r.batch_id not in (None, run.batch_id)})
        tokenizer = _load_tokenizer(run.base_model)
        out = paths.dataset_dir(run_id) / f"{run.recipe}.jsonl"
        manifest = BUILDERS[run.recipe](
            rows,
            out,
            test_ids=_test_ids(),
            tokenizer=tokenizer,
            max_prompt_tokens=recipe.train.max_length - COMPLETION_RESERVE,
            style=recipe.model.prompt_style,
        )
    except (TestSplitLeak, EmptyDatasetError, BaseModelError, ValueError) as exc:
        run_fail(run_id=run_id, error=f"dataset refused: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - any other cause ends the run at once, named, with its trace logged
        run_fail(run_id=run_id, error=f"dataset build failed: {type(exc).__name__}: {exc}", exc_info=exc)
        return None
    described = manifest.to_dict()
    seed_rows = sum(1 for r in rows if r.batch_id is None)
    if seed_rows:  # lineage names every source of prices: the seed set as much as the batches
        described["seed_set"] = {"name": selectors.seed_set_name(), "rows": seed_rows}
    with transaction.atomic():
        dataset, _ = TrainingDataset.objects.update_or_create(
            run=run,
            defaults={
                "kind": run.recipe,
                "path": storage.dataset_publish(out, sha256=manifest.sha256),
                "sha256": manifest.sha256,
                "rows": manifest.rows,
                "manifest": described,
            },
        )
        dataset.replay_batches.set(replay_ids)
        # The lease is free (None) for the first training attempt to claim.
        moved = TrainingRun.objects.filter(
            pk=run_id, status=RunStatus.RUNNING, stage=RunStage.DATASET
        ).update(stage=RunStage.TRAIN, heartbeat=None)
        if moved:
            transaction.on_commit(lambda: pipeline.run_step_send_quietly(run_id))
    _append_log(run_id, f"dataset ready: {manifest.rows} rows, sha256 {manifest.sha256[:12]}…")
    return dataset


class _Heartbeat:
    """Progress sink and stop check for the engine: stores points and reads cancel. The lease is renewed
    by ``run_log.lease_kept`` around the whole step, not here on every step."""

    def __init__(self, run_id: int, *, interval_s: float = 1.0) -> None:
        self.run_id = run_id
        self.interval_s = interval_s
        self._last_check = 0.0
        self._stop = False

    def progress(self, event: Any) -> None:
        ProgressPoint.objects.update_or_create(
            run_id=self.run_id,
            step=int(event.step),
            defaults={
                "total_steps": int(getattr(event, "total_steps", 0) or 0),
                "loss": _finite(getattr(event, "loss", None)),
                "learning_rate": _finite(getattr(event, "learning_rate", None)),
                "tokens_per_s": _finite(getattr(event, "tokens_per_s", None)),
            },
        )
        self._check_cancel()

    def should_stop(self) -> bool:
        if time.monotonic() - self._last_check >= self.interval_s:
            self._check_cancel()
        return self._stop

    def _check_cancel(self) -> None:
        self._last_check = time.monotonic()
        self._stop = bool(TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists())


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def run_train(*, run_id: int, enqueue_next: bool = True) -> str:
    """Fine-tune the run's dataset; on success register the candidate version and queue its evaluation.

    Returns what happened: ``trained``, ``busy`` (another live worker holds the run: retry later),
    ``skipped`` (nothing to do: done or ended), ``cancelled`` or ``failed``.
    """
    from training.engine.trainer import TrainingCancelled, train

    now = timezone.now()
    lease_cutoff = now - timedelta(seconds=settings.RETRAIN_RUN_LEASE_S)
    claimed = (
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, stage=RunStage.TRAIN)
        .filter(Q(heartbeat__isnull=True) | Q(heartbeat__lt=lease_cutoff))
        .update(heartbeat=now, attempts=F("attempts") + 1)
    )
    run = TrainingRun.objects.select_related("parent").get(pk=run_id)
    if not claimed:
        if run.status == RunStatus.RUNNING and run.stage == RunStage.TRAIN:
            if run.cancel_requested and _finish_cancelled(run_id):
                return "cancelled"
            return "busy"
        return "skipped"
    if run.cancel_requested:
        _finish_cancelled(run_id)
        return "cancelled"
    with lease_kept(run_id):  # loading the base or a checkpoint can take minutes without a step
        heartbeat = _Heartbeat(run_id)
        try:
            recipe = run_recipe(
                recipe_name=run.recipe_name,
                method=run.recipe,
                base_model=run.base_model,
                overrides=run.hyperparameters,
            )
            parent = run.parent
            if parent is None and run.batch_id is not None and settings.RETRAIN_FROM == "champion":
                parent = ModelVersion.objects.filter(
                    status=VersionStatus.CHAMPION, base_model=run.base_model
                ).first()
                if parent is not None:
                    TrainingRun.objects.filter(pk=run_id).update(parent=parent)
            parent_dir = (  # on a GPU worker of a split deployment: fetched from the store, verified
                storage.version_local(parent.artifact_path, manifest=parent.manifest)
                if parent is not None
                else None
            )
            dataset = TrainingDataset.objects.get(run_id=run_id)
            _append_log(
                run_id,
                f"training attempt {run.attempts} ({recipe.train.method}, {dataset.rows} rows) from "
                f"{parent.name if parent else 'the base'}",
            )
            options: dict[str, Any] = {
                "base": run.base_model,
                "parent_adapter": parent_dir,
                "progress": heartbeat.progress,
                "resume": True,
                "should_stop": heartbeat.should_stop,
            }
            dataset_path = storage.dataset_local(dataset.path, sha256=dataset.sha256)
            work_dir = paths.run_work_dir(run_id)
            processes = int(settings.RETRAIN_NPROC)
            if processes > 1:
                # DDP on this worker's GPUs: the engine CLI under torchrun, N processes (engine/launch.py).
                from training.engine.launch import train_processes

                _append_log(run_id, f"launching {processes} training processes (torchrun)")
                result = train_processes(recipe, dataset_path, work_dir, processes=processes, **options)
            else:
                result = train(recipe, dataset_path, work_dir, **options)
            if TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists():
                _finish_cancelled(run_id)
                return "cancelled"
            numbers = {
                "steps": int(result.steps),
                "final_loss": _finite(result.final_loss),
                "tokens": int(result.tokens),
                "seconds": float(result.seconds),
                "resumed_from_step": int(getattr(result, "resumed_from_step", 0) or 0),
                # How many processes (GPUs, on CUDA) trained it; the version's manifest keeps these numbers.
                "processes": int(result.processes),
                "device": str(result.device),
            }
            TrainingRun.objects.filter(pk=run_id).update(result=numbers)
            version = version_register(
                run_id=run_id, adapter_dir=Path(result.adapter_dir), recipe=recipe, enqueue_next=enqueue_next
            )
        except TrainingCancelled:
            _finish_cancelled(run_id)
            return "cancelled"
        except Exception as exc:  # noqa: BLE001 - any error (time limit included) ends the run as failed
            run_fail(run_id=run_id, error=f"training failed: {failure_cause(exc)}", exc_info=exc)
            return "failed"
        _append_log(
            run_id,
            f"trained: {numbers['steps']} steps, loss {numbers['final_loss']}, {numbers['processes']} "
            f"process(es) on {numbers['device']}; candidate {version.name}",
        )
        return "trained"


def run_retry(*, reviewer: User, run_id: int) -> TrainingRun:
    """Start a failed or cancelled run again from where it stopped (audited); also a running run whose
    worker went silent (``run_worker_silent_s``: killed, its host down), without waiting for recovery.

    A run with a candidate version is evaluated again; one with a dataset trains again, resuming from
    its last checkpoint; any other builds its dataset again. So a failed run never locks its batch's
    labels out of training. The automatic retry budget (``RUN_MAX_RETRIES``) starts afresh.
    ``BrokerUnavailable`` after the commit means the retry is recorded and starts once the broker is back.
    """
    if not has_role(reviewer, Role.REVIEWER):
        raise PermissionError("only reviewers may retry training runs.")
    try:
        with transaction.atomic():
            run = _run_reset_for_retry(reviewer=reviewer, run_id=run_id)
            transaction.on_commit(lambda: pipeline.run_step_send(run_id))
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(
            f"the retry of run {run_id} is recorded, but {exc}; it starts by itself once it is back "
            "(GET /healthz shows each component's state)."
        ) from exc
    run.refresh_from_db()
    return run


def run_worker_silent_s(run: TrainingRun) -> int | None:
    """Seconds since a running run's worker last renewed its lease, when that is longer than the lease
    (``RETRAIN_RUN_LEASE_S``): the worker is gone, since a live one renews it every quarter lease
    (``run_log.lease_kept``). None otherwise (not running, renewed lately, or waiting for a worker)."""
    if run.status != RunStatus.RUNNING or run.heartbeat is None:
        return None
    silent = (timezone.now() - run.heartbeat).total_seconds()
    return int(silent) if silent > settings.RETRAIN_RUN_LEASE_S else None


def _run_reset_for_retry(*, reviewer: User, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED) and run_worker_silent_s(run) is None:
        raise RunStateError(
            f"run {run_id} is {run.status}; only a failed or cancelled run can be retried, or a running "
            f"one whose worker is silent for over RETRAIN_RUN_LEASE_S ({settings.RETRAIN_RUN_LEASE_S} s)."
        )
    if run.batch_id is None:
        raise RunStateError(
            f"run {run_id} is the bootstrap run of v1; run `manage.py bootstrap_champion` again instead."
        )
    if run.candidate_id is not None:
        status, stage = RunStatus.RUNNING, RunStage.EVALUATE
    elif TrainingDataset.objects.filter(run_id=run_id).exists():
        status, stage = RunStatus.RUNNING, RunStage.TRAIN
    else:
        status, stage = RunStatus.QUEUED, RunStage.DATASET
    previous_error = run.error
    TrainingRun.objects.filter(pk=run_id).update(
        status=status,
        stage=stage,
        error="",
        finished=None,
        cancel_requested=False,
        heartbeat=None,
        enqueued_at=None,
        retries=0,
    )
    AuditEvent.objects.create(
        action=AuditAction.RUN_RETRY,
        actor=reviewer,
        run=run,
        batch_id=run.batch_id,
        subject=f"run:{run_id}",
        numbers={"from_status": run.status, "stage": stage},
        message=f"retried after: {previous_error}" if previous_error else "retried",
    )
    _append_log(run_id, f"retried by {reviewer.get_username()} from the {stage} step")
    return run
