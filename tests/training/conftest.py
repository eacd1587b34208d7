"""Fixtures of the retraining tests: a synthetic catalogue, the tiny base (built once, cached on
disk), isolated artifact folders, and a helper that labels products through the annotation services.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from training.engine.synthetic import generate_products

CATALOGUE_SIZE = 260
CATALOGUE_SEED = 7
TEST_FRACTION = 0.25
# The base is pretrained on another synthetic catalogue (seed 1): no test product of ours is in it.
BASE_CATALOGUE = (300, 1)
# Tiny-recipe overrides: LoRA on attention and MLP with a high learning rate, so that 40 CPU steps
# visibly move the price distribution (attention-only r=8 barely changes the tiny base's guesses).
FAST = {
    "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]},
    "train": {"max_steps": 40, "learning_rate": 2e-2, "save_steps": 20},
}
# v1 is trained on seeded prices "just barely" (one tiny step), so v2 has room to improve.
WEAK_V1 = {"train": {"max_steps": 1, "learning_rate": 1e-5}}


def catalogue_rows(n: int = CATALOGUE_SIZE, seed: int = CATALOGUE_SEED) -> list[dict[str, Any]]:
    return list(generate_products(n, seed=seed))


def catalogue_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def import_catalogue(rows: list[dict[str, Any]] | None = None) -> Any:
    from annotation.catalogue.services import products_import_stream

    rows = catalogue_rows() if rows is None else rows
    result = products_import_stream(
        stream=io.BytesIO(catalogue_jsonl(rows)), fmt="jsonl", test_fraction=TEST_FRACTION, source="test"
    )
    assert result.bad == 0, result.errors[:3]
    return result


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """The tiny Llama base built from the synthetic catalogue's pool-like items; cached across runs."""
    from training.engine.bootstrap import build_base

    rows = catalogue_rows(*BASE_CATALOGUE)
    items = [{"text": r["text"], "price": float(r["price"])} for r in rows if r.get("price")]
    key = hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
    # Outside the per-session data dir: the base is deterministic, so later sessions reuse it.
    cache = Path(
        os.environ.get("PRICELOOP_TEST_CACHE") or Path(tempfile.gettempdir()) / "priceloop-test-cache"
    )
    out = cache / f"base-tiny-{key}"
    if not (out / "config.json").exists():
        try:
            build_base(items, out, size="tiny", seed=0)
        except OSError:
            if not (out / "config.json").exists():  # not a concurrent session that won the rename
                raise
    return out


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread() -> None:
    """Tiny models on a busy 2-core machine: one thread is 3x faster than two fighting for the cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def pipeline_settings(settings: Any, tmp_path: Path, tiny_base: Path) -> Any:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.BASE_MODEL = str(tiny_base)
    settings.RETRAIN_RECIPE = "tiny"
    settings.RETRAIN_RECIPE_OVERRIDES = json.dumps(FAST)
    settings.RETRAIN_MIN_BATCH_SIZE = 5
    settings.RETRAIN_EVAL_MAX_ITEMS = 0
    settings.GATE_MIN_DELTA = 0.0
    settings.GATE_ALPHA = 0.2
    settings.GUESS_BATCH_SIZE = 64
    settings.ANNOTATION_OVERLAP = 1
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_GOLD_RATE = 0.0
    return settings


def label_everything(
    annotator: User, *, price_of: Callable[[Any], Decimal | None], limit: int = 10_000
) -> int:
    """Lease and answer tasks as ``annotator`` until the queue is empty: ``price_of(product)`` gives the
    corrected price, or ``None`` to accept the guess. Returns the number of annotations."""
    from annotation.queue import lease_next_task
    from annotation.services import annotation_submit

    done = 0
    while done < limit:
        assignment = lease_next_task(annotator=annotator)
        if assignment is None:
            break
        product = assignment.task.product
        price = price_of(product)
        annotation_submit(
            annotator=annotator,
            assignment_id=assignment.pk,
            verdict="accept" if price is None else "correct",
            corrected_price=price,
            seconds_spent=3,
            confirm_price=True,  # a scripted annotator who types the true price stands by it
        )
        done += 1
    return done


def run_ready_to_train(*, hyperparameters: dict[str, Any]) -> Any:
    """A run at the train stage whose SFT dataset is the pool's catalogue prices (the catalogue imported)."""
    from django.conf import settings
    from django.utils import timezone
    from transformers import AutoTokenizer

    from annotation.models import PriceFlag, Product, Split
    from training import paths
    from training.engine.datasets import LabelRow, build_sft
    from training.models import RunStage, RunStatus, TrainingDataset, TrainingRun

    import_catalogue()
    run = TrainingRun.objects.create(
        recipe_name="tiny",
        base_model=settings.BASE_MODEL,
        hyperparameters=hyperparameters,
        status=RunStatus.RUNNING,
        stage=RunStage.TRAIN,
        started=timezone.now(),
    )
    products = Product.objects.filter(split=Split.POOL, price__isnull=False, price_flag=PriceFlag.OK)
    rows = [
        LabelRow(
            product_id=p.external_id, text=p.text, price=float(p.price), guess_price=None, verdict="correct"
        )
        for p in products
        if p.price is not None
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


# The synthetic catalogue has no gold items, so the gold-accuracy check cannot pass: tests approve with this.
NO_GOLD = {"override_reason": "test catalogue: no gold items"}


@pytest.fixture
def labelled_batch(pipeline_settings: Any, annotator: User) -> Any:
    """A pending batch of 23 pool products labelled with their catalogue prices (30 imported)."""
    from annotation.models import Product, Split
    from annotation.services import guesses_record_bulk, tasks_create_for_products
    from training.services.batches import batch_create_from_resolved

    import_catalogue(catalogue_rows(30))
    pool = list(Product.objects.filter(split=Split.POOL))
    guesses_record_bulk(rows=[{"product_id": p.pk, "price": "50.00"} for p in pool], source="baseline:mean")
    tasks_create_for_products(products=[p.pk for p in pool])
    label_everything(annotator, price_of=lambda p: p.price)
    return batch_create_from_resolved(min_size=1)
