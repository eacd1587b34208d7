"""``kill -9`` during training: the run resumes from its checkpoint with no operator action, and no
version folder without matching checksums is ever listed.

Two kills: the pool process that trains (the worker's main process sees it die, and
``reject_on_worker_lost`` puts the task back: it waits out the dead process's lease, then resumes
from the last checkpoint), and the whole worker with its pool (its message stays unacknowledged until
the broker's visibility timeout; the recovery beat of another worker sees the lease lapse, retries the
run, and a fresh worker resumes it from the last checkpoint and registers the version).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings

from tests.training.conftest import FAST, run_ready_to_train
from tests.worker_process import celery_worker, wait_for
from training import paths, pipeline
from training.engine.artifacts import read_version
from training.models import ModelVersion, ProgressPoint, RetrainBatch, RunStage, RunStatus, TrainingRun

pytestmark = pytest.mark.slow

LONG = {**FAST, "train": {**FAST["train"], "max_steps": 80, "save_steps": 5, "learning_rate": 1e-3}}


def _env() -> dict[str, str]:
    return {
        "BASE_MODEL": settings.BASE_MODEL,
        "RETRAIN_RECIPE_OVERRIDES": json.dumps(FAST),
        "RETRAIN_RUN_LEASE_S": "3",
        "OMP_NUM_THREADS": "1",
    }


def _listed_versions_verify() -> None:
    """Every version row's folder verifies; every visible folder under versions/ verifies too."""
    for version in ModelVersion.objects.all():
        read_version(paths.resolve(version.artifact_path))
    root = Path(settings.ARTIFACT_ROOT) / "versions"
    if root.exists():
        for folder in root.iterdir():
            if not folder.name.startswith("."):  # ".run-N.tmp-…" is a write in progress, never listed
                read_version(folder)


def _pool_child(worker: Any) -> psutil.Process:
    children = psutil.Process(worker.pid).children(recursive=True)
    assert children, "the worker has no pool process"
    return children[0]


@pytest.mark.django_db(transaction=True)
def test_it_resumes_a_run_whose_training_process_was_killed(pipeline_settings: Any) -> None:
    run = run_ready_to_train(hyperparameters=LONG)
    with celery_worker(queues="train", extra_env=_env()) as worker:
        pipeline.run_step_send(run.pk)
        wait_for(
            lambda: ProgressPoint.objects.filter(run=run, step__gte=12).exists(),
            timeout=240,
            what="training past its second checkpoint",
        )
        os.kill(_pool_child(worker).pid, signal.SIGKILL)
        _listed_versions_verify()
        assert not ModelVersion.objects.exists()
        done = wait_for(
            lambda: (
                TrainingRun.objects.filter(pk=run.pk).exclude(stage=RunStage.TRAIN).first()
                or TrainingRun.objects.filter(pk=run.pk, status=RunStatus.FAILED).first()
            ),
            timeout=420,
            what="the retried training to finish",
        )
    assert done.status == RunStatus.RUNNING, done.error
    assert done.stage == RunStage.EVALUATE
    assert done.attempts == 2
    assert done.result["steps"] == 80
    assert done.result["resumed_from_step"] >= 10  # from the last checkpoint, not from scratch
    assert done.candidate is not None
    _listed_versions_verify()


@pytest.mark.django_db(transaction=True)
def test_it_resumes_a_run_whose_whole_worker_was_killed_on_a_fresh_worker(pipeline_settings: Any) -> None:
    run = run_ready_to_train(hyperparameters=LONG)
    batch = RetrainBatch.objects.create(content_sha256="9" * 64)  # recovery acts on runs of batches
    TrainingRun.objects.filter(pk=run.pk).update(batch=batch)
    with celery_worker(queues="train", extra_env=_env()) as worker:
        pipeline.run_step_send(run.pk)
        wait_for(
            lambda: ProgressPoint.objects.filter(run=run, step__gte=12).exists(),
            timeout=240,
            what="training past its second checkpoint",
        )
        os.killpg(worker.pid, signal.SIGKILL)  # kill -9 of the worker and its pool
        killed = time.monotonic()
        worker.wait(timeout=30)
    last_step = ProgressPoint.objects.filter(run=run).order_by("-step").values_list("step", flat=True)[0]
    _listed_versions_verify()
    assert not ModelVersion.objects.exists()
    # A fresh worker with its beat: the lease lapses (RETRAIN_RUN_STALE_S), recovery retries the run.
    fresh = {**_env(), "RETRAIN_RUN_STALE_S": "10", "RUN_RECOVER_EVERY_S": "1"}
    with celery_worker(extra_env=fresh, beat=True):
        wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, attempts=2).exists(),
            timeout=180,
            what="the fresh worker to resume training",
        )
        resumed = time.monotonic() - killed
        done = wait_for(
            lambda: (
                TrainingRun.objects.filter(pk=run.pk, candidate__isnull=False).first()
                or TrainingRun.objects.filter(pk=run.pk, status=RunStatus.FAILED).first()
            ),
            timeout=420,
            what="the resumed run to register its version",
        )
        registered = time.monotonic() - killed
    print(f"\nworker killed -> training resumed: {resumed:.1f} s; -> version registered: {registered:.1f} s")
    assert done.error == ""
    assert done.retries == 1
    assert "retry 1 of 2 from its last checkpoint" in done.logs
    assert done.result["steps"] == 80
    assert 10 <= done.result["resumed_from_step"] <= last_step  # the last checkpoint, not from scratch
    assert ModelVersion.objects.filter(pk=done.candidate_id).exists()
    _listed_versions_verify()
