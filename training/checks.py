"""Quality checks of a retrain batch: what must hold before it may be trained on without an override.

Read live (the annotators' current gold record and pause state), so an annotator paused after the
snapshot fails the batch they contributed to. Four checks, each with its number and threshold:

- ``gold_accuracy``: the gold accuracy of the batch's annotators, each weighted by their items in the
  batch, at least ``RETRAIN_GOLD_ACCURACY_MIN``. No gold answer at all fails: quality unknown.
- ``out_of_range_share``: the share of priced labels outside 0.50–999.49 (stored, never trained on
  token-level) at most ``RETRAIN_OUT_OF_RANGE_MAX_SHARE``.
- ``annotators_below_floor``: no contributing annotator is paused or below ``ANNOTATION_GOLD_ACCURACY_MIN``
  (the accuracy that pauses annotators) on the gold items answered so far, even fewer than
  ``ANNOTATION_GOLD_MIN_SEEN``,
  unless a reviewer released all of that annotator's labels in this batch from quarantine;
- ``quarantined_labels``: no label of the batch is held in quarantine (its annotator was paused after
  the snapshot: ``annotation/quarantine.py``) until a reviewer releases or drops it.

A batch whose checks fail is approved only with a written override reason (``batch_approve``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from annotation.conf import annotation_config
from annotation.models import AnnotatorStatus, QuarantinedAnnotation, QuarantineState
from training.models import RetrainBatch


@dataclass(frozen=True)
class QualityCheck:
    name: str
    passed: bool
    value: float | int | None
    threshold: float | int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_checks(batch: RetrainBatch) -> list[QualityCheck]:
    """The batch's quality checks, in a fixed order (three queries)."""
    rows = list(
        batch.items.filter(excluded=False).values_list(
            "annotator_ids", "price", "price_trainable", "resolved_label__task_id"
        )
    )
    items = [(annotator_ids, price, trainable) for annotator_ids, price, trainable, _ in rows]
    per_annotator: Counter[int] = Counter()
    tasks_of: dict[int, set[int]] = {}
    for annotator_ids, _, _, task_id in rows:
        for annotator_id in annotator_ids or []:
            per_annotator[int(annotator_id)] += 1
            tasks_of.setdefault(int(annotator_id), set()).add(task_id)
    statuses = {
        s.user_id: s
        for s in AnnotatorStatus.objects.filter(user_id__in=list(per_annotator)).select_related("user")
    }
    quarantine = list(
        QuarantinedAnnotation.objects.filter(task_id__in=[r[3] for r in rows]).values_list(
            "task_id", "annotator_id", "state"
        )
    )
    held_tasks = {task for task, _, state in quarantine if state != QuarantineState.RELEASED}
    released: dict[int, set[int]] = {}
    for task, annotator_id, state in quarantine:
        if state == QuarantineState.RELEASED:
            released.setdefault(annotator_id, set()).add(task)
    # A reviewer who released all of an annotator's labels in this batch vouched for them.
    vouched = {a for a, tasks in tasks_of.items() if tasks and tasks <= released.get(a, set())}
    return [
        _gold_accuracy(per_annotator, statuses),
        _out_of_range(items),
        _below_floor(per_annotator, statuses, vouched),
        _quarantined(len(held_tasks)),
    ]


def checks_passed(checks: list[QualityCheck]) -> bool:
    return all(check.passed for check in checks)


def _name(status: AnnotatorStatus | None, annotator_id: int) -> str:
    return status.user.get_username() if status is not None else f"user {annotator_id}"


def _gold_accuracy(per_annotator: Counter[int], statuses: dict[int, AnnotatorStatus]) -> QualityCheck:
    threshold = float(settings.RETRAIN_GOLD_ACCURACY_MIN)
    weighted, weight, unchecked_items = 0.0, 0, 0
    for annotator_id, n_items in per_annotator.items():
        status = statuses.get(annotator_id)
        if status is None or not status.gold_seen:
            unchecked_items += n_items
            continue
        weighted += n_items * status.gold_correct / status.gold_seen
        weight += n_items
    unchecked = (
        f" {unchecked_items} item(s) come from annotators who answered no gold item."
        if unchecked_items
        else ""
    )
    if not weight:
        return QualityCheck(
            "gold_accuracy",
            False,
            None,
            threshold,
            "No annotator of this batch has answered a gold item: its quality is unknown. Add gold items "
            "(Gold page, POST /api/v1/gold or manage.py import_gold) and let annotators meet them.",
        )
    value = weighted / weight
    passed = value >= threshold
    verdict = "reaches" if passed else "is below"
    return QualityCheck(
        "gold_accuracy",
        passed,
        round(value, 4),
        threshold,
        f"Gold accuracy of the batch's annotators (weighted by their items) {value:.0%} {verdict} the "
        f"required {threshold:.0%} (RETRAIN_GOLD_ACCURACY_MIN).{unchecked}",
    )


def _out_of_range(items: list[tuple[Any, Any, bool]]) -> QualityCheck:
    threshold = float(settings.RETRAIN_OUT_OF_RANGE_MAX_SHARE)
    priced = [trainable for _, price, trainable in items if price is not None]
    outside = sum(1 for trainable in priced if not trainable)
    value = outside / len(priced) if priced else 0.0
    passed = value <= threshold
    stored = round(value, 4)  # the text gives the same 4 decimals, so the page's Value column agrees
    return QualityCheck(
        "out_of_range_share",
        passed,
        stored,
        threshold,
        f"{outside} of {len(priced)} priced label(s) ({stored:.2%}) lie outside $0.50–$999.49; at most "
        f"{threshold:.1%} may (RETRAIN_OUT_OF_RANGE_MAX_SHARE)."
        + ("" if passed else " Look for typos such as extra zeros before training on them."),
    )


def _below_floor(
    per_annotator: Counter[int], statuses: dict[int, AnnotatorStatus], vouched: set[int]
) -> QualityCheck:
    cfg = annotation_config()
    below = []
    for annotator_id in sorted(per_annotator):
        status = statuses.get(annotator_id)
        if status is None or annotator_id in vouched:
            continue
        if status.paused:
            below.append(f"{_name(status, annotator_id)} (paused: {status.paused_reason or 'no reason'})")
        elif status.gold_seen and status.gold_correct / status.gold_seen < cfg.gold_accuracy_min:
            # Below the floor so far, even before enough gold answers to pause them: a spammer's first
            # labels must not slip into a batch while the gold items are still catching up with them.
            so_far = "" if status.gold_seen >= cfg.gold_min_seen else " so far"
            below.append(
                f"{_name(status, annotator_id)} (gold {status.gold_correct}/{status.gold_seen}{so_far})"
            )
    if not below:
        message = (
            f"No annotator of this batch is paused or below the {cfg.gold_accuracy_min:.0%} gold accuracy "
            "floor (ANNOTATION_GOLD_ACCURACY_MIN)."
        )
    else:
        message = (
            f"{len(below)} annotator(s) of this batch are paused or below the {cfg.gold_accuracy_min:.0%} "
            f"gold accuracy floor: {'; '.join(below)}."
        )
    return QualityCheck("annotators_below_floor", not below, len(below), 0, message)


def _quarantined(held: int) -> QualityCheck:
    if not held:
        message = "No label of this batch is quarantined."
    else:
        message = (
            f"{held} label(s) of this batch come from annotators paused after the snapshot and are "
            "quarantined: release or drop them on the Queue page (dropping takes them out of the batch)."
        )
    return QualityCheck("quarantined_labels", not held, held, 0, message)
