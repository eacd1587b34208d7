"""The champion guesses products; each guess records the version that made it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db.models import Exists, OuterRef

from annotation.models import Guess, Product, Split, Task
from training import storage
from training.models import ModelVersion, VersionStatus
from training.recipes import make_predictor, version_predictor_settings

logger = logging.getLogger(__name__)

GUESS_SOURCE = "model"


def products_needing_guess(*, version: ModelVersion, reguess_pool: bool) -> list[int]:
    """Pool products without any guess; with ``reguess_pool`` also every unlabelled pool product
    that this version has not guessed yet."""
    pool = Product.objects.filter(split=Split.POOL)
    if reguess_pool:
        labelled = Task.objects.filter(product=OuterRef("pk"), resolved_label__isnull=False)
        mine = Guess.objects.filter(product=OuterRef("pk"), model_version=version)
        pool = pool.exclude(Exists(labelled)).exclude(Exists(mine))
    else:
        pool = pool.exclude(Exists(Guess.objects.filter(product=OuterRef("pk"))))
    return list(pool.order_by("id").values_list("id", flat=True))


def champion_guess_products(
    *,
    product_ids: Iterable[int] | None = None,
    version_id: int | None = None,
    reguess_pool: bool | None = None,
) -> int:
    """Guess prices with the champion (or ``version_id``) in batches of ``GUESS_BATCH_SIZE``, record
    them, and queue the pool products for annotation. Returns the number of guesses recorded.

    ``product_ids=None`` means: the products that need a guess (see ``products_needing_guess``).
    Test-split products are never guessed for annotation (they are scored by the evaluator).
    """
    from annotation.services import guesses_record_bulk, tasks_create_for_products

    if version_id is None:
        version = ModelVersion.objects.filter(status=VersionStatus.CHAMPION).first()
    else:
        version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        return 0
    if version_id is not None and version.status != VersionStatus.CHAMPION:
        logger.info("%s is no longer champion; not guessing with it", version.name)
        return 0
    reguess = settings.GUESS_REGUESS_POOL if reguess_pool is None else reguess_pool
    if product_ids is None:
        ids = products_needing_guess(version=version, reguess_pool=reguess)
    else:
        ids = list(
            Product.objects.filter(pk__in=list(product_ids), split=Split.POOL).values_list("id", flat=True)
        )
    if not ids:
        return 0
    predictor = make_predictor(
        base_model=version.base_model,
        adapter_dir=storage.version_local(version.artifact_path, manifest=version.manifest),
        predictor=version_predictor_settings(version),
    )
    size = max(1, int(settings.GUESS_BATCH_SIZE))
    recorded = 0
    for start in range(0, len(ids), size):
        chunk = list(
            Product.objects.filter(pk__in=ids[start : start + size]).order_by("id").only("id", "text")
        )
        predictions = predictor.predict([p.text for p in chunk])
        rows = [
            {
                "product_id": product.pk,
                "price": f"{max(prediction.price, 0.01):.2f}",
                "topk": prediction.topk,
                "entropy": prediction.entropy,
                "latency_ms": prediction.seconds * 1000.0,
            }
            for product, prediction in zip(chunk, predictions, strict=True)
        ]
        guesses = guesses_record_bulk(rows=rows, model_version=version, source=GUESS_SOURCE)
        tasks_create_for_products(products=[p.pk for p in chunk], guess_source=GUESS_SOURCE)
        recorded += len(guesses)
    logger.info("%s guessed %s products", version.name, recorded)
    return recorded
