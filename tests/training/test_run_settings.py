"""Training settings per run: chosen at approval from an allowed list, validated before the run exists,
stored on the run, recorded by the version and always used to score it; the leaderboard shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.conftest import client_for
from tests.training.factories import make_version
from training import pipeline
from training.models import (
    AuditAction,
    AuditEvent,
    Evaluation,
    ModelVersion,
    RetrainBatch,
    TrainingDataset,
    TrainingRun,
    VersionStatus,
)
from training.recipes import version_predictor_settings
from training.services import batches as batch_services
from training.services.evaluation import evaluation_of_version, split_fingerprint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings.ARTIFACT_ROOT = tmp_path
    settings.RETRAIN_RECIPE = "tiny"
    settings.RETRAIN_RECIPE_OVERRIDES = ""
    settings.BASE_MODEL = "no-such-base"  # not loaded: approval only builds the recipe
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here
    # Quality checks are another test's business: pass them.
    monkeypatch.setattr(batch_services, "batch_checks", lambda batch: [])


def _batch() -> RetrainBatch:
    return RetrainBatch.objects.create(content_sha256="c" * 64, size=0, stats={"rows": 0})


def test_approval_stores_the_chosen_settings_on_the_run_and_the_audit_row(reviewer: User) -> None:
    batch = _batch()
    response = client_for(reviewer).post(
        f"/api/v1/batches/{batch.pk}/approve",
        {
            "kind": "dpo",
            "quantization": "8bit",
            "prompt_style": "base",
            "epochs": 3,
            "learning_rate": 2e-4,
            "lora_rank": 8,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    run = TrainingRun.objects.get(batch=batch)
    assert run.recipe == "dpo"
    assert run.hyperparameters == {
        "quant": {"mode": "8bit"},
        "model": {"prompt_style": "base"},
        "train": {"epochs": 3.0, "max_steps": -1, "learning_rate": 2e-4},
        "lora": {"r": 8, "alpha": 16},
    }
    assert response.json()["hyperparameters"] == run.hyperparameters
    event = AuditEvent.objects.get(action=AuditAction.BATCH_APPROVE)
    assert event.numbers["run_settings"] == {
        "kind": "dpo",
        "quantization": "8bit",
        "prompt_style": "base",
        "epochs": 3.0,
        "learning_rate": 2e-4,
        "lora_rank": 8,
    }


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"quantization": "2bit"}, "quantization", "2bit"),
        ({"lora_rank": 7}, "lora_rank", "7"),
        ({"learning_rate": 5}, "learning_rate", "less than or equal to 0.1"),
        ({"epochs": 0}, "epochs", "greater than or equal to 0.01"),
        ({"prompt_style": "poem"}, "prompt_style", "poem"),
        ({"kind": "rlhf"}, "kind", "rlhf"),
    ],
)
def test_a_setting_outside_the_allowed_list_is_a_400_naming_it_and_no_run_starts(
    reviewer: User, body: dict[str, Any], field: str, words: str
) -> None:
    batch = _batch()
    response = client_for(reviewer).post(f"/api/v1/batches/{batch.pk}/approve", body, format="json")
    assert response.status_code == 400
    messages = response.json()["error"]["fields"][field]
    assert words in messages[0]
    assert not TrainingRun.objects.exists()
    assert RetrainBatch.objects.get(pk=batch.pk).status == "pending_review"


def test_settings_the_engine_refuses_together_are_a_400_naming_the_field(
    reviewer: User, settings: Any
) -> None:
    # FP8 guessing is configured globally; 8-bit weights cannot be turned into FP8 ones.
    settings.RETRAIN_RECIPE_OVERRIDES = json.dumps({"speed": {"mode": "fast"}, "predict": {"matmul": "fp8"}})
    batch = _batch()
    response = client_for(reviewer).post(
        f"/api/v1/batches/{batch.pk}/approve", {"quantization": "8bit"}, format="json"
    )
    assert response.status_code == 400
    assert "contradicts quant.mode=8bit" in response.json()["error"]["fields"]["quantization"][0]
    assert not TrainingRun.objects.exists()


def test_the_approval_form_takes_the_settings_and_shows_a_bad_one(reviewer: User) -> None:
    batch = _batch()
    client = Client()
    client.force_login(reviewer)
    page = client.get(reverse("training:batch", args=[batch.pk])).content.decode()
    assert '<option value="8bit">8-bit</option>' in page
    bad = client.post(
        reverse("training:batch_approve", args=[batch.pk]),
        {"kind": "sft", "learning_rate": "fast"},
        follow=True,
    )
    assert "learning_rate=&#x27;fast&#x27; is not a number" in bad.content.decode()
    assert not TrainingRun.objects.exists()
    client.post(
        reverse("training:batch_approve", args=[batch.pk]),
        {"kind": "sft", "quantization": "bf16", "lora_rank": "16", "epochs": "", "learning_rate": ""},
    )
    run = TrainingRun.objects.get(batch=batch)
    assert run.hyperparameters == {
        "quant": {"mode": "none"},
        "model": {"dtype": "bfloat16"},
        "lora": {"r": 16, "alpha": 32},
    }


def _recorded_version(tmp_path: Path, number: int, quantization: str) -> ModelVersion:
    version = make_version(tmp_path, number, evaluate=False)
    from training.engine.config import load_recipe
    from training.recipes import predictor_settings_of

    recipe = load_recipe("tiny", {"quant": {"mode": quantization}})
    version.manifest = {
        **version.manifest,
        "recipe_name": "tiny",
        "recipe": recipe.to_dict(),
        "predictor": predictor_settings_of(recipe, "tiny"),
    }
    version.save(update_fields=["manifest"])
    return version


def test_a_version_is_always_scored_with_its_own_settings(tmp_path: Path, settings: Any) -> None:
    from annotation.models import Product

    version = _recorded_version(tmp_path, 1, "8bit")
    products = [Product.objects.create(external_id="t-1", title="t", text="t", price=10, split="test")]
    own = version_predictor_settings(version)
    assert own["quantization"] == "8bit"
    Evaluation.objects.create(
        version=version,
        split_fingerprint=split_fingerprint(products, own),
        predictor_settings=own,
        product_ids=["t-1"],
        truths=[10.0],
        guesses=[12.0],
        metrics={"mae": 2.0},
    )
    # The global setting changes afterwards: the old version keeps its settings and its cached score
    # (a re-score would load "tiny-base", which does not exist, and fail).
    settings.RETRAIN_RECIPE_OVERRIDES = json.dumps({"quant": {"mode": "4bit"}, "predict": {"k": 5}})
    assert version_predictor_settings(ModelVersion.objects.get(pk=version.pk)) == own
    evaluation = evaluation_of_version(version=ModelVersion.objects.get(pk=version.pk), products=products)
    assert evaluation.metrics == {"mae": 2.0}
    assert evaluation.predictor_settings["quantization"] == "8bit"


def test_the_leaderboard_shows_each_versions_settings_and_pairs_quantization_twins(
    reviewer: User, tmp_path: Path
) -> None:
    four = _recorded_version(tmp_path, 1, "4bit")
    eight = _recorded_version(tmp_path, 2, "8bit")
    ModelVersion.objects.filter(pk=eight.pk).update(status=VersionStatus.CHAMPION)
    for version in (four, eight):
        Evaluation.objects.create(
            version=version,
            split_fingerprint=version.name,
            predictor_settings=version.manifest["predictor"],
            product_ids=["a", "b"],
            truths=[10.0, 20.0],
            guesses=[12.0, 25.0],
            metrics={"mae": 3.5, "n": 2, "rmsle": 0.2, "hit_rate": 1.0, "mae_ci95": [2, 5]},
        )
    client = Client()
    client.force_login(reviewer)
    page = client.get(reverse("training:versions")).content.decode()
    assert '<li class="quantization"><strong>4-bit</strong></li>' in page
    assert '<li class="quantization"><strong>8-bit</strong></li>' in page
    assert "same but the quantization: v2" in page
    assert "same but the quantization: v1" in page
    assert 'id="metric-definitions"' in page
    assert '<abbr title="share of green guesses' in page
    body = client_for(reviewer).get("/api/v1/versions/2").json()
    assert body["settings"]["quantization"] == "8bit"


def _versions_with_runs(tmp_path: Path, n: int) -> None:
    for number in range(1, n + 1):
        version = make_version(tmp_path, number, status=VersionStatus.CHAMPION if number == n else "archived")
        batch = RetrainBatch.objects.create(content_sha256=f"{number:064d}", size=1, stats={"rows": 1})
        run = TrainingRun.objects.create(
            batch=batch, recipe_name="tiny", base_model="tiny", candidate=version
        )
        dataset = TrainingDataset.objects.create(run=run, kind="sft", path="x", sha256="d" * 64, rows=3)
        dataset.replay_batches.set([batch])


@pytest.mark.parametrize("n", [1, 6])
def test_the_leaderboard_reads_a_fixed_number_of_queries(
    reviewer: User, tmp_path: Path, n: int, django_assert_num_queries: Any
) -> None:
    from training import selectors

    _versions_with_runs(tmp_path, n)
    # versions+runs+batches+datasets, replayed batches, evaluations, gate overrides, baselines
    with django_assert_num_queries(5):
        board = selectors.leaderboard()
    batches = list(RetrainBatch.objects.order_by("id").values_list("pk", flat=True))
    assert [row["lineage"]["dataset"]["replay_batches"] for row in board["versions"]] == [
        [b] for b in batches
    ]


@pytest.mark.parametrize("n", [1, 6])
def test_the_versions_page_and_version_detail_read_a_fixed_number_of_queries(
    reviewer: User, tmp_path: Path, n: int, django_assert_num_queries: Any
) -> None:
    _versions_with_runs(tmp_path, n)
    client = Client()
    client.force_login(reviewer)
    api = client_for(reviewer)
    # The same count for one version and for six (session, user and role reads included); the version
    # detail reads its run once (it once read it for the lineage and again for the gate).
    with django_assert_num_queries(10):
        assert client.get(reverse("training:versions")).status_code == 200
    with django_assert_num_queries(5):
        assert api.get(f"/api/v1/versions/{n}").status_code == 200


def test_the_settings_summary_names_what_the_version_was_trained_with() -> None:
    from training.engine.config import load_recipe
    from training.run_settings import RunSettings, settings_summary

    tiny = settings_summary(load_recipe("tiny").to_dict())
    assert tiny == {
        "kind": "sft",
        "quantization": "float32",  # the CPU recipe: not quantized, float32 weights
        "prompt_style": "base",
        "epochs": 12.0,
        "max_steps": None,
        "learning_rate": 3e-3,
        "lora_rank": 16,
    }
    chosen = RunSettings(quantization="bf16", epochs=2, lora_rank=64).overrides()
    bf16 = settings_summary(load_recipe("tiny", chosen).to_dict())
    assert (bf16["quantization"], bf16["epochs"], bf16["lora_rank"]) == ("bf16", 2.0, 64)
