"""Reads of the retraining domain, shared by the API, the pages and the tasks."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import F, Prefetch, Q, QuerySet

from training.models import (
    AuditAction,
    AuditEvent,
    BatchItem,
    BatchStatus,
    Evaluation,
    ModelVersion,
    ProgressPoint,
    RetrainBatch,
    TrainingDataset,
    TrainingRun,
    VersionStatus,
)
from training.run_settings import settings_summary


def versions_list(*, status: str | None = None, base_model: str | None = None) -> QuerySet[ModelVersion]:
    qs = ModelVersion.objects.select_related("parent").order_by("-number")
    if status:
        qs = qs.filter(status=status)
    if base_model:
        # Clients know a local base by its folder name (lineage never shows server paths).
        qs = qs.filter(Q(base_model=base_model) | Q(base_model__endswith=f"/{base_model}"))
    return qs


def _with_run(qs: QuerySet[ModelVersion]) -> QuerySet[ModelVersion]:
    """Versions with their run, its batch, dataset and replayed batches read in the same queries."""
    return qs.select_related("parent", "run__batch", "run__dataset", "run__parent").prefetch_related(
        "run__dataset__replay_batches"
    )


def version_get(*, number: int) -> ModelVersion | None:
    return _with_run(ModelVersion.objects.filter(number=number)).first()


def champion_get() -> ModelVersion | None:
    return ModelVersion.objects.select_related("parent").filter(status=VersionStatus.CHAMPION).first()


def version_run(version: ModelVersion) -> TrainingRun | None:
    """The run that trained ``version``; read from the version when it was fetched with its run."""
    if ModelVersion.run.is_cached(version):  # type: ignore[attr-defined]
        try:
            return version.run  # type: ignore[no-any-return]
        except TrainingRun.DoesNotExist:
            return None
    return TrainingRun.objects.select_related("batch", "dataset", "parent").filter(candidate=version).first()


def _dataset_of(run: TrainingRun | None) -> TrainingDataset | None:
    if run is None:
        return None
    if TrainingRun.dataset.is_cached(run):  # type: ignore[attr-defined]
        try:
            return run.dataset  # type: ignore[no-any-return]
        except TrainingDataset.DoesNotExist:
            return None
    return TrainingDataset.objects.filter(run=run).first()


def version_lineage(version: ModelVersion) -> dict[str, Any]:
    """batch → dataset → parent → base, as plain JSON."""
    run = version_run(version)
    batch = run.batch if run else None
    dataset = _dataset_of(run)
    replays = list(dataset.replay_batches.all()) if dataset else []
    return {
        "run_id": run.pk if run else None,
        # Batches it learnt from that a reviewer approved over failing quality checks (written reason kept
        # on the batch page and in the audit trail).
        "overridden_batches": sorted(b.pk for b in ([batch] if batch else []) + replays if b.reason),
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
                "replay_batches": sorted(b.pk for b in replays),
                # {"name", "rows"} when the seed set's labels are in it (v1; candidates from the base).
                "seed_set": (dataset.manifest or {}).get("seed_set"),
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
    ids = list(batch.items.filter(excluded=False).values_list("pk", flat=True))
    picked = random.Random(batch.pk if seed is None else seed).sample(ids, min(size, len(ids)))
    return list(
        BatchItem.objects.filter(pk__in=picked).select_related("product", "guess_version").order_by("id")
    )


def batch_run(batch: RetrainBatch) -> TrainingRun | None:
    return TrainingRun.objects.filter(batch=batch).first()


def approved_batches_before(batch_id: int) -> QuerySet[RetrainBatch]:
    """The approved batches older than ``batch_id``: what a candidate from the base learns besides its own."""
    return RetrainBatch.objects.filter(status=BatchStatus.APPROVED, pk__lt=batch_id)


def seed_set_name() -> str:
    """The name(s) of the seed set(s) in ``SeedLabel``, as lineage records them."""
    from annotation.models import SeedLabel

    return ", ".join(sorted(set(SeedLabel.objects.values_list("seed_set", flat=True))))


def batch_trains_on(batch: RetrainBatch) -> dict[str, Any]:
    """What approving ``batch`` now would train on, as ``RETRAIN_FROM`` decides (training/services/runs.py):
    from the base, the seed set and every earlier approved batch as well; from the champion, the batch
    (plus the replay share)."""
    from django.conf import settings

    from annotation.models import SeedLabel

    if settings.RETRAIN_FROM != "base":
        return {"mode": "champion", "replay_share": float(settings.RETRAIN_REPLAY_SHARE)}
    earlier = approved_batches_before(batch.pk)
    return {
        "mode": "base",
        "seed_labels": SeedLabel.objects.count(),
        "earlier_batches": earlier.count(),
        "earlier_labels": BatchItem.objects.filter(batch__in=earlier, excluded=False).count(),
    }


def audit_events(*, limit: int = 100) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.select_related("actor", "version", "previous_champion").order_by("-id")[:limit]
    )


def leaderboard() -> dict[str, Any]:
    """Every version with its latest evaluation, its training settings and the test split it was scored
    on, and the baselines on the same split. A fixed number of queries, however many versions."""
    versions = list(
        _with_run(ModelVersion.objects.all())
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
                "settings": settings_summary((version.manifest or {}).get("recipe")),
                "scored_with": evaluation.predictor_settings if evaluation is not None else {},
                "split": test_split_id(evaluation.product_ids, evaluation.truths) if evaluation else "",
            }
        )
    _mark_quantization_twins(rows)
    baselines = list(Evaluation.objects.filter(version__isnull=True).order_by("baseline", "-id"))
    latest_baselines: dict[str, Evaluation] = {}
    for evaluation in baselines:
        latest_baselines.setdefault(evaluation.baseline, evaluation)
    for evaluation in latest_baselines.values():
        evaluation.split_id = test_split_id(evaluation.product_ids, evaluation.truths)  # type: ignore[attr-defined]
    return {"versions": rows, "baselines": list(latest_baselines.values())}


ITEM_VERDICTS = ("accept", "correct", "reject")
ITEM_STATES = ("all", "included", "excluded")


@dataclass(frozen=True)
class ItemFilter:
    """What a reviewer narrows a batch's items to (every field optional; all given ones must hold)."""

    annotator: str = ""  # a username or a user id
    verdict: str = ""
    min_error: Decimal | None = None  # |label − guess| in dollars, at least
    out_of_range: bool = False
    gold_miss: bool = False  # an annotator of the item has missed a gold item
    state: str = "all"

    def active(self) -> bool:
        return self != ItemFilter()


def batch_items_filtered(*, batch: RetrainBatch, item_filter: ItemFilter) -> list[BatchItem]:
    """The batch's items that match ``item_filter``, in id order, each with ``error`` (|label − guess|,
    None when either is missing) and ``annotator_names`` set. Filtered here rather than in SQL so that
    the list-of-ids column works the same on SQLite and PostgreSQL (a batch is thousands of rows)."""
    from django.contrib.auth.models import User

    from annotation.models import AnnotatorStatus

    items = list(
        batch.items.select_related(
            "product", "guess_version", "excluded_by", "resolved_label__task"
        ).order_by("id")
    )
    annotator_ids = sorted({int(a) for item in items for a in item.annotator_ids or []})
    names = dict(User.objects.filter(pk__in=annotator_ids).values_list("pk", "username"))
    missed = set(
        AnnotatorStatus.objects.filter(
            user_id__in=annotator_ids, gold_seen__gt=F("gold_correct")
        ).values_list("user_id", flat=True)
    )
    wanted_annotator: int | None = None
    if item_filter.annotator:
        raw = item_filter.annotator.strip()
        by_name = {name: pk for pk, name in names.items()}
        wanted_annotator = by_name.get(raw, int(raw) if raw.isdigit() else -1)
    out = []
    for item in items:
        ids = [int(a) for a in item.annotator_ids or []]
        item.annotator_names = [names.get(a, f"user {a}") for a in ids]  # type: ignore[attr-defined]
        error = (
            abs(item.price - item.guess_price)
            if item.price is not None and item.guess_price is not None
            else None
        )
        item.error = error  # type: ignore[attr-defined]
        if wanted_annotator is not None and wanted_annotator not in ids:
            continue
        if item_filter.verdict and item.verdict != item_filter.verdict:
            continue
        if item_filter.min_error is not None and (error is None or error < item_filter.min_error):
            continue
        if item_filter.out_of_range and (item.price is None or item.price_trainable):
            continue
        if item_filter.gold_miss and not missed.intersection(ids):
            continue
        if item_filter.state == "included" and item.excluded:
            continue
        if item_filter.state == "excluded" and not item.excluded:
            continue
        out.append(item)
    return out


def batch_annotators(*, batch: RetrainBatch) -> list[tuple[int, str]]:
    """(id, username) of everyone who labelled an item of the batch, by username (the filter's choices)."""
    from django.contrib.auth.models import User

    ids = {int(a) for ids in batch.items.values_list("annotator_ids", flat=True) for a in ids or []}
    return list(User.objects.filter(pk__in=ids).order_by("username").values_list("pk", "username"))


class ItemFilterInvalid(ValueError):  # noqa: N818 - mirrors RunSettingsInvalid
    """A filter value that cannot be used; ``field`` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _flag(params: Any, name: str) -> bool:
    raw = str(params.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ItemFilterInvalid(name, f"{name}={raw!r}: use true or false.")


def item_filter_from_params(params: Any) -> ItemFilter:
    """An ``ItemFilter`` from query parameters (QueryDict or dict); bad values: ``ItemFilterInvalid``."""
    verdict = str(params.get("verdict") or "").strip()
    if verdict and verdict not in ITEM_VERDICTS:
        raise ItemFilterInvalid("verdict", f"verdict={verdict!r}: use one of {', '.join(ITEM_VERDICTS)}.")
    state = str(params.get("state") or "all").strip()
    if state not in ITEM_STATES:
        raise ItemFilterInvalid("state", f"state={state!r}: use one of {', '.join(ITEM_STATES)}.")
    raw_error = str(params.get("min_error") or "").strip().lstrip("$")
    min_error = None
    if raw_error:
        try:
            min_error = Decimal(raw_error)
        except ArithmeticError:
            min_error = None
        if min_error is None or not min_error.is_finite() or min_error < 0:
            raise ItemFilterInvalid(
                "min_error", f"min_error={raw_error!r}: give a dollar amount of 0 or more, e.g. 25."
            )
    return ItemFilter(
        annotator=str(params.get("annotator") or "").strip()[:150],
        verdict=verdict,
        min_error=min_error,
        out_of_range=_flag(params, "out_of_range"),
        gold_miss=_flag(params, "gold_miss"),
        state=state,
    )


def test_split_id(product_ids: list[Any], truths: list[Any]) -> str:
    """A short name of the test items an evaluation scored (same id: comparable numbers)."""
    blob = json.dumps([list(product_ids), [float(t) for t in truths]], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _mark_quantization_twins(rows: list[dict[str, Any]]) -> None:
    """``twins``: the other versions with the same settings but another quantization, on the same split
    (the seeds' 4-bit vs 8-bit question: one recipe, only the quantization differs)."""

    def key(row: dict[str, Any]) -> str:
        rest = {k: v for k, v in row["settings"].items() if k != "quantization"}
        return json.dumps([rest, row["lineage"]["batch"], row["split"]], sort_keys=True, default=str)

    for row in rows:
        row["twins"] = [
            other["version"].name
            for other in rows
            if other is not row
            and row["settings"]
            and row["split"]
            and other["settings"].get("quantization") != row["settings"].get("quantization")
            and key(other) == key(row)
        ]


AUDIT_OBJECT_TYPES = ("batch", "run", "version", "annotator", "gold", "task", "codebook")


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""  # a username, or "system" for decisions no person made
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    since: Any = None  # an aware datetime


def audit_filter_from_params(params: Any) -> AuditFilter:
    """An ``AuditFilter`` from query parameters; bad values raise ``ItemFilterInvalid`` naming them."""
    from django.utils import timezone
    from django.utils.dateparse import parse_date, parse_datetime

    action = str(params.get("action") or "").strip()
    if action and action not in AuditAction.values:
        raise ItemFilterInvalid("action", f"action={action!r}: use one of {', '.join(AuditAction.values)}.")
    object_type = str(params.get("object_type") or "").strip()
    if object_type and object_type not in AUDIT_OBJECT_TYPES:
        raise ItemFilterInvalid(
            "object_type", f"object_type={object_type!r}: use one of {', '.join(AUDIT_OBJECT_TYPES)}."
        )
    object_id = str(params.get("object_id") or "").strip()
    if object_id and not object_type:
        raise ItemFilterInvalid("object_id", "object_id needs an object_type (e.g. object_type=batch).")
    raw_since = str(params.get("since") or "").strip()
    since = None
    if raw_since:
        try:
            since = parse_datetime(raw_since)
            if since is None and (day := parse_date(raw_since)) is not None:
                since = datetime.datetime(
                    day.year, day.month, day.day, tzinfo=timezone.get_current_timezone()
                )
        except ValueError:
            since = None
        if since is None:
            raise ItemFilterInvalid(
                "since",
                f"since={raw_since!r}: give a date or date-time, e.g. 2026-12-04 or 2026-12-04T10:00Z.",
            )
        if timezone.is_naive(since):
            since = timezone.make_aware(since, timezone.get_current_timezone())
    return AuditFilter(
        actor=str(params.get("actor") or "").strip()[:150],
        action=action,
        object_type=object_type,
        object_id=object_id[:50],
        since=since,
    )


def audit_events_filtered(audit_filter: AuditFilter) -> QuerySet[AuditEvent]:
    """Audit events matching the filter, newest first (callers paginate)."""
    from django.db.models import Q

    qs = AuditEvent.objects.select_related("actor", "version", "previous_champion").order_by("-id")
    if audit_filter.actor == "system":
        qs = qs.filter(actor__isnull=True)
    elif audit_filter.actor:
        qs = qs.filter(actor__username=audit_filter.actor)
    if audit_filter.action:
        qs = qs.filter(action=audit_filter.action)
    kind, ident = audit_filter.object_type, audit_filter.object_id
    if kind in ("batch", "run"):
        qs = qs.filter(**{f"{kind}__isnull": False})
        if ident:
            qs = qs.filter(**{f"{kind}_id": int(ident) if ident.isdigit() else -1})
    elif kind == "version":
        qs = qs.filter(Q(version__isnull=False) | Q(previous_champion__isnull=False))
        if ident:
            number = int(ident.lstrip("v")) if ident.lstrip("v").isdigit() else -1
            qs = qs.filter(Q(version__number=number) | Q(previous_champion__number=number))
    elif kind:
        if ident:  # "gold:12" or a list such as "gold:11,12,13"
            head = f"{kind}:"
            qs = qs.filter(subject__startswith=head).filter(
                Q(subject=f"{head}{ident}")
                | Q(subject__startswith=f"{head}{ident},")
                | Q(subject__contains=f",{ident},")
                | Q(subject__endswith=f",{ident}")
            )
        else:
            qs = qs.filter(subject__startswith=f"{kind}:")
    if audit_filter.since is not None:
        qs = qs.filter(created__gte=audit_filter.since)
    return qs


def audit_object(event: AuditEvent) -> dict[str, Any]:
    """What the decision was about, as ``{"type", "id", "label"}`` (the most specific column first)."""
    if event.subject and not event.subject.startswith("batch:"):
        kind, _, ident = event.subject.partition(":")
        return {"type": kind, "id": ident, "label": event.subject}
    if event.version_id is not None:
        return {"type": "version", "id": event.version.number, "label": event.version.name}  # type: ignore[union-attr]
    if event.batch_id is not None:
        return {"type": "batch", "id": event.batch_id, "label": f"batch #{event.batch_id}"}
    if event.run_id is not None:
        return {"type": "run", "id": event.run_id, "label": f"run {event.run_id}"}
    return {"type": "", "id": None, "label": event.subject or "—"}


# --- exports (webapp/exports.py writes the rows) -------------------------------------------------------


def _money(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def batch_export_rows(*, batch: RetrainBatch, full: bool) -> Iterator[dict[str, Any]]:
    """The batch's items, excluded ones included (``excluded`` says so), in id order, streamed: product,
    price, the guess and the model version that made it, verdict, exclusion. ``full`` (a reviewer) adds
    who annotated each item and who excluded it."""
    from django.contrib.auth.models import User

    names: dict[int, str] = {}
    if full:
        ids = {int(a) for ids in batch.items.values_list("annotator_ids", flat=True) for a in ids or []}
        names = dict(User.objects.filter(pk__in=ids).values_list("pk", "username"))
    qs = batch.items.order_by("id").values(
        "id",
        "resolved_label_id",
        "product__external_id",
        "product__title",
        "price",
        "price_trainable",
        "guess_price",
        "guess_version__number",
        "verdict",
        "codebook_version",
        "annotator_ids",
        "excluded",
        "exclusion_reason",
        "excluded_by__username",
        "excluded_at",
    )
    for row in qs.iterator(chunk_size=2000):
        out = {
            "batch_id": batch.pk,
            "item_id": row["id"],
            "label_id": row["resolved_label_id"],
            "product_id": row["product__external_id"],
            "product_title": row["product__title"],
            "price": _money(row["price"]),
            "price_trainable": row["price_trainable"],
            "guess_price": _money(row["guess_price"]),
            # the model version whose guess the item carried (null: a baseline's guess, or none)
            "guess_model_version": row["guess_version__number"],
            "verdict": row["verdict"],
            "codebook_version": row["codebook_version"],
            "excluded": row["excluded"],
            "exclusion_reason": row["exclusion_reason"],
            "excluded_at": row["excluded_at"].isoformat() if row["excluded_at"] else None,
        }
        if full:
            out["annotators"] = [names.get(int(a), f"user {a}") for a in row["annotator_ids"] or []]
            out["excluded_by"] = row["excluded_by__username"]
        yield out


def run_dataset(*, run: TrainingRun) -> TrainingDataset | None:
    return TrainingDataset.objects.filter(run=run).first()


def dataset_export_rows(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """A stored dataset's JSONL records flattened for CSV and Parquet: the training columns as they are,
    and the record's ``meta`` (product, batch, the model version whose guess it answered) as columns of
    their own (null in a dataset built before records carried it)."""
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        meta = record.pop("meta", None) or {}
        yield {
            **record,
            "product_id": meta.get("product_id"),
            "batch_id": meta.get("batch_id"),
            "guess_model_version": meta.get("guess_model_version"),
        }
