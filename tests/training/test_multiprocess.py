"""``RETRAIN_NPROC=2``: the train step runs the engine under torchrun (2 gloo processes on CPU), and the
run, its page and the version record how many processes trained it."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from annotation.models import PriceFlag, Product, Split
from tests.conftest import client_for
from tests.training.conftest import FAST, import_catalogue
from training import paths
from training.engine.artifacts import read_version
from training.models import ModelVersion, ProgressPoint, RunStage, RunStatus, TrainingDataset, TrainingRun
from training.services.runs import run_train

pytestmark = pytest.mark.slow

SHORT = {**FAST, "train": {**FAST["train"], "max_steps": 6, "save_steps": 3}}


def _run_ready_to_train() -> TrainingRun:
    from transformers import AutoTokenizer

    from training.engine.datasets import LabelRow, build_sft

    import_catalogue()
    run = TrainingRun.objects.create(
        recipe_name="tiny",
        base_model=settings.BASE_MODEL,
        hyperparameters=SHORT,
        status=RunStatus.RUNNING,
        stage=RunStage.TRAIN,
        started=timezone.now(),
    )
    products = Product.objects.filter(split=Split.POOL, price__isnull=False, price_flag=PriceFlag.OK)
    rows = [
        LabelRow(
            product_id=p.external_id, text=p.text, price=float(p.price), guess_price=None, verdict="accept"
        )
        for p in products
    ]
    out = paths.dataset_dir(run.pk) / "sft.jsonl"
    manifest = build_sft(
        rows,
        out,
        test_ids=set(),
        tokenizer=AutoTokenizer.from_pretrained(settings.BASE_MODEL),
        max_prompt_tokens=92,
    )
    TrainingDataset.objects.create(
        run=run, kind="sft", path=paths.relative(out), sha256=manifest.sha256, rows=manifest.rows
    )
    return run


@pytest.mark.django_db
def test_it_trains_a_run_in_two_processes_and_records_it(
    pipeline_settings: Any, reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_settings.RETRAIN_NPROC = 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the processes' torch threads on a small CI machine
    run = _run_ready_to_train()

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
