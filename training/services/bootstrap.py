"""The demo's first version: train ``v1`` on seeded labels with the tiny base, champion if none exists.

"Seeded labels" are the catalogue prices of pool products (the synthetic catalogue carries them); the
test split is never trained on. Runs in-process (the demo command calls it before starting workers),
through the same run → dataset → train → register → gate path as every other version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import PriceFlag, Product, Split
from training import paths
from training.exceptions import RunStateError
from training.models import (
    AuditAction,
    AuditEvent,
    ModelVersion,
    Recipe,
    RunStage,
    RunStatus,
    TrainingDataset,
    TrainingRun,
    VersionStatus,
)
from training.recipes import run_recipe

logger = logging.getLogger(__name__)


def base_ensure(*, base_model: str | None = None, max_items: int = 2000) -> str:
    """The base model path; builds the tiny base from the pool's priced products when it is missing."""
    base = base_model or settings.BASE_MODEL
    path = Path(base)
    if not path.is_absolute() or (path / "config.json").exists():
        return base  # a hub id, or a base that exists
    from training.engine.bootstrap import build_base

    items = list(
        Product.objects.filter(split=Split.POOL, price__isnull=False, price_flag=PriceFlag.OK)
        .order_by("id")
        .values("text", "price")[:max_items]
    )
    if not items:
        raise RunStateError("no priced pool product to build the tiny base from; import a catalogue first.")
    logger.info("building the tiny base from %s products into %s", len(items), path)
    build_base([{"text": i["text"], "price": float(i["price"] or 0)} for i in items], path, size="tiny")
    return base


def version_bootstrap_v1(*, max_items: int = 400, overrides: dict | None = None) -> ModelVersion:
    """Return the champion; when there is none, train one on seeded pool prices and promote it."""
    from training.engine.datasets import LabelRow, build_sft
    from training.engine.prompts import COMPLETION_RESERVE
    from training.services.registry import run_evaluate_and_gate
    from training.services.runs import _load_tokenizer, run_fail, run_train

    champion = ModelVersion.objects.filter(status=VersionStatus.CHAMPION).first()
    if champion is not None:
        return champion
    base = base_ensure()
    run = TrainingRun.objects.create(
        batch=None,
        recipe=Recipe.SFT,
        recipe_name=settings.RETRAIN_RECIPE,
        hyperparameters=overrides or {},
        base_model=base,
        status=RunStatus.RUNNING,
        stage=RunStage.DATASET,
        started=timezone.now(),
        logs="bootstrap: v1 on seeded catalogue prices\n",
    )
    products = list(
        Product.objects.filter(split=Split.POOL, price__isnull=False, price_flag=PriceFlag.OK).order_by("id")[
            :max_items
        ]
    )
    rows = [
        LabelRow(
            product_id=p.external_id, text=p.text, price=float(p.price), guess_price=None, verdict="correct"
        )
        for p in products
        if p.price is not None
    ]
    recipe = run_recipe(
        recipe_name=run.recipe_name, method="sft", base_model=base, overrides=run.hyperparameters
    )
    out = paths.dataset_dir(run.pk) / "sft.jsonl"
    test_ids = set(Product.objects.filter(split=Split.TEST).values_list("external_id", flat=True))
    try:
        manifest = build_sft(
            rows,
            out,
            test_ids=test_ids,
            tokenizer=_load_tokenizer(base),
            max_prompt_tokens=recipe.train.max_length - COMPLETION_RESERVE,
            style=recipe.model.prompt_style,
        )
    except ValueError as exc:
        run_fail(run_id=run.pk, error=f"dataset refused: {exc}")
        raise RunStateError(f"bootstrap dataset refused: {exc}") from exc
    with transaction.atomic():
        TrainingDataset.objects.create(
            run=run,
            kind="sft",
            path=paths.relative(out),
            sha256=manifest.sha256,
            rows=manifest.rows,
            manifest=manifest.to_dict(),
        )
        TrainingRun.objects.filter(pk=run.pk).update(stage=RunStage.TRAIN, heartbeat=None)
    outcome = run_train(run_id=run.pk, enqueue_next=False)
    if outcome != "trained":
        run.refresh_from_db()
        raise RunStateError(f"bootstrap training ended {outcome}: {run.error[:500]}")
    run_evaluate_and_gate(run_id=run.pk)
    run.refresh_from_db()
    version = run.candidate
    assert version is not None
    version.refresh_from_db()
    AuditEvent.objects.create(
        action=AuditAction.BOOTSTRAP,
        version=version,
        run=run,
        numbers={"rows": manifest.rows},
        message="v1 trained on seeded catalogue prices",
    )
    return version
