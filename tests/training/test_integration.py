"""The whole loop with a real Celery worker process (both queues) on the test database and broker:

import (API) → v1 bootstrap → guesses (worker) → annotations (API) → batch + approve (API) → dataset,
train (tiny base, 4-bit QLoRA on CPU), evaluate + gate (worker) → v2 champion; the API lists it with
metrics and its adapter downloads with a matching sha256. Then a second candidate trained on wrong
labels on purpose is rejected by the gate and the champion stays.

On PostgreSQL + Redis when DATABASE_URL / CELERY_BROKER_URL point at them (CI), else SQLite + the
filesystem broker.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from annotation.models import Guess, Product, SeedLabel, Split, Task
from tests.conftest import client_for
from tests.training.conftest import catalogue_jsonl, catalogue_rows
from tests.worker_process import celery_worker, wait_for
from training.engine.artifacts import read_tar
from training.models import ModelVersion, RunStatus, TrainingRun, VersionStatus
from training.services.bootstrap import version_bootstrap_v1

pytestmark = pytest.mark.slow

# QLoRA: 4-bit base (bitsandbytes on CPU) + LoRA. A gentler, longer tune than FAST's 40 steps at 2e-2:
# on this machine on 2026-12-01, 2e-2 and 1e-2 left v2 *worse* than v1 on the test split (MAE $126.7 /
# $125.9 vs $122.9; the commit before the day's changes failed the same way, so the cause is the
# environment, not established which part). 80 steps at 5e-3 give v2 MAE $117.6 (bootstrap p = 0.0005),
# the same on SQLite and PostgreSQL.
# Since the base learns text only (no prices), the tiny recipe's own settings (LoRA on every projection,
# 3e-3, four epochs: docs/learning-loop.md) are what v2 trains with; QLoRA's 4-bit path on CPU.
# Enough steps that each adapter visibly moves the tiny base's price distribution.
STEPS = {"train": {"max_steps": 60, "learning_rate": 5e-3}}
RECIPE: dict[str, Any] = {**STEPS, "quant": {"mode": "4bit"}}


def _worker_env() -> dict[str, str]:
    return {
        "BASE_MODEL": settings.BASE_MODEL,
        "RETRAIN_RECIPE": settings.RETRAIN_RECIPE,
        "RETRAIN_RECIPE_OVERRIDES": settings.RETRAIN_RECIPE_OVERRIDES,
        "GATE_MIN_DELTA": str(settings.GATE_MIN_DELTA),
        "GATE_ALPHA": str(settings.GATE_ALPHA),
        "ANNOTATION_OVERLAP": "1",
        "ANNOTATION_BLIND_SHARE": "0",
        "ANNOTATION_GOLD_RATE": "0",
        "OMP_NUM_THREADS": "1",
    }


def _import(client: Any, rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    upload = io.BytesIO(catalogue_jsonl(rows))
    upload.name = name
    response = client.post("/api/v1/products/import", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["bad"] == 0, body["errors"][:3]
    return body


def _annotate_all(client: Any, price_of: Any) -> int:
    done = 0
    while True:
        response = client.post("/api/v1/annotate/next", format="json")
        if response.status_code == 204:
            return done
        assert response.status_code == 200, response.content
        item = response.json()
        product = Product.objects.get(external_id=item["product"]["external_id"])
        submit = client.post(
            "/api/v1/annotate/submit",
            {
                "assignment_id": item["id"],
                "verdict": "correct",
                "corrected_price": str(price_of(product)),
                "confirm_price": True,  # the true price, confirmed when the page asks
                "seconds_spent": 2.5,
            },
            format="json",
        )
        assert submit.status_code == 200, submit.content
        done += 1


def _batch_and_approve(reviewer_client: Any) -> int:
    created = reviewer_client.post("/api/v1/batches/create", {"min_size": 5}, format="json")
    assert created.status_code == 201, created.content
    batch_id = created.json()["id"]
    # The synthetic loop serves no gold items, so the gold check fails: approve with a written override.
    override = {"override_reason": "integration test: no gold items in the synthetic catalogue"}
    approved = reviewer_client.post(f"/api/v1/batches/{batch_id}/approve", override, format="json")
    assert approved.status_code == 200, approved.content
    return approved.json()["id"]


def _finished(run_id: int) -> TrainingRun | None:
    run = TrainingRun.objects.select_related("candidate").get(pk=run_id)
    return run if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED) else None


@pytest.mark.django_db(transaction=True)
def test_it_closes_the_loop_with_a_real_worker(
    pipeline_settings: Any, annotator: Any, reviewer: Any, api_client_user: Any
) -> None:
    pipeline_settings.RETRAIN_RECIPE_OVERRIDES = json.dumps(RECIPE)
    started = time.monotonic()
    reviewer_client = client_for(reviewer)
    annotator_client = client_for(annotator)
    reader = client_for(api_client_user)
    rows = catalogue_rows()
    first, second = rows[:200], rows[200:]

    with celery_worker(queues="default,train", extra_env=_worker_env()) as worker:
        _import(reviewer_client, first, "first.jsonl")
        # A v1 that is plainly wrong (its seed set prices 30 products at $900), so that the batch of true
        # prices must make v2 better: this test is about the pipeline, not the tiny model's learning.
        seed_file = Path(settings.DATA_DIR) / "wrong-seed-labels.jsonl"
        seeds = Product.objects.filter(split=Split.POOL).order_by("id")[:30]
        seed_file.write_text("".join(json.dumps({"id": p.external_id, "price": 900.0}) + "\n" for p in seeds))
        v1 = version_bootstrap_v1(seed_labels=seed_file, overrides=STEPS)
        assert v1.status == VersionStatus.CHAMPION
        assert v1.manifest["seed_set"]["name"] == "wrong-seed-labels.jsonl"  # its lineage names the set
        assert v1.manifest["seed_set"]["rows"] == 30
        # The bootstrap run (no dataset step) records the base exactly as its version does.
        assert v1.manifest["base_revision"].startswith("sha256:")
        assert TrainingRun.objects.get(candidate=v1).base_revision == v1.manifest["base_revision"]

        # The promotion of v1 queued its guesses: the worker guesses the pool and queues the tasks.
        pool = Product.objects.filter(split=Split.POOL).count()
        wait_for(
            lambda: Guess.objects.filter(model_version=v1).count() >= pool,
            timeout=180,
            what="v1's guesses on the pool",
        )
        assert not Guess.objects.filter(product__split=Split.TEST).exists()  # the test split is never queued
        loop_started = time.monotonic()
        labelled = _annotate_all(annotator_client, price_of=lambda p: p.price)
        assert labelled == pool - SeedLabel.objects.count()  # v1's seed set is labelled already

        run_id = _batch_and_approve(reviewer_client)
        run = wait_for(lambda: _finished(run_id), timeout=480, what="the first run to finish")
        loop_seconds = time.monotonic() - loop_started
        full_seconds = time.monotonic() - started
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.gate["promote"] is True, run.gate
        assert run.points.count() >= 1
        assert run.attempts == 1

        champion = reader.get("/api/v1/versions/champion").json()
        assert champion["name"] == "v2"
        assert champion["metrics"]["mae"] < ModelVersion.objects.get(number=1).metrics["mae"]
        assert champion["lineage"]["batch"]["id"] == run.batch_id
        # RETRAIN_FROM=base (the default): a fresh adapter on the base, trained on the seed set and the batch.
        assert champion["lineage"]["parent"] is None
        assert champion["lineage"]["dataset"]["rows"] == SeedLabel.objects.count() + run.batch.size
        assert champion["lineage"]["dataset"]["seed_set"]["rows"] == SeedLabel.objects.count()
        assert champion["manifest"]["files"]["adapter_model.safetensors"]["sha256"]
        listed = reader.get("/api/v1/versions?status=champion").json()
        assert [v["name"] for v in listed["results"]] == ["v2"]

        download = reader.get("/api/v1/versions/2/download")
        assert download.status_code == 200
        body = b"".join(download.streaming_content)
        assert hashlib.sha256(body).hexdigest() == download["X-Checksum-SHA256"] == champion["sha256"]
        assert download["Content-Disposition"].startswith("attachment;")
        assert download["X-Content-Type-Options"] == "nosniff"
        files = read_tar(body)
        assert (
            hashlib.sha256(files["v2/adapter_model.safetensors"]).hexdigest()
            == (champion["manifest"]["files"]["adapter_model.safetensors"]["sha256"])
        )

        # A worse candidate on purpose: new products labelled $999 whatever they are.
        _import(reviewer_client, second, "second.jsonl")
        new_pool = Product.objects.filter(split=Split.POOL, external_id__in=[r["id"] for r in second]).count()
        second_ids = [r["id"] for r in second]
        wait_for(  # the new products guessed by v2 and queued (v2 may re-guess older ones meanwhile)
            lambda: (
                Task.objects.filter(
                    product__external_id__in=second_ids, guess__model_version__number=2
                ).count()
                >= new_pool
            ),
            timeout=180,
            what="v2's guesses on the new products, queued",
        )
        assert _annotate_all(annotator_client, price_of=lambda p: Decimal("999.00")) == new_pool
        bad_run_id = _batch_and_approve(reviewer_client)
        bad_run = wait_for(lambda: _finished(bad_run_id), timeout=480, what="the second run to finish")
        assert worker.poll() is None, "the worker died"

    assert bad_run.status == RunStatus.SUCCEEDED, bad_run.error
    assert bad_run.gate["promote"] is False
    assert bad_run.candidate.status == VersionStatus.REJECTED
    assert reader.get("/api/v1/versions/champion").json()["name"] == "v2"
    assert ModelVersion.objects.filter(status=VersionStatus.CHAMPION).count() == 1
    print(  # the loop times the closing note reports (pytest -s shows them)
        f"\nloop annotate → batch → approve → dataset → train → gate → v2: {loop_seconds:.1f} s; "
        f"import → v1 → guesses → … → v2: {full_seconds:.1f} s; "
        f"whole test (with the rejected v3): {time.monotonic() - started:.1f} s"
    )
