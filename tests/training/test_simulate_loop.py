"""The learning-loop simulation, short: two rounds of scripted annotators on a synthetic catalogue.

``tests/benchmarks/simulate_loop.py --url`` drives a live server on the test database with a real
Celery worker process (PostgreSQL + Redis in CI, SQLite + the filesystem broker locally), as its users
would: imports, v1 from a seed set, gold, next/submit, batches, runs, versions. What a user would
notice is checked: both rounds complete, each batch is approved or rejected on its checks, no promoted
candidate is worse on the test split than the champion it replaced, the spammer is paused and none of
its labels is in an approved batch, and the report (JSON, markdown, PNG) is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.training.conftest import FAST, WEAK_V1
from tests.worker_process import ROOT, _database_url, celery_worker
from training.engine.synthetic import write_jsonl
from training.models import BatchItem, BatchStatus

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "benchmarks" / "simulate_loop.py"
# Gold every other item and a verdict after three: the spammer meets enough gold within its first
# round's items to be paused (the default 10% / 5 would need ~50 of its items).
SIM_SETTINGS: dict[str, Any] = {
    "RETRAIN_RECIPE": "tiny",
    "RETRAIN_RECIPE_OVERRIDES": json.dumps({**FAST, "train": {**FAST["train"], "max_steps": 20}}),
    "RETRAIN_MIN_BATCH_SIZE": 1,
    "RETRAIN_EVAL_MAX_ITEMS": 0,
    "GATE_MIN_DELTA": 0.0,
    "GATE_ALPHA": 0.2,
    "ANNOTATION_OVERLAP": 1,
    "ANNOTATION_BLIND_SHARE": 0.0,
    "ANNOTATION_GOLD_RATE": 0.5,
    "ANNOTATION_GOLD_MIN_SEEN": 3,
    "ANNOTATION_GOLD_ACCURACY_MIN": 0.6,
}


@pytest.mark.django_db(transaction=True)
def test_it_runs_two_rounds_of_scripted_annotators_through_the_api(
    live_server: Any, settings: Any, tmp_path: Path, tiny_base: Path
) -> None:
    for name, value in SIM_SETTINGS.items():
        setattr(settings, name, value)
    settings.BASE_MODEL = str(tiny_base)
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    env = {name: str(value) for name, value in SIM_SETTINGS.items()}
    env.update(
        {
            "BASE_MODEL": str(tiny_base),
            "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
            "OMP_NUM_THREADS": "1",
        }
    )
    items = write_jsonl(tmp_path / "items.jsonl", 300, seed=21)
    extra = write_jsonl(tmp_path / "extra.jsonl", 20, seed=22)
    out = tmp_path / "out"
    command = [
        sys.executable, str(SCRIPT), "--items", str(items), "--rounds", "2", "--labels-per-round", "25",
        "--annotators", "careful=3,sloppy=1,spammer=1", "--seed", "5", "--seed-size", "40",
        "--gold-size", "8", "--score-extra", str(extra), "--url", live_server.url, "--out", str(out),
        "--bootstrap-overrides", json.dumps(WEAK_V1), "--timeout", "240",
    ]  # fmt: skip
    script_env = {
        **os.environ,
        **env,
        "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PRICELOOP_DATA_DIR": str(settings.DATA_DIR),
    }
    with celery_worker(extra_env=env):
        done = subprocess.run(command, cwd=ROOT, env=script_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    result = json.loads((out / "simulation.json").read_text())
    assert result["complete"] is True
    assert result["items"] == "items.jsonl"
    assert result["base"] == "tiny"
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["labels"] >= 25
        batch = r["batch"]
        assert batch["decision"] in ("approved", "rejected"), batch
        assert "checks" in batch
        if batch["decision"] == "rejected":
            assert batch["reason"]
        else:
            assert r["run"]["status"] == "succeeded", r["run"]
            assert r["gate"]["reasons"]
            assert r["candidate"]["test"]["mae"] > 0
        if r["promoted"]:
            assert r["candidate"]["test"]["mae"] <= r["champion_before"]["test"]["mae"]
            assert r["champion"]["name"] == r["candidate"]["name"]
        assert r["champion"]["test"]["mae"] <= r["champion_before"]["test"]["mae"]
        assert r["baselines"]["ridge"]["test"]["mae"] > 0
        assert r["champion"]["extra"]["n"] == 20
    assert any(r["batch"]["decision"] == "approved" for r in rounds)

    # The spammer was paused, and none of its labels is in a batch that was approved.
    spammer = User.objects.get(username="sim-spammer-1")
    assert spammer.annotator_status.paused
    assert result["summary"]["spammers_paused"] is True
    approved = BatchItem.objects.filter(batch__status=BatchStatus.APPROVED)
    assert approved.exists()
    assert not [i for i in approved.values_list("annotator_ids", flat=True) if spammer.pk in i]
    assert result["summary"]["spammer_labels_in_approved_batches"] == 0

    # The script scores the test split itself with the same predictor settings: the same figures.
    assert result["summary"]["mae_api_vs_local_max_diff"] < 0.5

    assert (out / "error-per-round.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "simulation.md").read_text()
    assert "| 2 |" in report
    assert "![error per round](error-per-round.png)" in report
