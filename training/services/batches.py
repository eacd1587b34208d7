"""Retrain batches: snapshot resolved labels, then a reviewer approves (→ exactly one run) or rejects."""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import (
    Annotation,
    AnnotatorStatus,
    PriceFlag,
    QuarantineState,
    ResolvedLabel,
    Split,
    Verdict,
)
from annotation.quarantine import BLOCKING as QUARANTINE_BLOCKING
from training import pipeline
from training.checks import batch_checks
from training.exceptions import (
    BatchStateError,
    BrokerUnavailable,
    NotEnoughLabelsError,
    QualityChecksFailed,
    RunSettingsInvalid,
    RunStateError,
)
from training.models import (
    AuditAction,
    AuditEvent,
    BatchItem,
    BatchStatus,
    Recipe,
    RetrainBatch,
    RunStatus,
    TrainingRun,
)
from training.run_settings import RunSettings, run_settings_check
from training.services.runs import run_retry
from training.stats import AnnotationFact, batch_stats
from webapp.roles import Role, has_role

logger = logging.getLogger(__name__)


def _majority_verdict(label: ResolvedLabel) -> str:
    counts = {
        Verdict.ACCEPT.value: label.n_accept,
        Verdict.CORRECT.value: label.n_correct,
        Verdict.REJECT.value: label.n_reject,
    }
    if label.method == "rejected":
        return Verdict.REJECT.value
    if label.method == "accept_majority":
        return Verdict.ACCEPT.value
    # median / adjudicated: the human price is what counts; call it a correction unless all accepted.
    best = max(counts, key=lambda v: (counts[v], v == Verdict.CORRECT.value))
    return best if best != Verdict.REJECT.value else Verdict.CORRECT.value


def _content_sha256(items: list[BatchItem]) -> str:
    canonical = [
        [item.resolved_label_id, item.product_id, str(item.price), item.verdict, item.codebook_version]
        for item in items
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def _unbatched_labels() -> Any:
    """Resolved pool labels no batch holds, less those a quarantine blocks (a paused annotator's labels
    until a reviewer releases them; dropped ones for ever: ``annotation/quarantine.py``)."""
    return (
        ResolvedLabel.objects.filter(
            batch_item__isnull=True, task__is_gold=False, task__product__split=Split.POOL
        )
        .exclude(task__quarantined_annotations__state__in=QUARANTINE_BLOCKING)
        .select_related("task", "task__guess", "task__product")
        .order_by("id")
    )


def _quarantined_label_count() -> int:
    return int(
        ResolvedLabel.objects.filter(
            batch_item__isnull=True,
            task__is_gold=False,
            task__quarantined_annotations__state=QuarantineState.HELD,
        )
        .distinct()
        .count()
    )


def batch_create_from_resolved(
    *, min_size: int | None = None, recipe: str = Recipe.SFT, actor: User | None = None
) -> RetrainBatch:
    """Snapshot every resolved label that no batch holds yet into a new ``pending_review`` batch.

    Raises ``NotEnoughLabelsError`` below ``min_size`` (default ``RETRAIN_MIN_BATCH_SIZE``). Two callers at
    once cannot put a label in two batches: ``BatchItem.resolved_label`` is one-to-one, so the second
    insert fails and that caller gets ``NotEnoughLabelsError``.
    """
    min_size = settings.RETRAIN_MIN_BATCH_SIZE if min_size is None else min_size
    if recipe not in Recipe.values:
        raise BatchStateError(f"recipe {recipe!r} is unknown; use one of {', '.join(Recipe.values)}.")
    try:
        with transaction.atomic():
            labels = list(_unbatched_labels())
            if not labels or len(labels) < max(min_size, 1):
                held = _quarantined_label_count()
                raise NotEnoughLabelsError(
                    f"{len(labels)} resolved label(s) are waiting; a batch needs at least {max(min_size, 1)} "
                    "(RETRAIN_MIN_BATCH_SIZE)."
                    + (
                        f" {held} more are quarantined (paused annotators): release or drop them on the "
                        "Queue page."
                        if held
                        else ""
                    )
                )
            by_task = _annotations_by_task([label.task_id for label in labels])

            batch = RetrainBatch.objects.create(
                recipe=recipe, content_sha256="pending-" + str(timezone.now())
            )
            items: list[BatchItem] = []
            for label in labels:
                task_annotations = by_task.get(label.task_id, [])
                codebooks = [a.codebook_version.number for a in task_annotations if a.codebook_version]
                guess = label.task.guess
                items.append(
                    BatchItem(
                        batch=batch,
                        resolved_label=label,
                        product_id=label.task.product_id,
                        price=label.price,
                        price_trainable=label.price is not None and label.price_flag == PriceFlag.OK,
                        guess_price=guess.price if guess else None,
                        guess_version_id=guess.model_version_id if guess else None,
                        verdict=_majority_verdict(label),
                        codebook_version=max(codebooks) if codebooks else None,
                        annotator_ids=sorted({a.annotator_id for a in task_annotations}),
                    )
                )
            BatchItem.objects.bulk_create(items)
            batch.content_sha256 = _content_sha256(items)
            batch.size = len(items)
            batch.stats = _stats_for(labels, by_task, items)
            batch.save(update_fields=["content_sha256", "size", "stats"])
            AuditEvent.objects.create(
                action=AuditAction.BATCH_CREATE,
                actor=actor,  # None: the beat's schedule made it
                batch=batch,
                subject=f"batch:{batch.pk}",
                numbers={"rows": batch.size, "content_sha256": batch.content_sha256},
            )
    except IntegrityError as exc:
        # Another process batched some of these labels between our read and our insert.
        raise NotEnoughLabelsError(
            f"the labels were batched by another process at the same time ({exc})."
        ) from exc
    logger.info("retrain batch %s created with %s labels", batch.pk, batch.size)
    return batch


def _stats_for(
    labels: list[ResolvedLabel], by_task: dict[int, list[Annotation]], items: list[BatchItem]
) -> dict[str, Any]:
    from annotation.conf import within_tolerance

    facts: list[AnnotationFact] = []
    for label in labels:
        guess = label.task.guess
        for annotation in by_task.get(label.task_id, []):
            price: Decimal | None = None
            if annotation.verdict == Verdict.CORRECT:
                price = annotation.corrected_price
            elif annotation.verdict == Verdict.ACCEPT and guess is not None:
                price = guess.price
            facts.append(
                AnnotationFact(
                    task_id=label.task_id,
                    annotator_id=annotation.annotator_id,
                    verdict=annotation.verdict,
                    price=float(price) if price is not None else None,
                )
            )
    rows = []
    for label, item in zip(labels, items, strict=True):
        within = None
        if label.n_annotations >= 2 and label.spread is not None and label.price is not None:
            within = within_tolerance(label.price + label.spread, label.price)
        rows.append(
            {
                "price": item.price,
                "verdict": item.verdict,
                "n_annotations": label.n_annotations,
                "within_tolerance": within,
                "trainable": item.price_trainable,
            }
        )
    annotator_ids = {f.annotator_id for f in facts}
    quality: dict[int, dict[str, Any]] = {}
    for status in AnnotatorStatus.objects.filter(user_id__in=annotator_ids).select_related("user"):
        quality[status.user_id] = {
            "username": status.user.get_username(),
            "gold_accuracy": status.gold_accuracy,
            "gold_seen": status.gold_seen,
        }
    for annotation_list in by_task.values():
        for annotation in annotation_list:
            quality.setdefault(annotation.annotator_id, {"username": annotation.annotator.get_username()})
    return batch_stats(labels=rows, facts=facts, annotator_quality=quality)


def _annotations_by_task(task_ids: list[int]) -> dict[int, list[Annotation]]:
    by_task: dict[int, list[Annotation]] = {}
    for annotation in (
        Annotation.objects.filter(task_id__in=task_ids)
        .select_related("codebook_version", "annotator")
        .order_by("id")
    ):
        by_task.setdefault(annotation.task_id, []).append(annotation)
    return by_task


def batch_labels_remove(*, label_ids: list[int]) -> dict[int, int]:
    """Take these labels out of the pending batches that hold them; ``{batch id: items removed}``.

    A reviewer dropped them (``annotation.quarantine.quarantine_drop``): they must not be trained on.
    Approved and rejected batches are final and keep their items. Each batch changed gets its size,
    content hash and stats recomputed from the items left, so the hash covers what can be approved.
    """
    removed: dict[int, int] = {}
    with transaction.atomic():
        batch_ids = sorted(
            set(
                BatchItem.objects.filter(
                    resolved_label_id__in=label_ids, batch__status=BatchStatus.PENDING_REVIEW
                ).values_list("batch_id", flat=True)
            )
        )
        for batch in RetrainBatch.objects.select_for_update().filter(
            pk__in=batch_ids, status=BatchStatus.PENDING_REVIEW
        ):
            count, _ = BatchItem.objects.filter(batch=batch, resolved_label_id__in=label_ids).delete()
            if not count:
                continue
            removed[batch.pk] = count
            _batch_summary_refresh(batch)
            logger.info("batch %s: %s dropped label(s) removed", batch.pk, count)
    return removed


def _batch_summary_refresh(batch: RetrainBatch) -> None:
    """Recompute size, content hash and stats from the items that will be trained on (not excluded)."""
    items = list(
        batch.items.filter(excluded=False)
        .select_related("resolved_label__task__guess", "resolved_label__task__product")
        .order_by("id")
    )
    labels = [item.resolved_label for item in items]
    batch.size = len(items)
    batch.content_sha256 = _content_sha256(items) if items else f"empty-batch-{batch.pk}"
    batch.stats = _stats_for(labels, _annotations_by_task([lab.task_id for lab in labels]), items)
    batch.stats["excluded"] = batch.items.filter(excluded=True).count()
    batch.save(update_fields=["size", "content_sha256", "stats"])


MAX_EXCLUSION_REASON = 2000


def batch_items_exclude(*, reviewer: User, batch_id: int, item_ids: list[int], reason: str) -> RetrainBatch:
    """Take items out of a pending batch before approval, with a reason (kept on each item and audited).

    The batch's size, stats and content hash are recomputed from the items left, so the hash of an
    approved batch covers exactly what was trained on. Items already excluded are left as they were.
    """
    _require_reviewer(reviewer)
    reason = (reason or "").strip()
    if not reason:
        raise BatchStateError("a reason is required to exclude items; say what is wrong with them.")
    if len(reason) > MAX_EXCLUSION_REASON:
        raise BatchStateError(f"the exclusion reason is limited to {MAX_EXCLUSION_REASON} characters.")
    return _items_set_excluded(reviewer=reviewer, batch_id=batch_id, item_ids=item_ids, reason=reason)


def batch_items_restore(*, reviewer: User, batch_id: int, item_ids: list[int]) -> RetrainBatch:
    """Put excluded items of a pending batch back (audited like an exclusion)."""
    _require_reviewer(reviewer)
    return _items_set_excluded(reviewer=reviewer, batch_id=batch_id, item_ids=item_ids, reason=None)


def _items_set_excluded(
    *, reviewer: User, batch_id: int, item_ids: list[int], reason: str | None
) -> RetrainBatch:
    exclude = reason is not None
    wanted = sorted({int(i) for i in item_ids})
    if not wanted:
        raise BatchStateError("no item chosen: tick at least one item (item_ids).")
    with transaction.atomic():
        batch = RetrainBatch.objects.select_for_update().get(pk=batch_id)
        if batch.status != BatchStatus.PENDING_REVIEW:
            raise BatchStateError(
                f"batch {batch_id} is {batch.status}; items can only be excluded or restored before approval."
            )
        found = set(batch.items.filter(pk__in=wanted).values_list("pk", flat=True))
        unknown = [i for i in wanted if i not in found]
        if unknown:
            raise BatchStateError(
                f"item(s) {', '.join(map(str, unknown[:20]))} are not in batch {batch_id}; use the ids the "
                "batch's item list shows."
            )
        before = {"rows": batch.size, "content_sha256": batch.content_sha256}
        targets = batch.items.filter(pk__in=wanted, excluded=not exclude)
        changed = list(targets.values_list("pk", flat=True))
        if exclude:
            targets.update(
                excluded=True, exclusion_reason=reason, excluded_by=reviewer, excluded_at=timezone.now()
            )
        else:
            targets.update(excluded=False, exclusion_reason="", excluded_by=None, excluded_at=None)
        if not changed:
            return batch
        _batch_summary_refresh(batch)
        AuditEvent.objects.create(
            action=AuditAction.BATCH_EXCLUDE if exclude else AuditAction.BATCH_RESTORE,
            actor=reviewer,
            batch=batch,
            subject=f"batch:{batch.pk}",
            numbers={
                "item_ids": changed[:1000],
                "items": len(changed),
                "rows_before": before["rows"],
                "rows_after": batch.size,
                "content_sha256_before": before["content_sha256"],
                "content_sha256_after": batch.content_sha256,
            },
            message=reason or "",
        )
    logger.info(
        "batch %s: %s item(s) %s by %s",
        batch_id,
        len(changed),
        "excluded" if exclude else "restored",
        reviewer,
    )
    return batch


def _require_reviewer(user: User) -> None:
    if not has_role(user, Role.REVIEWER):
        raise PermissionError("only reviewers may approve or reject retrain batches.")


MAX_OVERRIDE_REASON = 2000


def batch_approve(
    *,
    reviewer: User,
    batch_id: int,
    recipe: str | None = None,
    override_reason: str = "",
    run_settings: RunSettings | None = None,
) -> TrainingRun:
    """Approve a batch and create its one training run; the dataset task starts after the commit.

    ``run_settings`` are the reviewer's choices for this run (kind, quantization, prompt style, epochs,
    learning rate, LoRA rank; ``training/run_settings.py``): checked against the engine recipe before
    anything is written (``RunSettingsInvalid`` names the field) and stored as the run's
    ``hyperparameters``. ``recipe`` is the kind (sft/dpo/kto) when ``run_settings`` does not name one.

    A batch whose quality checks fail (``training/checks.py``) is approved only with a written
    ``override_reason``; without one ``QualityChecksFailed`` names the failing checks. The audit row
    records the checks, whether they were overridden and the reason.

    Idempotent and safe under concurrency: the batch row is locked, an approved batch returns its
    existing run, and ``TrainingRun.batch`` is unique, so two reviewers approving at once get one run.
    Approving a batch whose run failed or was cancelled retries that run (``run_retry``).

    ``BrokerUnavailable`` after the commit: the approval and its run are recorded and the recovery
    beat sends the run's first step once the broker is back.
    """
    _require_reviewer(reviewer)
    run_settings = run_settings or RunSettings()
    recipe = run_settings.kind or recipe
    if recipe is not None and recipe not in Recipe.values:
        raise RunSettingsInvalid(
            "kind", f"kind {recipe!r} is unknown; use one of {', '.join(Recipe.values)}."
        )
    override_reason = (override_reason or "").strip()
    if len(override_reason) > MAX_OVERRIDE_REASON:
        raise BatchStateError(f"the override reason is limited to {MAX_OVERRIDE_REASON} characters.")
    ended = TrainingRun.objects.filter(
        batch_id=batch_id, status__in=[RunStatus.FAILED, RunStatus.CANCELLED]
    ).first()
    if ended is not None:
        # Approving again restarts its run: a failed run never locks its batch's labels out of training.
        try:
            return run_retry(reviewer=reviewer, run_id=ended.pk)
        except RunStateError:
            return TrainingRun.objects.get(pk=ended.pk)  # another reviewer restarted it just now
    try:
        with transaction.atomic():
            batch = RetrainBatch.objects.select_for_update().get(pk=batch_id)
            if batch.status == BatchStatus.APPROVED:
                return TrainingRun.objects.get(batch=batch)
            if batch.status == BatchStatus.REJECTED:
                raise BatchStateError(f"batch {batch_id} was rejected; it cannot be approved any more.")
            run_settings_check(run_settings, method=recipe or batch.recipe)  # before anything is written
            if batch.items.filter(excluded=True).exists() and not batch.items.filter(excluded=False).exists():
                raise BatchStateError(
                    f"every item of batch {batch_id} is excluded: nothing is left to train on. Restore "
                    "items or reject the batch."
                )
            checks = batch_checks(batch)
            failed = [check for check in checks if not check.passed]
            if failed and not override_reason:
                raise QualityChecksFailed(
                    f"batch {batch_id} fails {len(failed)} quality check(s): "
                    + " ".join(f"[{check.name}] {check.message}" for check in failed)
                    + " Fix the cause, reject the batch, or approve it with a written override_reason."
                )
            updated = RetrainBatch.objects.filter(pk=batch_id, status=BatchStatus.PENDING_REVIEW).update(
                status=BatchStatus.APPROVED,
                reviewer=reviewer,
                reviewed_at=timezone.now(),
                recipe=recipe or batch.recipe,
                reason=override_reason if failed else "",
            )
            if updated != 1:  # lost a race on a database without row locks
                return TrainingRun.objects.get(batch=batch)
            run = TrainingRun.objects.create(
                batch=batch,
                recipe=recipe or batch.recipe,
                recipe_name=settings.RETRAIN_RECIPE,
                hyperparameters=run_settings.overrides(),
                base_model=settings.BASE_MODEL,
                status=RunStatus.QUEUED,
            )
            AuditEvent.objects.create(
                action=AuditAction.BATCH_APPROVE,
                actor=reviewer,
                batch=batch,
                run=run,
                subject=f"batch:{batch.pk}",
                numbers={
                    "rows": batch.size,
                    "content_sha256": batch.content_sha256,
                    "recipe": run.recipe,
                    "run_settings": {**run_settings.chosen(), "kind": run.recipe},
                    "checks_passed": not failed,
                    "override": bool(failed),
                    "failed_checks": [check.name for check in failed],
                    "checks": [check.as_dict() for check in checks],
                },
                message=override_reason if failed else "",
            )
            transaction.on_commit(lambda: pipeline.run_step_send(run.pk))
    except IntegrityError:
        # The other reviewer's transaction created the run first (unique batch): that run is the one.
        return TrainingRun.objects.get(batch_id=batch_id)
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(
            f"batch {batch_id} is approved and run {run.pk} is recorded, but {exc}; the run starts by "
            "itself once it is back (GET /healthz shows each component's state)."
        ) from exc
    logger.info("batch %s approved by %s: run %s queued", batch_id, reviewer, run.pk)
    return run


def batch_reject(*, reviewer: User, batch_id: int, reason: str) -> RetrainBatch:
    """Reject a pending batch with a reason. Its labels stay used (they are not re-batched)."""
    _require_reviewer(reviewer)
    reason = (reason or "").strip()
    if not reason:
        raise BatchStateError("a reason is required to reject a batch; say what is wrong with it.")
    with transaction.atomic():
        batch = RetrainBatch.objects.select_for_update().get(pk=batch_id)
        if batch.status == BatchStatus.REJECTED:
            return batch
        if batch.status != BatchStatus.PENDING_REVIEW:
            raise BatchStateError(
                f"batch {batch_id} is {batch.status}; only a pending batch can be rejected."
            )
        batch.status = BatchStatus.REJECTED
        batch.reviewer = reviewer  # type: ignore[assignment]
        batch.reviewed_at = timezone.now()
        batch.reason = reason
        batch.save(update_fields=["status", "reviewer", "reviewed_at", "reason"])
        AuditEvent.objects.create(
            action=AuditAction.BATCH_REJECT,
            actor=reviewer,
            batch=batch,
            subject=f"batch:{batch.pk}",
            message=reason,
            numbers={"rows": batch.size},
        )
    return batch
