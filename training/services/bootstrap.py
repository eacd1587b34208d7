"""The first version: train ``v1`` on a named seed set of labelled products and make it champion.

The base knows products but not prices (``engine.bootstrap`` pretrains on catalogue text only), so the
only price knowledge ``v1`` has is its seed set: a file of ``{"id", "price"}`` lines for imported pool
products (``manage.py bootstrap_champion --seed-labels FILE``; the demo writes one from its synthetic
catalogue). Seeded products are labelled already and never queued for annotation; the run's dataset and
the version's manifest name the set. The test split is never trained on. Runs in-process (the demo
command calls it before starting workers), through the same run → dataset → train → register → gate path
as every other version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import Product, SeedLabel, Split
from training import paths, selectors, storage
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


def base_ensure(*, base_model: str | None = None, max_items: int = 5000) -> str:
    """The base model path; builds the tiny base from the pool's *texts* when it is missing.

    Only texts are read (no price): the base learns what products are, not what they cost.
    """
    base = base_model or settings.BASE_MODEL
    path = Path(base)
    if not path.is_absolute() or (path / "config.json").exists():
        return base  # a hub id, or a base that exists
    from training.engine.bootstrap import build_base

    texts = list(
        Product.objects.filter(split=Split.POOL).order_by("id").values_list("text", flat=True)[:max_items]
    )
    if not texts:
        raise RunStateError("no pool product to build the tiny base from; import a catalogue first.")
    logger.info("building the tiny base from the texts of %s products into %s", len(texts), path)
    build_base([{"text": t} for t in texts], path, size="tiny")
    return base


def seed_labels_import(*, path: Path, name: str | None = None) -> dict[str, object]:
    """Store a seed set: one ``{"id": <external id>, "price": <number>}`` JSON object per line.

    Every line must name an imported *pool* product with a trainable price (0.50–999.49); a bad line
    is reported with its number and nothing is stored (the set is all or nothing, since v1's lineage
    names it). Re-importing the same file changes nothing. Returns ``{"name", "sha256", "rows"}``.
    """
    from training.engine.prompts import price_trainable

    path = Path(path)
    raw = path.read_bytes()
    name = name or path.name
    errors: list[str] = []
    wanted: dict[str, Decimal] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            external_id = str(row["id"])
            price = Decimal(str(row["price"]))
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            errors.append(
                f'{path.name}:{number}: needs {{"id": ..., "price": ...}} ({exc.__class__.__name__})'
            )
            continue
        if not price.is_finite() or not price_trainable(float(price)):
            errors.append(f"{path.name}:{number}: price {row['price']!r} is outside 0.50-999.49")
            continue
        wanted[external_id] = price
    products = {
        p.external_id: p
        for p in Product.objects.filter(external_id__in=list(wanted)).only("id", "external_id", "split")
    }
    # Every refused id is named (grouped, one line each), so one run gives the whole list to remove.
    missing = [i for i in wanted if i not in products]
    in_test = [i for i in wanted if i in products and products[i].split != Split.POOL]
    id_lines: list[str] = []
    if missing:
        id_lines.append(
            f"{path.name}: {len(missing)} id(s) are not imported products (import the catalogue first): "
            + ", ".join(map(repr, missing))
        )
    if in_test:
        id_lines.append(
            f"{path.name}: {len(in_test)} id(s) are in the test split, which is never trained on (remove "
            "them): " + ", ".join(map(repr, in_test))
        )
    if errors or id_lines:
        more = f"\n… and {len(errors) - 20} more bad line(s)" if len(errors) > 20 else ""
        shown = "\n".join(id_lines + errors[:20]) + more
        raise RunStateError(f"seed labels refused, nothing stored:\n{shown}")
    if not wanted:
        raise RunStateError(f'{path.name} holds no seed label; write one {{"id", "price"}} object per line')
    with transaction.atomic():
        for external_id, price in wanted.items():
            SeedLabel.objects.update_or_create(
                product=products[external_id], defaults={"price": price, "seed_set": name}
            )
    return {"name": name, "sha256": hashlib.sha256(raw).hexdigest(), "rows": len(wanted)}


def _seed_from_catalogue_prices(*, max_items: int) -> dict[str, object]:
    """No seed file: the first ``max_items`` priced pool products become the set ``catalogue-prices``."""
    products = list(
        Product.objects.filter(split=Split.POOL, price__isnull=False, price__gte=Decimal("0.50"))
        .filter(price__lte=Decimal("999.49"))
        .order_by("id")[:max_items]
    )
    if not products:
        raise RunStateError(
            'no seed labels: pass --seed-labels FILE (one {"id", "price"} per line), or import a catalogue '
            "whose pool products carry prices"
        )
    name = f"catalogue-prices:first-{len(products)}"
    with transaction.atomic():
        for product in products:
            assert product.price is not None  # filtered above
            SeedLabel.objects.update_or_create(
                product=product, defaults={"price": product.price, "seed_set": name}
            )
    digest = hashlib.sha256("\n".join(f"{p.external_id}\t{p.price}" for p in products).encode()).hexdigest()
    return {"name": name, "sha256": digest, "rows": len(products)}


def version_bootstrap_v1(
    *, seed_labels: Path | None = None, max_items: int = 400, overrides: dict | None = None
) -> ModelVersion:
    """Return the champion; when there is none, train ``v1`` on a seed set and promote it.

    ``seed_labels`` is a JSONL file of ``{"id", "price"}`` (see ``seed_labels_import``); without it the
    seed labels already stored are used, or else the first ``max_items`` priced pool products.
    """
    from training.engine.datasets import LabelRow, build_sft
    from training.engine.prompts import COMPLETION_RESERVE
    from training.services.registry import run_evaluate_and_gate
    from training.services.runs import _load_tokenizer, run_fail, run_train

    champion = ModelVersion.objects.filter(status=VersionStatus.CHAMPION).first()
    if champion is not None:
        return champion
    if seed_labels is not None:
        seed_set = seed_labels_import(path=seed_labels)
    elif SeedLabel.objects.exists():
        seed_set = {"name": selectors.seed_set_name(), "sha256": "", "rows": SeedLabel.objects.count()}
    else:
        seed_set = _seed_from_catalogue_prices(max_items=max_items)
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
        logs=f"bootstrap: v1 on the seed set {seed_set['name']} ({seed_set['rows']} labels)\n",
    )
    seeds = SeedLabel.objects.select_related("product").order_by("product_id")
    rows = [
        LabelRow(
            product_id=seed.product.external_id,
            text=seed.product.text,
            price=float(seed.price),
            guess_price=None,
            verdict="correct",
        )
        for seed in seeds
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
            path=storage.dataset_publish(out, sha256=manifest.sha256),
            sha256=manifest.sha256,
            rows=manifest.rows,
            # The seed set is v1's lineage: the version manifest copies it from here.
            manifest={**manifest.to_dict(), "seed_set": seed_set},
        )
        TrainingRun.objects.filter(pk=run.pk).update(stage=RunStage.TRAIN, heartbeat=None)
    outcome = run_train(run_id=run.pk, enqueue_next=False)
    if outcome != "trained":
        run.refresh_from_db()
        raise RunStateError(f"bootstrap training ended {outcome}: {run.error[:500]}")
    run_evaluate_and_gate(run_id=run.pk)
    run.refresh_from_db()
    if run.status == RunStatus.FAILED:
        raise RunStateError(f"bootstrap evaluation failed: {run.error}")
    version = run.candidate
    assert version is not None
    version.refresh_from_db()
    AuditEvent.objects.create(
        action=AuditAction.BOOTSTRAP,
        version=version,
        run=run,
        numbers={"rows": manifest.rows, "seed_set": seed_set},
        message=f"v1 trained on the seed set {seed_set['name']}",
    )
    return version
