"""Annotation reads: progress, codebook, queue and quality reports, adjudication, export."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, time
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from annotation.codebook import markdown_diff, markdown_diff_html, markdown_render
from annotation.conf import annotation_config, within_tolerance
from annotation.consensus import price_in_range, vote_price
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    AssignmentStatus,
    CodebookVersion,
    ResolvedLabel,
    Task,
    TaskStatus,
    Verdict,
)
from annotation.queue import RETURNABLE


def _start_of_today() -> datetime:
    return timezone.make_aware(datetime.combine(timezone.localdate(), time.min))


# The annotator's corner says how many items are left, not a census: past this many it shows "10,000+".
# An exact count of a 1,000,000-item queue cost about 130 ms of PostgreSQL per page item (measured on the
# queue benchmark's database); a count that stops at the cap reads at most that many rows.
REMAINING_CAP = 10_000


def annotator_progress(*, annotator: User) -> dict[str, Any]:
    """What the annotator sees in the corner: done today, items left for them, own gold accuracy.

    ``remaining`` is exact up to ``REMAINING_CAP`` fresh items; beyond, it is the cap and
    ``remaining_capped`` is True (the page shows "10,000+").
    """
    done_today = Annotation.objects.filter(annotator=annotator, created__gte=_start_of_today()).count()
    seen = Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator)
    fresh = (
        Task.objects.filter(status=TaskStatus.OPEN, is_gold=False, claimed_count__lt=F("overlap"))
        .filter(~Exists(seen))
        .values("pk")[: REMAINING_CAP + 1]
        .count()  # COUNT(*) over a LIMITed subquery
    )
    capped = fresh > REMAINING_CAP
    fresh = min(fresh, REMAINING_CAP)
    # Returned items, and the item leased ahead (pre-fetch): still to do, though no longer fresh.
    returned = Assignment.objects.filter(
        Q(status__in=RETURNABLE, task__status=TaskStatus.OPEN) | Q(status=AssignmentStatus.AHEAD),
        annotator=annotator,
        task__is_gold=False,
    ).count()
    status = AnnotatorStatus.objects.filter(user=annotator).first()
    return {
        "done_today": done_today,
        "remaining": fresh + returned,
        "remaining_capped": capped,
        "gold_seen": status.gold_seen if status else 0,
        "gold_accuracy": status.gold_accuracy if status else None,
        "paused": bool(status and status.paused),
        "paused_reason": status.paused_reason if status else "",
    }


def annotation_last(*, annotator: User) -> Annotation | None:
    """The annotator's newest annotation (what ``undo`` would take back)."""
    return Annotation.objects.filter(annotator=annotator).order_by("-created", "-id").first()


def annotations_of(*, annotator: User) -> QuerySet[Annotation]:
    """An annotator's own annotations, newest first (never anyone else's)."""
    return (
        Annotation.objects.filter(annotator=annotator)
        .select_related("task__product", "codebook_version")
        .order_by("-created", "-id")
    )


# --- codebook ------------------------------------------------------------------------------------------


def codebook_current() -> CodebookVersion | None:
    return CodebookVersion.objects.order_by("-number").first()


def codebook_versions() -> QuerySet[CodebookVersion]:
    return CodebookVersion.objects.select_related("author").order_by("-number")


def codebook_get(*, number: int) -> CodebookVersion | None:
    return CodebookVersion.objects.filter(number=number).first()


def codebook_render(version: CodebookVersion | None) -> SafeString:
    """The version's markdown as sanitized HTML, safe to put in a template as is."""
    if version is None:
        return mark_safe("")
    return mark_safe(markdown_render(version.markdown))  # noqa: S308 - sanitized by nh3


def codebook_diff(a: CodebookVersion | None, b: CodebookVersion, *, html: bool = False) -> str:
    """What changed from version ``a`` to ``b`` (unified diff; ``html=True``: escaped, classed lines)."""
    old = a.markdown if a else ""
    names = {"old_name": f"v{a.number}" if a else "(none)", "new_name": f"v{b.number}"}
    if html:
        return mark_safe(markdown_diff_html(old, b.markdown, **names))  # noqa: S308 - escaped line by line
    return markdown_diff(old, b.markdown, **names)


# --- queue and adjudication ----------------------------------------------------------------------------


def queue_stats() -> dict[str, Any]:
    """Counts for the reviewers' queue card and ``GET annotation/queue``. Of the items (gold apart):
    ``total = open + needs_adjudication + resolved + flagged + dropped``; ``open = available + claimed``:
    waiting for an annotator, or taken by one. Gold items are counted under ``gold`` whatever their state."""
    now = timezone.now()
    item = Q(is_gold=False)
    tasks = Task.objects.aggregate(
        total=Count("id", filter=item),
        open=Count("id", filter=item & Q(status=TaskStatus.OPEN)),
        available=Count("id", filter=item & Q(status=TaskStatus.OPEN, claimed_count__lt=F("overlap"))),
        needs_adjudication=Count("id", filter=item & Q(status=TaskStatus.NEEDS_ADJUDICATION)),
        resolved=Count("id", filter=item & Q(status=TaskStatus.RESOLVED)),
        flagged=Count("id", filter=item & Q(status=TaskStatus.FLAGGED)),
        dropped=Count("id", filter=item & Q(status=TaskStatus.DROPPED)),
        gold=Count("id", filter=Q(is_gold=True)),
    )
    # Open but not waiting: every copy is claimed by an annotator (on screen, or fetched ahead).
    tasks["claimed"] = tasks["open"] - tasks["available"]
    leases = Assignment.objects.filter(status=AssignmentStatus.LIVE).aggregate(
        live=Count("id"), overdue=Count("id", filter=Q(expires_at__lt=now))
    )
    return {
        "tasks": tasks,
        "leases": leases,
        "annotations_total": Annotation.objects.count(),
        "annotations_today": Annotation.objects.filter(created__gte=_start_of_today()).count(),
        "annotators_paused": AnnotatorStatus.objects.filter(paused=True).count(),
    }


def adjudication_queue() -> QuerySet[Task]:
    """Tasks whose annotators disagreed beyond tolerance, oldest first, with their annotations."""
    return (
        Task.objects.filter(status=TaskStatus.NEEDS_ADJUDICATION)
        .select_related("product", "guess")
        .prefetch_related(
            Prefetch("annotations", queryset=Annotation.objects.select_related("annotator").order_by("id"))
        )
        .order_by("id")
    )


def annotators_paused() -> QuerySet[AnnotatorStatus]:
    return AnnotatorStatus.objects.filter(paused=True).select_related("user").order_by("paused_at")


# --- quality reports -----------------------------------------------------------------------------------


def _alpha(matrix: list[list[float]]) -> float | None:
    """Krippendorff's alpha (interval) of an annotators × units matrix; None when undefined."""
    import krippendorff
    import numpy as np

    if len(matrix) < 2 or not matrix[0]:
        return None
    data = np.array(matrix, dtype=float)
    if np.count_nonzero(~np.isnan(data).all(axis=0)) < 2:
        return None
    try:
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    except (ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(value) else round(value, 4)


def agreement_report(*, limit: int = 50_000) -> dict[str, Any]:
    """Agreement on the newest ``limit`` annotations of non-gold tasks.

    Krippendorff's alpha (interval) on log price — overall and per annotator (on the items they
    priced, with everyone's prices on those items) — over items with at least two prices; on the same
    items, the share of prices within tolerance of the resolved label; each annotator's accept rate.
    Prices outside 0.50–999.49 are left out of every figure and counted in ``out_of_range`` (overall and
    per annotator).
    """
    cfg = annotation_config()
    rows = list(
        Annotation.objects.filter(task__is_gold=False)
        .order_by("-id")
        .values_list(
            "task_id",
            "annotator_id",
            "annotator__username",
            "verdict",
            "corrected_price",
            "task__guess__price",
            "task__resolved_label__price",
        )[:limit]
    )
    names: dict[int, str] = {}
    by_task: dict[int, dict[int, float]] = defaultdict(dict)
    per: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    within_all = [0, 0]
    compared: list[tuple[int, int, Any, Any]] = []
    out_of_range = 0
    for task_id, user_id, username, verdict, corrected, guess_price, label_price in rows:
        names[user_id] = username
        stats = per[user_id]
        stats["n"] += 1
        stats["accept"] += verdict == Verdict.ACCEPT
        price = vote_price(verdict, corrected, guess_price)
        if price is None or price <= 0:
            continue
        if not price_in_range(price):  # one typo ($999,999,999) must not move any figure: counted apart
            stats["out_of_range"] += 1
            out_of_range += 1
            continue
        by_task[task_id][user_id] = math.log(float(price))
        if label_price is not None and price_in_range(label_price):
            compared.append((task_id, user_id, price, label_price))
    units = [t for t, values in by_task.items() if len(values) >= 2]
    # Within tolerance only where the label came from two or more prices: an item priced once is its own
    # label, and counting it would show 100% agreement where nobody was compared with anybody.
    shared = set(units)
    for task_id, user_id, price, label_price in compared:
        if task_id not in shared:
            continue
        ok = within_tolerance(Decimal(price), Decimal(label_price), cfg)
        per[user_id]["compared"] += 1
        per[user_id]["within"] += ok
        within_all[0] += 1
        within_all[1] += ok
    annotators = sorted(names)

    def matrix(unit_ids: list[int]) -> list[list[float]]:
        return [[by_task[t].get(a, math.nan) for t in unit_ids] for a in annotators]

    per_annotator = []
    for user_id in annotators:
        stats = per[user_id]
        own_units = [t for t in units if user_id in by_task[t]]
        per_annotator.append(
            {
                "annotator_id": user_id,
                "username": names[user_id],
                "annotations": stats["n"],
                "accept_rate": round(stats["accept"] / stats["n"], 4) if stats["n"] else None,
                "shared_items": len(own_units),
                "alpha": _alpha(matrix(own_units)),
                "within_tolerance": round(stats["within"] / stats["compared"], 4)
                if stats["compared"]
                else None,
                "out_of_range": stats["out_of_range"],
            }
        )
    return {
        "annotations": len(rows),
        "items_with_two_or_more_prices": len(units),
        "alpha": _alpha(matrix(units)),
        "within_tolerance": round(within_all[1] / within_all[0], 4) if within_all[0] else None,
        "tolerance": {"abs": float(cfg.tolerance_abs), "rel": float(cfg.tolerance_rel)},
        "out_of_range": out_of_range,
        "per_annotator": per_annotator,
    }


def blind_vs_shown_report(*, limit: int = 50_000) -> dict[str, Any]:
    """Anchoring check: priced answers on blind items vs items that showed the guess.

    Per group: how many, the share of corrections, the mean absolute error against the known price
    (gold items and products with a true price), and the mean relative distance from the model's guess.
    Shown items much closer to the guess than blind ones suggest annotators anchor on it. Answers
    outside 0.50–999.49 are left out of every figure and counted in ``out_of_range``.
    """
    rows = (
        Annotation.objects.exclude(verdict=Verdict.REJECT)
        .order_by("-id")
        .values_list(
            "guess_shown", "verdict", "corrected_price", "task__guess__price", "task__product__price"
        )[:limit]
    )
    groups: dict[str, dict[str, float]] = {
        "shown": defaultdict(float),
        "blind": defaultdict(float),
    }
    for was_shown, verdict, corrected, guess_price, true_price in rows:
        group = groups["shown" if was_shown else "blind"]
        price = vote_price(verdict, corrected, guess_price)
        if price is None:
            continue
        if not price_in_range(price):  # a typo would dominate every mean: counted apart
            group["out_of_range"] += 1
            continue
        group["n"] += 1
        group["corrections"] += verdict == Verdict.CORRECT
        if true_price:
            group["n_truth"] += 1
            group["abs_error_sum"] += abs(float(price) - float(true_price))
        if guess_price:
            group["n_guess"] += 1
            group["rel_to_guess_sum"] += abs(float(price) - float(guess_price)) / float(guess_price)

    def summary(g: dict[str, float]) -> dict[str, Any]:
        return {
            "n": int(g["n"]),
            "correction_rate": round(g["corrections"] / g["n"], 4) if g["n"] else None,
            "mean_abs_error": round(g["abs_error_sum"] / g["n_truth"], 2) if g["n_truth"] else None,
            "n_with_truth": int(g["n_truth"]),
            "mean_rel_distance_from_guess": (
                round(g["rel_to_guess_sum"] / g["n_guess"], 4) if g["n_guess"] else None
            ),
            "out_of_range": int(g["out_of_range"]),
        }

    shown, blind = summary(groups["shown"]), summary(groups["blind"])
    anchoring = None
    if (
        shown["mean_rel_distance_from_guess"] is not None
        and blind["mean_rel_distance_from_guess"] is not None
    ):
        anchoring = round(blind["mean_rel_distance_from_guess"] - shown["mean_rel_distance_from_guess"], 4)
    return {"shown": shown, "blind": blind, "anchoring_gap": anchoring}


# --- export --------------------------------------------------------------------------------------------


def annotations_export(*, since_id: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Annotations as plain dicts, oldest first, streamed in chunks (for JSONL export)."""
    qs = (
        Annotation.objects.filter(id__gt=since_id)
        .order_by("id")
        .values(
            "id",
            "task_id",
            "task__product__external_id",
            "annotator__username",
            "verdict",
            "corrected_price",
            "price_flag",
            "reason_code",
            "seconds_spent",
            "codebook_version__number",
            "guess_shown",
            "task__guess__price",
            "task__guess__source",
            "task__guess__model_version__number",
            "task__is_gold",
            "created",
        )
    )
    if limit is not None:
        qs = qs[:limit]
    for row in qs.iterator(chunk_size=2000):
        yield {
            "id": row["id"],
            "task_id": row["task_id"],
            "product_external_id": row["task__product__external_id"],
            "annotator": row["annotator__username"],
            "verdict": row["verdict"],
            "corrected_price": str(row["corrected_price"]) if row["corrected_price"] is not None else None,
            "price_flag": row["price_flag"],
            "reason_code": row["reason_code"],
            "seconds_spent": row["seconds_spent"],
            "codebook_version": row["codebook_version__number"],
            "guess_shown": row["guess_shown"],
            "guess_price": str(row["task__guess__price"]) if row["task__guess__price"] is not None else None,
            "guess_source": row["task__guess__source"],
            # the model version whose guess the item carried (null: a baseline's guess, or none)
            "guess_model_version": row["task__guess__model_version__number"],
            "gold": row["task__is_gold"],
            "created": row["created"].isoformat(),
        }


def _money(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def resolved_labels() -> QuerySet[ResolvedLabel]:
    """Every resolved label, oldest first (the labels export filters this)."""
    return ResolvedLabel.objects.order_by("id")


def resolved_label_rows(labels: QuerySet[ResolvedLabel]) -> Iterator[dict[str, Any]]:
    """``labels`` as plain dicts for the export, streamed in chunks: the label, its product, the guess
    the item carried (price, source, and the model version that made it) and the batch holding it."""
    qs = labels.values(
        "id",
        "task_id",
        "task__product__external_id",
        "task__product__title",
        "task__product__split",
        "price",
        "price_flag",
        "method",
        "n_annotations",
        "n_accept",
        "n_correct",
        "n_reject",
        "spread",
        "task__is_blind",
        "task__guess__price",
        "task__guess__source",
        "task__guess__model_version__number",
        "batch_item__batch_id",
        "created",
    )
    for row in qs.iterator(chunk_size=2000):
        yield {
            "id": row["id"],
            "task_id": row["task_id"],
            "product_id": row["task__product__external_id"],
            "product_title": row["task__product__title"],
            "split": row["task__product__split"],
            "price": _money(row["price"]),
            "price_flag": row["price_flag"],
            "method": row["method"],
            "n_annotations": row["n_annotations"],
            "n_accept": row["n_accept"],
            "n_correct": row["n_correct"],
            "n_reject": row["n_reject"],
            "spread": _money(row["spread"]),
            "guess_shown": not row["task__is_blind"],
            "guess_price": _money(row["task__guess__price"]),
            "guess_source": row["task__guess__source"],
            # the model version whose guess the item carried (null: a baseline's guess, or none)
            "guess_model_version": row["task__guess__model_version__number"],
            "batch_id": row["batch_item__batch_id"],
            "created": row["created"].isoformat(),
        }
