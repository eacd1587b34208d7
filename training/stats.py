"""Batch statistics (pure functions over plain data): what a reviewer looks at before approving.

Agreement is Krippendorff's alpha (interval, on log price) over the prices the annotators gave for the
same task: an accept counts as the guess's price, a correction as the corrected price, a reject as no
price. With one annotation per task there is nothing to agree on and alpha is ``None``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from training.engine.prompts import price_trainable

# Dollar bins of the price histogram (the last bin is open-ended).
PRICE_BINS: tuple[float, ...] = (0, 10, 25, 50, 100, 250, 500, 1000)


@dataclass(frozen=True)
class AnnotationFact:
    task_id: int
    annotator_id: int
    verdict: str
    price: float | None  # the price this annotation stands for (None for a reject)


def price_histogram(prices: Iterable[float]) -> list[dict[str, Any]]:
    counts = [0] * len(PRICE_BINS)
    for price in prices:
        for index in range(len(PRICE_BINS) - 1, -1, -1):
            if price >= PRICE_BINS[index]:
                counts[index] += 1
                break
    bins = []
    for index, low in enumerate(PRICE_BINS):
        high = PRICE_BINS[index + 1] if index + 1 < len(PRICE_BINS) else None
        label = f"${low:g}–{high:g}" if high is not None else f"${low:g}+"
        bins.append({"low": low, "high": high, "label": label, "count": counts[index]})
    return bins


def krippendorff_alpha_log(facts: Sequence[AnnotationFact]) -> float | None:
    """Interval alpha on log1p(price); ``None`` when no task has two priced annotations."""
    by_task: dict[int, list[AnnotationFact]] = {}
    for fact in facts:
        by_task.setdefault(fact.task_id, []).append(fact)
    paired = [t for t, fs in by_task.items() if sum(f.price is not None for f in fs) >= 2]
    if not paired:
        return None
    import krippendorff
    import numpy as np

    annotators = sorted({f.annotator_id for t in paired for f in by_task[t]})
    column = {task: i for i, task in enumerate(paired)}
    row = {annotator: i for i, annotator in enumerate(annotators)}
    data = np.full((len(annotators), len(paired)), np.nan)
    for task in paired:
        for fact in by_task[task]:
            if fact.price is not None:
                data[row[fact.annotator_id], column[task]] = math.log1p(fact.price)
    if np.nanstd(data) == 0:
        return 1.0  # everyone gave the same price everywhere: perfect agreement (alpha is 0/0)
    try:
        return float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    except ValueError:
        return None


def batch_stats(
    *,
    labels: Sequence[dict[str, Any]],
    facts: Sequence[AnnotationFact],
    annotator_quality: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """The stats JSON of a batch.

    ``labels``: one dict per item with ``price`` (or None), ``verdict``, ``spread``, ``n_annotations``;
    ``facts``: every annotation behind the items; ``annotator_quality``: per annotator id, their name
    and gold accuracy. Prices outside 0.50–999.49 are in no figure; ``price.out_of_range`` counts the
    labels, ``price.out_of_range_answers`` the annotations.
    """
    # Prices outside 0.50–999.49 (a typo such as $999,999,999) are counted apart and left out of every
    # figure below: one of them would otherwise move the mean by millions and the alpha to nonsense.
    out_of_range_answers = sum(1 for f in facts if f.price is not None and not price_trainable(f.price))
    facts = [f if f.price is None or price_trainable(f.price) else replace(f, price=None) for f in facts]
    verdicts = Counter(f.verdict for f in facts)
    total = sum(verdicts.values()) or 1
    per_annotator: dict[int, Counter[str]] = {}
    for fact in facts:
        per_annotator.setdefault(fact.annotator_id, Counter())[fact.verdict] += 1
    multi = [
        lab
        for lab in labels
        if (lab.get("n_annotations") or 0) >= 2
        and (lab.get("price") is None or price_trainable(float(lab["price"])))
    ]
    within = [lab for lab in multi if lab.get("within_tolerance")]
    priced = [float(lab["price"]) for lab in labels if lab.get("price") is not None]
    prices = [p for p in priced if price_trainable(p)]
    gold = [q["gold_accuracy"] for q in annotator_quality.values() if q.get("gold_accuracy") is not None]
    annotators = []
    for annotator_id, counts in sorted(per_annotator.items()):
        n = sum(counts.values())
        quality = annotator_quality.get(annotator_id, {})
        annotators.append(
            {
                "id": annotator_id,
                "username": quality.get("username", str(annotator_id)),
                "annotations": n,
                "accept_rate": counts["accept"] / n,
                "correct_rate": counts["correct"] / n,
                "reject_rate": counts["reject"] / n,
                "gold_accuracy": quality.get("gold_accuracy"),
                "gold_seen": quality.get("gold_seen", 0),
            }
        )
    return {
        "rows": len(labels),
        "annotations": sum(verdicts.values()),
        "shares": {v: verdicts[v] / total for v in ("accept", "correct", "reject")},
        "label_verdicts": dict(Counter(lab["verdict"] for lab in labels)),
        "trainable": sum(1 for lab in labels if lab.get("trainable")),
        "agreement": {
            "alpha_log_price": krippendorff_alpha_log(facts),
            "tasks_with_overlap": len(multi),
            "within_tolerance_share": (len(within) / len(multi)) if multi else None,
        },
        "annotators": annotators,
        "gold_accuracy_mean": (sum(gold) / len(gold)) if gold else None,
        "price": {
            "min": min(prices) if prices else None,
            "max": max(prices) if prices else None,
            "mean": (sum(prices) / len(prices)) if prices else None,
            "median": statistics.median(prices) if prices else None,
            "histogram": price_histogram(prices),
            "out_of_range": len(priced) - len(prices),
            "out_of_range_answers": out_of_range_answers,
        },
    }
