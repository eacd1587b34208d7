"""Annotation writes: guesses, tasks, submit/undo, codebook, gold pauses, adjudication.

Every public function takes keyword arguments only. Input errors raise
``django.core.exceptions.ValidationError`` with a dict naming the field; domain refusals raise the
``annotation.exceptions`` classes. The queue itself (lease, skip, expiry) lives in ``annotation/queue.py``,
submit and undo in ``annotation/submission.py``; both are re-exported here so that callers have one
module to import.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.codebook import flag_codes_parse, reason_codes_parse
from annotation.conf import AnnotationConfig, annotation_config
from annotation.consensus import price_flag
from annotation.exceptions import TaskFull
from annotation.models import (
    AnnotatorStatus,
    CodebookAck,
    CodebookVersion,
    Guess,
    Product,
    ResolutionMethod,
    ResolvedLabel,
    SeedLabel,
    Split,
    Task,
    TaskStatus,
    Verdict,
)
from annotation.queue import (
    annotator_status_locked,
    assignment_skip,
    assignment_unskip_last,
    lease_ahead,
    lease_next_task,
    leases_expire,
    leases_release_for_annotator,
)
from annotation.submission import (
    PRICE_UNCONFIRMED,
    annotation_edit,
    annotation_editable,
    annotation_submit,
    annotation_undo_last,
    annotator_pause,
    price_parse,
    price_unusual,
)
from training.models import AuditAction, AuditEvent

__all__ = [
    "PRICE_UNCONFIRMED",
    "adjudication_resolve",
    "annotation_edit",
    "annotation_editable",
    "annotation_submit",
    "annotation_undo_last",
    "annotator_pause",
    "annotator_unpause",
    "assignment_skip",
    "assignment_unskip_last",
    "codebook_acknowledge",
    "codebook_publish",
    "gold_tasks_create",
    "guesses_record_bulk",
    "lease_ahead",
    "lease_next_task",
    "leases_expire",
    "leases_release_for_annotator",
    "price_parse",
    "price_unusual",
    "tasks_create_for_products",
]

MAX_CODEBOOK_CHARS = 200_000


# --- guesses and tasks ---------------------------------------------------------------------------------


def guesses_record_bulk(
    *, rows: Iterable[Mapping[str, Any]], model_version: Any = None, source: str
) -> list[Guess]:
    """Store predicted prices. Each row: ``product_id`` (or ``product``), ``price``, optional ``topk``
    (``[[price, prob], …]``), ``entropy``, ``latency_ms``. ``source`` names the predictor
    ("model" for ``model_version``, "baseline:mean", "baseline:tfidf-ridge", …)."""
    if not source:
        raise ValidationError({"source": ["Name the predictor, e.g. 'model' or 'baseline:mean'."]})
    guesses = []
    for index, row in enumerate(rows):
        product_id = row.get("product_id") or getattr(row.get("product"), "id", None)
        if not product_id:
            raise ValidationError({"product_id": [f"row {index}: no product_id."]})
        topk = [[float(p), float(prob)] for p, prob in row.get("topk") or []]
        entropy = row.get("entropy")
        latency = row.get("latency_ms")
        guesses.append(
            Guess(
                product_id=product_id,
                model_version=model_version,
                source=source,
                price=price_parse(row["price"], field=f"rows[{index}].price"),
                topk=topk,
                entropy=float(entropy) if entropy is not None else None,
                latency_ms=float(latency) if latency is not None else None,
            )
        )
    return Guess.objects.bulk_create(guesses, batch_size=1000)


def _is_blind(product: Product, cfg: AnnotationConfig) -> bool:
    # Stable per product (a hash, not a coin flip): re-queuing a product keeps its blind/shown side.
    bucket = zlib.crc32(f"blind:{product.external_id}".encode()) % 10_000
    return bucket < cfg.blind_share * 10_000


def _task_overlap(product: Product, cfg: AnnotationConfig) -> int:
    """``ANNOTATION_OVERLAP``, or at least 2 for the ``ANNOTATION_OVERLAP_SHARE`` of products (a stable
    hash, like the blind share, but an independent one: shared items are blind as often as the rest)."""
    bucket = zlib.crc32(f"overlap:{product.external_id}".encode()) % 10_000
    return max(2, cfg.overlap) if bucket < cfg.overlap_share * 10_000 else cfg.overlap


def _latest_guesses(product_ids: list[int], source: str | None) -> dict[int, Guess]:
    qs = Guess.objects.filter(product_id__in=product_ids)
    if source:
        qs = qs.filter(source=source)
    latest: dict[int, Guess] = {}
    for guess in qs.order_by("product_id", "-id"):
        latest.setdefault(guess.product_id, guess)
    return latest


def tasks_create_for_products(
    *, products: Iterable[Product | int], overlap: int | None = None, guess_source: str | None = None
) -> int:
    """Queue pool products for annotation with their latest guess; the number of tasks created.

    Each task needs ``overlap`` annotations; by default ``ANNOTATION_OVERLAP``, raised to 2 for the
    ``ANNOTATION_OVERLAP_SHARE`` of products (consensus on a sample, so agreement can be measured).

    Skips test-split products (never labelled), products without a guess, products that already
    have an unresolved task, gold products and seeded products (``SeedLabel``). Priority is the guess's
    entropy with ``ANNOTATION_ROUTING=entropy``.
    """
    cfg = annotation_config()
    fixed_overlap = overlap  # None: from the settings, with the overlap share
    if overlap is not None and not 1 <= overlap <= 50:
        raise ValidationError({"overlap": [f"overlap={overlap} must be between 1 and 50."]})
    ids = [p if isinstance(p, int) else p.id for p in products]
    created = 0
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        busy = set(
            Task.objects.filter(product_id__in=chunk, is_gold=False)
            .exclude(status=TaskStatus.RESOLVED)
            .values_list("product_id", flat=True)
        )
        # Gold products are served as check items only, and seeded products are labelled already.
        busy.update(
            Task.objects.filter(product_id__in=chunk, is_gold=True).values_list("product_id", flat=True)
        )
        busy.update(SeedLabel.objects.filter(product_id__in=chunk).values_list("product_id", flat=True))
        pool = (
            Product.objects.filter(id__in=chunk, split=Split.POOL)
            .exclude(id__in=busy)
            .only("id", "external_id")
        )
        guesses = _latest_guesses(chunk, guess_source)
        tasks = []
        for product in pool:
            guess = guesses.get(product.id)
            if guess is None:
                continue
            entropy = guess.entropy or 0.0
            tasks.append(
                Task(
                    product=product,
                    guess=guess,
                    overlap=fixed_overlap or _task_overlap(product, cfg),
                    is_blind=_is_blind(product, cfg),
                    priority=entropy if cfg.routing == "entropy" else 0.0,
                )
            )
        created += len(Task.objects.bulk_create(tasks, batch_size=1000))
    return created


def gold_tasks_create(*, products: Iterable[Product], tolerance: Decimal | None = None) -> int:
    """Make gold items of pool products whose true price is known (``product.price``); the number made.

    The demo's shortcut to ``annotation.gold.gold_items_create`` (the one writer of gold items):
    products without a price, test-split products and products that already are gold are skipped.
    """
    from annotation.gold import gold_items_create

    extra = {"tolerance": str(tolerance)} if tolerance is not None else {}
    rows = [
        (n, {"id": p.external_id, "price": str(p.price), **extra})
        for n, p in enumerate(products, start=1)
        if p.price is not None
    ]
    return len(gold_items_create(rows=rows, actor=None, partial=True).created)


# --- annotations ---------------------------------------------------------------------------------------

# --- codebook ------------------------------------------------------------------------------------------


MAX_CHANGE_NOTE_CHARS = 2000


def codebook_publish(*, author: User, markdown: str, change_note: str = "") -> CodebookVersion:
    """Publish the next codebook version; every annotator must acknowledge it before their next item.

    Refused (``ValidationError`` naming the field): empty text; text identical to the current version
    (it would make every annotator re-acknowledge nothing); a later version without a ``change_note``
    saying what changed and why. Audited as ``codebook_publish`` with the author.
    """
    text = (markdown or "").replace("\r\n", "\n").strip()
    note = (change_note or "").replace("\r\n", "\n").strip()
    if not text:
        raise ValidationError({"markdown": ["The codebook cannot be empty."]})
    if len(text) > MAX_CODEBOOK_CHARS:
        raise ValidationError({"markdown": [f"The codebook is limited to {MAX_CODEBOOK_CHARS} characters."]})
    if len(note) > MAX_CHANGE_NOTE_CHARS:
        raise ValidationError(
            {"change_note": [f"The change note is limited to {MAX_CHANGE_NOTE_CHARS} characters."]}
        )
    codes = reason_codes_parse(text)
    flag_codes = flag_codes_parse(
        text
    )  # none: annotators flag with the default reasons (annotation/flags.py)
    for _attempt in range(5):
        try:
            with transaction.atomic():
                current = CodebookVersion.objects.select_for_update().order_by("-number").first()
                if current is not None and current.markdown.strip() == text:
                    raise ValidationError(
                        {
                            "markdown": [
                                f"The text is the same as the current v{current.number}: nothing to publish. "
                                "Edit the rules first (annotators would re-acknowledge unchanged rules)."
                            ]
                        }
                    )
                if current is not None and not note:
                    raise ValidationError(
                        {
                            "change_note": [
                                "A change note is required: say what changed and why, in a sentence."
                            ]
                        }
                    )
                number = (current.number if current else 0) + 1
                version = CodebookVersion.objects.create(
                    number=number,
                    markdown=text,
                    reason_codes=codes,
                    flag_codes=flag_codes,
                    author=author,
                    change_note=note or "first version",
                )
                AuditEvent.objects.create(
                    action=AuditAction.CODEBOOK_PUBLISH,
                    actor=author,
                    subject=f"codebook:v{number}",
                    numbers={
                        "number": number,
                        "reason_codes": len(codes),
                        "flag_codes": len(flag_codes),
                        "previous": current.number if current else None,
                    },
                    message=version.change_note,
                )
                return version
        except IntegrityError:  # two reviewers published at once: take the next number
            continue
    raise IntegrityError("Could not allocate a codebook version number; try again.")


def codebook_acknowledge(*, annotator: User, version_number: int) -> CodebookAck:
    version = CodebookVersion.objects.filter(number=version_number).first()
    if version is None:
        raise ValidationError({"version": [f"There is no codebook v{version_number}."]})
    ack, _ = CodebookAck.objects.get_or_create(annotator=annotator, version=version)
    return ack


# --- reviewers -----------------------------------------------------------------------------------------


def annotator_unpause(*, reviewer: User, annotator: User) -> AnnotatorStatus:
    """Let a paused annotator work again; their gold accuracy is judged afresh from now on."""
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        status.paused = False
        status.paused_reason = ""
        status.unpaused_by = reviewer
        status.unpaused_at = timezone.now()
        status.gold_baseline_seen = status.gold_seen
        status.gold_baseline_correct = status.gold_correct
        status.save()
        AuditEvent.objects.create(
            action=AuditAction.ANNOTATOR_UNPAUSE,
            actor=reviewer,
            subject=f"annotator:{annotator.pk}",
            numbers={"gold_seen": status.gold_seen, "gold_correct": status.gold_correct},
        )
        return status


def adjudication_resolve(*, reviewer: User, task_id: int, price: Any) -> ResolvedLabel:
    """A reviewer settles a task the annotators disagreed on (``price=None`` resolves it as rejected)."""
    value = price_parse(price, field="price") if price not in (None, "") else None
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(id=task_id, is_gold=False).first()
        if task is None:
            raise ValidationError({"task_id": [f"There is no task {task_id}."]})
        if task.status != TaskStatus.NEEDS_ADJUDICATION:
            raise TaskFull(
                f"Task {task_id} is {task.status}: only tasks needing adjudication can be settled."
            )
        verdicts = list(task.annotations.values_list("verdict", "corrected_price"))
        prices = [p for _, p in verdicts if p is not None]
        label = ResolvedLabel.objects.create(
            task=task,
            price=value,
            price_flag=price_flag(value) if value is not None else "",
            method=ResolutionMethod.ADJUDICATED if value is not None else ResolutionMethod.REJECTED,
            n_annotations=len(verdicts),
            n_accept=sum(v == Verdict.ACCEPT for v, _ in verdicts),
            n_correct=sum(v == Verdict.CORRECT for v, _ in verdicts),
            n_reject=sum(v == Verdict.REJECT for v, _ in verdicts),
            spread=(max(prices) - min(prices)) if prices else None,
            adjudicated_by=reviewer,
        )
        Task.objects.filter(id=task.id, status=TaskStatus.NEEDS_ADJUDICATION).update(
            status=TaskStatus.RESOLVED, resolved_at=timezone.now()
        )
        AuditEvent.objects.create(
            action=AuditAction.ADJUDICATE,
            actor=reviewer,
            subject=f"task:{task.pk}",
            numbers={
                "price": str(value) if value is not None else None,
                "annotator_prices": [str(p) for p in prices],
            },
        )
        return label
