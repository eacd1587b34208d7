"""Scoring on the frozen test split: a version's evaluation (cached per split and predictor settings),
the built-in baselines (training mean, TF-IDF ridge) and their scatter charts.

The gate that compares these numbers, and the registry around it, are in ``registry.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from annotation.models import PriceFlag, Product, Split
from training import paths, storage
from training.models import Evaluation, ModelVersion
from training.recipes import make_predictor, version_predictor_settings

logger = logging.getLogger(__name__)

BASELINES = ("training_mean", "tfidf_ridge")
_EVAL_CHUNK = 256  # products per predictor call; the run's lease is renewed between calls


def test_products() -> list[Product]:
    """The frozen test split with a usable true price, lowest ids first (capped by RETRAIN_EVAL_MAX_ITEMS)."""
    qs = Product.objects.filter(split=Split.TEST, price__isnull=False, price_flag=PriceFlag.OK).order_by("id")
    limit = int(settings.RETRAIN_EVAL_MAX_ITEMS)
    return list(qs[:limit] if limit > 0 else qs)


def split_fingerprint(products: list[Product], predictor: dict[str, Any], extra: str = "") -> str:
    blob = json.dumps(
        {
            "ids": [p.external_id for p in products],
            "truths": [str(p.price) for p in products],
            "p": predictor,
            "x": extra,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _store_evaluation(
    *,
    version: ModelVersion | None,
    baseline: str,
    fingerprint: str,
    predictor: dict[str, Any],
    products: list[Product],
    guesses: list[float],
    seconds: float,
    title: str,
) -> Evaluation:
    from training.engine.charts import scatter_chart
    from training.engine.evaluator import evaluate

    truths = [float(p.price or 0) for p in products]
    metrics = evaluate(truths, guesses).to_dict()
    chart = paths.chart_dir() / f"{(version.name if version else baseline)}-{fingerprint[:12]}.png"
    try:
        scatter_chart(truths, guesses, chart, title=title)
        chart_path = storage.file_publish(chart)
    except Exception:
        logger.exception("scatter chart for %s failed", title)
        chart_path = ""
    try:
        with transaction.atomic():
            return Evaluation.objects.create(
                version=version,
                baseline=baseline,
                split_fingerprint=fingerprint,
                predictor_settings=predictor,
                product_ids=[p.external_id for p in products],
                truths=truths,
                guesses=guesses,
                metrics=metrics,
                chart_path=chart_path,
                seconds=seconds,
            )
    except IntegrityError:  # a concurrent evaluation of the same thing stored it first
        if version is not None:
            return Evaluation.objects.get(version=version, split_fingerprint=fingerprint)
        return Evaluation.objects.get(version__isnull=True, baseline=baseline, split_fingerprint=fingerprint)


def evaluation_of_version(
    *,
    version: ModelVersion,
    products: list[Product],
    predictor: dict[str, Any] | None = None,
    on_chunk: Callable[[], None] | None = None,
) -> Evaluation:
    """The version's predictions and metrics on ``products``; computed once per split and settings
    (by default the version's own settings: ``version_predictor_settings``)."""
    predictor = predictor or version_predictor_settings(version)
    fingerprint = split_fingerprint(products, predictor)
    cached = Evaluation.objects.filter(version=version, split_fingerprint=fingerprint).first()
    if cached is not None:
        return cached
    started = time.monotonic()
    model = make_predictor(
        base_model=version.base_model,
        adapter_dir=storage.version_local(version.artifact_path, manifest=version.manifest),
        predictor=predictor,
    )
    guesses: list[float] = []
    for start in range(0, len(products), _EVAL_CHUNK):
        chunk = products[start : start + _EVAL_CHUNK]
        guesses.extend(float(p.price) for p in model.predict([p.text for p in chunk]))
        if on_chunk is not None:
            on_chunk()
    return _store_evaluation(
        version=version,
        baseline="",
        fingerprint=fingerprint,
        predictor=predictor,
        products=products,
        guesses=guesses,
        seconds=time.monotonic() - started,
        title=f"{version.name}: guess vs truth",
    )


def baselines_evaluate(*, products: list[Product] | None = None) -> list[Evaluation]:
    """Training-mean and TF-IDF ridge baselines fitted on the pool's known prices, on the test split."""
    from training.engine.baselines import mean_baseline, tfidf_ridge

    products = test_products() if products is None else products
    if not products:
        return []
    train = list(
        Product.objects.filter(split=Split.POOL, price__isnull=False, price_flag=PriceFlag.OK)
        .order_by("id")
        .values_list("text", "price")
    )
    if not train:
        return []
    marker = f"train={len(train)}:{train[-1][1]}"
    out = []
    for name in BASELINES:
        fingerprint = split_fingerprint(products, {"baseline": name}, marker)
        cached = Evaluation.objects.filter(
            version__isnull=True, baseline=name, split_fingerprint=fingerprint
        ).first()
        if cached is not None:
            out.append(cached)
            continue
        started = time.monotonic()
        texts = [t for t, _ in train]
        prices = [float(p or 0) for _, p in train]
        model = mean_baseline(prices) if name == "training_mean" else tfidf_ridge(texts, prices)
        guesses = [float(g) for g in model.predict([p.text for p in products])]
        out.append(
            _store_evaluation(
                version=None,
                baseline=name,
                fingerprint=fingerprint,
                predictor={"baseline": name},
                products=products,
                guesses=guesses,
                seconds=time.monotonic() - started,
                title=f"{model.name}: guess vs truth",
            )
        )
    return out
