"""``RETRAIN_NPROC=2``: the train step runs the engine under torchrun (2 gloo processes on CPU), and the
run, its page and the version record how many processes trained it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import client_for
from tests.training.conftest import FAST, run_ready_to_train
from training import paths
from training.engine.artifacts import read_version
from training.models import ModelVersion, ProgressPoint
from training.services.runs import run_train

pytestmark = pytest.mark.slow

SHORT = {**FAST, "train": {**FAST["train"], "max_steps": 6, "save_steps": 3}}


@pytest.mark.django_db
def test_it_trains_a_run_in_two_processes_and_records_it(
    pipeline_settings: Any, reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_settings.RETRAIN_NPROC = 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the processes' torch threads on a small CI machine
    run = run_ready_to_train(hyperparameters=SHORT)

    assert run_train(run_id=run.pk, enqueue_next=False) == "trained"

    run.refresh_from_db()
    assert run.result["processes"] == 2
    assert run.result["device"] == "cpu"
    assert run.result["steps"] == 6
    # The live curve got every step, once: only the main process reports progress.
    steps = ProgressPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True)
    assert list(steps) == [1, 2, 3, 4, 5, 6]
    version = ModelVersion.objects.get(pk=run.candidate_id)
    assert version.manifest["train_result"]["processes"] == 2
    assert read_version(paths.resolve(version.artifact_path)).manifest["train_result"]["processes"] == 2
    assert "launching 2 training processes" in run.logs

    page = client_for(reviewer).get(f"/review/runs/{run.pk}/")
    assert page.status_code == 200
    assert "trained by 2 cpu processes" in page.content.decode()
