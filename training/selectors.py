"""Reads of the retraining domain, shared by the API, the pages and the tasks."""

from __future__ import annotations

import random
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from training.models import (
    AuditAction,
    AuditEvent,
    BatchItem,
    Evaluation,
    ModelVersion,
    ProgressPoint,
    RetrainBatch,
    TrainingRun,
    VersionStatus,
)


def versions_list(*, status: str | None = None, base_model: str | None = None) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.select_related("parent").order_by("-number")
    if status:
        qs = qs.filter(status=status)
    if base_model:
        # Clients know a local base by its folder name (lineage never shows server paths).
        qs = qs.filter(Q(base_model=base_model) | Q(base_model__endswith=f"/{base_model}"))
    return qs


def version_get(*, number: int) -> ModelVersion | None:
    return ModelVersion.objects.select_related("parent").filter(number=number).first()


def champion_get() -> ModelVersion | None:
    return ModelVersion.objects.select_related("parent").filter(status=VersionStatus.CHAMPION).first()


def version_run(version: ModelVersion) -> TrainingRun | None:
    return TrainingRun.objects.select_related("batch", "dataset", "parent").filter(candidate=version).first()


def version_lineage(version: ModelVersion) -> dict[str, Any]:
    """batch → dataset → parent → base, as plain JSON."""
    run = version_run(version)
    batch = run.batch if run else None
    dataset = getattr(run, "dataset", None) if run else None
    return {
        "run_id": run.pk if run else None,
        "batch": (
            {
                "id": batch.pk,
                "size": batch.size,
                "content_sha256": batch.content_sha256,
                "recipe": batch.recipe,
            }
            if batch
            else None
        ),
        "dataset": (
            {
                "kind": dataset.kind,
                "rows": dataset.rows,
                "sha256": dataset.sha256,
                "replay_batches": list(dataset.replay_batches.values_list("pk", flat=True)),
            }
            if dataset
            else None
        ),
        "parent": version.parent.name if version.parent else None,
        "base": {"model": version.base_label, "revision": version.base_revision},
    }


def runs_list(*, status: str | None = None) -> QuerySet[TrainingRun]:
    qs = TrainingRun.objects.select_related("batch", "candidate", "parent").order_by("-id")
    if status:
        qs = qs.filter(status=status)
    return qs


def run_get(*, run_id: int) -> TrainingRun | None:
    return TrainingRun.objects.select_related("batch", "candidate", "parent").filter(pk=run_id).first()


def run_points(*, run_id: int, after_step: int = -1) -> list[ProgressPoint]:
    return list(ProgressPoint.objects.filter(run_id=run_id, step__gt=after_step).order_by("step"))


def batches_list(*, status: str | None = None) -> QuerySet[RetrainBatch]:
    qs = RetrainBatch.objects.select_related("reviewer", "run").order_by("-id")
    if status:
        qs = qs.filter(status=status)
    return qs


def batch_get(*, batch_id: int) -> RetrainBatch | None:
    return RetrainBatch.objects.select_related("reviewer").filter(pk=batch_id).first()


def batch_sample(*, batch: RetrainBatch, size: int = 20, seed: int | None = None) -> list[BatchItem]:
    """A random sample of the batch's items (the same seed gives the same sample)."""
    ids = list(batch.items.values_list("pk", flat=True))
    picked = random.Random(batch.pk if seed is None else seed).sample(ids, min(size, len(ids)))
    return list(
        BatchItem.objects.filter(pk__in=picked).select_related("product", "guess_version").order_by("id")
    )


def batch_run(batch: RetrainBatch) -> TrainingRun | None:
    return TrainingRun.objects.filter(batch=batch).first()


def audit_events(*, limit: int = 100) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.select_related("actor", "version", "previous_champion").order_by("-id")[:limit]
    )


def leaderboard() -> dict[str, Any]:
    """Every version with its latest evaluation, and the baselines on the same test split."""
    versions = list(
        ModelVersion.objects.select_related("parent")
        .prefetch_related(Prefetch("evaluations", queryset=Evaluation.objects.order_by("-id")))
        .order_by("number")
    )
    # Versions made champion over the gate's rejection: the audit row says so, the status cannot.
    overridden = set(
        AuditEvent.objects.filter(action=AuditAction.ROLLBACK, numbers__has_key="gate_override").values_list(
            "version_id", flat=True
        )
    )
    fingerprints = set()
    rows = []
    for version in versions:
        evaluation = next(iter(version.evaluations.all()), None)
        if evaluation is not None:
            fingerprints.add(evaluation.split_fingerprint)
        rows.append(
            {
                "version": version,
                "evaluation": evaluation,
                "lineage": version_lineage(version),
                "gate_overridden": version.pk in overridden,
            }
        )
    baselines = list(Evaluation.objects.filter(version__isnull=True).order_by("baseline", "-id"))
    latest_baselines: dict[str, Evaluation] = {}
    for evaluation in baselines:
        latest_baselines.setdefault(evaluation.baseline, evaluation)
    return {"versions": rows, "baselines": list(latest_baselines.values())}
