"""``kill -9`` during training: the run is retried from its checkpoint (or failed by the reaper), and
no version folder without matching checksums is ever listed.

Two kills: the pool process that trains (the worker's main process sees it die, and
``reject_on_worker_lost`` puts the task back: it waits out the dead process's lease, then resumes
from the last checkpoint), and the whole worker (its message stays unacknowledged until the broker's
visibility timeout; the beat's reaper fails the run first).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings

from tests.training.conftest import FAST, run_ready_to_train
from tests.worker_process import celery_worker, wait_for
from training import paths
from training.engine.artifacts import read_version
from training.models import ModelVersion, ProgressPoint, RunStage, RunStatus, TrainingRun
from training.services.runs import enqueue_train, runs_fail_stale

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
        enqueue_train(run.pk)
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
def test_it_fails_a_run_whose_whole_worker_was_killed(pipeline_settings: Any) -> None:
    run = run_ready_to_train(hyperparameters=LONG)
    with celery_worker(queues="train", extra_env=_env()) as worker:
        enqueue_train(run.pk)
        wait_for(
            lambda: ProgressPoint.objects.filter(run=run, step__gte=3).exists(),
            timeout=240,
            what="training to start",
        )
        os.killpg(worker.pid, signal.SIGKILL)  # kill -9 of the worker and its pool
        worker.wait(timeout=30)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # nobody could say otherwise yet
    assert runs_fail_stale(stale_after_s=0) == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "worker lost" in run.error
    assert not ModelVersion.objects.exists()
    _listed_versions_verify()
