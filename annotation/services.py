"""Annotation writes: guesses, tasks, submit/undo, codebook, gold pauses, adjudication.

Every public function takes keyword arguments only. Input errors raise
``django.core.exceptions.ValidationError`` with a dict naming the field; domain refusals raise the
``annotation.exceptions`` classes. The queue itself (lease, skip, expiry) lives in ``annotation/queue.py``
and is re-exported here so that callers have one module to import.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotation.codebook import reason_codes_parse
from annotation.conf import AnnotationConfig, annotation_config
from annotation.consensus import CENT, PRICE_MAX, PRICE_MIN, Vote, consensus_decide, price_flag, vote_price
from annotation.exceptions import AnnotatorPaused, LeaseLost, TaskFull, UndoNotAllowed
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    AssignmentStatus,
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
from annotation.quarantine import quarantine_hold_for_annotator
from annotation.queue import (
    _assignment_locked,
    _single_statement_writes,
    annotation_record,
    annotator_status_locked,
    assignment_skip,
    assignment_unskip_last,
    lease_next_task,
    leases_expire,
    leases_release_for_annotator,
)
from training.models import AuditAction, AuditEvent

__all__ = [
    "adjudication_resolve",
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
    "lease_next_task",
    "leases_expire",
    "leases_release_for_annotator",
    "tasks_create_for_products",
]

MAX_PRICE = Decimal("9999999999.99")  # what the column holds; the curated range is flagged, not refused
MAX_CODEBOOK_CHARS = 200_000


# --- guesses and tasks ---------------------------------------------------------------------------------


def price_parse(value: Any, *, field: str) -> Decimal:
    """A price from user input, rounded to cents; a ValidationError naming ``field`` otherwise."""
    try:
        price = Decimal(str(value).strip().lstrip("$")) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError(
            {field: [f"{value!r} is not a price: write a number such as 129.99."]}
        ) from None
    if price.is_finite() and 0 < price <= MAX_PRICE:
        price = price.quantize(CENT)
        if price > 0:  # 0.001 rounds to nothing
            return price
    raise ValidationError({field: [f"{value!r} is not a price: it must be a positive number of dollars."]})


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

PRICE_UNCONFIRMED = "price_unconfirmed"  # the code of the ValidationError that asks for confirmation


def price_unusual(price: Decimal, *, guess_price: Decimal | None, factor: Decimal) -> str | None:
    """Why a typed price needs the annotator's confirmation before it is saved, or None.

    Outside the trainable range (DESIGN.md §4) a label is stored flagged and never trained on; ``factor``
    times above or below the guess the annotator was shown it is more often a slip (an extra zero, a
    missing dot) than a price. ``guess_price`` is None when no guess was shown (blind items: asking
    would give the hidden guess away). The annotator page's script applies the same two rules.
    """
    if not PRICE_MIN <= price <= PRICE_MAX:
        return (
            f"${price:,.2f} is outside the trainable range ${PRICE_MIN}–${PRICE_MAX}: it would be saved "
            "flagged and never trained on."
        )
    if guess_price:
        ratio = price / guess_price if price >= guess_price else guess_price / price
        if ratio >= factor:
            times = f"{float(ratio):.3g} times" if price > guess_price else f"1/{float(ratio):.3g} of"
            return f"${price:,.2f} is {times} the model's guess (${guess_price:,.2f})."
    return None


def _validate_verdict(
    *,
    task: Task,
    verdict: str,
    corrected_price: Any,
    reason_code: str,
    version: CodebookVersion | None,
    confirm_price: bool = False,
) -> Decimal | None:
    if verdict not in Verdict.values:
        raise ValidationError({"verdict": [f"{verdict!r} is not a verdict: use accept, correct or reject."]})
    price = None
    if verdict == Verdict.CORRECT:
        if corrected_price in (None, ""):
            raise ValidationError({"corrected_price": ["A correction needs the price you read."]})
        price = price_parse(corrected_price, field="corrected_price")
        shown = task.guess.price if task.guess is not None and not task.is_blind else None
        reason = None if confirm_price else price_unusual(price, guess_price=shown, factor=_confirm_factor())
        if reason is not None:
            raise ValidationError(
                {
                    "corrected_price": [
                        ValidationError(
                            f"{reason} Check it; if it is right, send it again with confirm_price=true.",
                            code=PRICE_UNCONFIRMED,
                            params={"reason": reason},
                        )
                    ]
                }
            )
    elif corrected_price not in (None, ""):
        raise ValidationError({"corrected_price": [f"Only a correction carries a price, not {verdict}."]})
    if verdict == Verdict.ACCEPT and (task.is_blind or task.guess_id is None):
        raise ValidationError({"verdict": ["This item shows no guess to accept: type the price instead."]})
    if verdict == Verdict.REJECT:
        codes = [c["code"] for c in version.reason_codes] if version is not None else []
        if not reason_code:
            raise ValidationError({"reason_code": ["A reject needs a reason code from the codebook."]})
        if version is not None and codes and reason_code not in codes:
            raise ValidationError(
                {
                    "reason_code": [
                        f"{reason_code!r} is not in codebook v{version.number}: {', '.join(codes)}."
                    ]
                }
            )
    elif reason_code:
        raise ValidationError({"reason_code": ["Only a reject carries a reason code."]})
    return price


def _confirm_factor() -> Decimal:
    return annotation_config().confirm_factor


def _gold_correct(task: Task, verdict: str, price: Decimal | None) -> bool:
    answer = vote_price(verdict, price, task.guess.price if task.guess_id and task.guess else None)
    if answer is None or task.gold_price is None:
        return False
    tolerance = task.gold_tolerance if task.gold_tolerance is not None else annotation_config().gold_tolerance
    return abs(answer - task.gold_price) <= tolerance * task.gold_price


def _gold_record(*, annotator: User, correct: bool, delta: int = 1) -> None:
    """Count a gold answer (``delta=-1`` takes one back on undo); pause below the accuracy floor."""
    cfg = annotation_config()
    status = annotator_status_locked(annotator=annotator)
    status.gold_seen += delta
    status.gold_correct += delta * int(correct)
    fields = ["gold_seen", "gold_correct"]
    seen = status.gold_seen - status.gold_baseline_seen
    right = status.gold_correct - status.gold_baseline_correct
    status.save(update_fields=fields)
    if delta > 0 and not status.paused and seen >= cfg.gold_min_seen and right / seen < cfg.gold_accuracy_min:
        reason = (
            f"gold accuracy {right}/{seen} = {right / seen:.0%} is below the required "
            f"{cfg.gold_accuracy_min:.0%}."
        )
        annotator_pause(annotator=annotator, reason=reason)


def _gold_answered(*, annotator: User, task: Task, annotation: Annotation) -> None:
    """Count a gold answer; a wrong one sets ``annotation.gold_feedback`` (the submit answer shows it)."""
    correct = _gold_correct(task, annotation.verdict, annotation.corrected_price)
    _gold_record(annotator=annotator, correct=correct)
    if not correct and task.gold_price is not None:
        annotation.gold_feedback = gold_feedback(task, annotation)  # type: ignore[attr-defined]


def gold_feedback(task: Task, annotation: Annotation) -> dict[str, Any]:
    """What an annotator is told after a wrong gold answer: it was a check item, and its true price."""
    assert task.gold_price is not None
    tolerance = task.gold_tolerance if task.gold_tolerance is not None else annotation_config().gold_tolerance
    answer = vote_price(
        annotation.verdict,
        annotation.corrected_price,
        task.guess.price if task.guess_id and task.guess else None,
    )
    said = f"your answer ${answer:.2f}" if answer is not None else "you rejected it"
    return {
        "correct": False,
        "true_price": f"{task.gold_price:.2f}",
        "your_price": f"{answer:.2f}" if answer is not None else None,
        "tolerance": float(tolerance),
        "message": (
            f"That was a check item with a known price of ${task.gold_price:.2f}; {said}, which is not "
            f"within ±{tolerance:.0%}."
        ),
    }


def _resolve(task: Task, votes: list[Vote]) -> tuple[str, ResolvedLabel | None]:
    cfg = annotation_config()
    decision = consensus_decide(votes, guess_price=task.guess.price if task.guess else None, cfg=cfg)
    if decision.status != TaskStatus.RESOLVED:
        return decision.status, None
    label = ResolvedLabel(
        task=task,
        price=decision.price,
        price_flag=price_flag(decision.price) if decision.price is not None else "",
        method=decision.method,
        n_annotations=len(votes),
        n_accept=decision.n_accept,
        n_correct=decision.n_correct,
        n_reject=decision.n_reject,
        spread=decision.spread,
    )
    return decision.status, label


def annotation_submit(
    *,
    annotator: User,
    assignment_id: int,
    verdict: str,
    corrected_price: Any = None,
    reason_code: str = "",
    seconds_spent: float,
    client_token: str = "",
    confirm_price: bool = False,
) -> Annotation:
    """Record the annotator's verdict on their live lease; resolves the task when it is complete.

    A repeated submit with the same ``client_token`` returns the first annotation and writes nothing.
    A correction that ``price_unusual`` questions is refused (``ValidationError`` on
    ``corrected_price``, code ``price_unconfirmed``) unless ``confirm_price``; confirmed, it is saved,
    flagged ``out_of_range`` when outside the trainable range.
    """
    client_token = (client_token or "")[:64]
    # No look-up up front: a retried submit finds its lease no longer live (``_submit`` then returns
    # the first annotation), and a token reused on another lease hits the unique constraint (below).
    try:
        seconds = max(0.0, min(float(seconds_spent), 86_400.0))
    except (TypeError, ValueError):
        raise ValidationError({"seconds_spent": [f"{seconds_spent!r} is not a number of seconds."]}) from None
    try:
        return _submit(
            annotator=annotator,
            assignment_id=assignment_id,
            verdict=verdict,
            corrected_price=corrected_price,
            reason_code=reason_code or "",
            seconds=seconds,
            client_token=client_token,
            confirm_price=bool(confirm_price),
        )
    except IntegrityError:
        # Two identical submits raced past the first check: the loser returns the winner's row.
        if client_token:
            existing = Annotation.objects.filter(annotator=annotator, client_token=client_token).first()
            if existing is not None:
                return existing
        raise


def _submit(
    *,
    annotator: User,
    assignment_id: int,
    verdict: str,
    corrected_price: Any,
    reason_code: str,
    seconds: float,
    client_token: str,
    confirm_price: bool,
) -> Annotation:
    now = timezone.now()
    with transaction.atomic():
        assignment = _assignment_locked(annotator=annotator, assignment_id=assignment_id)
        task = assignment.task
        if assignment.status != AssignmentStatus.LIVE:
            if client_token:  # a retry of a submit that went through: the first annotation, no write
                existing = Annotation.objects.filter(annotator=annotator, client_token=client_token).first()
                if existing is not None:
                    return existing
            raise LeaseLost(
                f"Assignment {assignment_id} is {assignment.status}, not live: take the next item."
            )
        # The version in force now (read with the lock) stamps the annotation; a reject's reason is
        # checked against its codes.
        version_id = assignment.current_codebook_id  # type: ignore[attr-defined]
        version = None
        if version_id and verdict == Verdict.REJECT:
            version = CodebookVersion.objects.get(id=version_id)
        elif version_id:  # the number is all the answer shows: the other columns load if touched
            number = assignment.current_codebook_number  # type: ignore[attr-defined]
            version = CodebookVersion.from_db(assignment._state.db, ["id", "number"], [version_id, number])
        price = _validate_verdict(
            task=task,
            verdict=verdict,
            corrected_price=corrected_price,
            reason_code=reason_code,
            version=version,
            confirm_price=confirm_price,
        )
        annotation = Annotation(
            task=task,
            assignment=assignment,
            annotator=annotator,
            verdict=verdict,
            corrected_price=price,
            price_flag=price_flag(price) if price is not None else "",
            reason_code=reason_code,
            seconds_spent=seconds,
            codebook_version=version,
            guess_shown=not task.is_blind and task.guess_id is not None,
            client_token=client_token,
        )
        updates: dict[str, Any] = {"completed_count": F("completed_count") + 1}
        label = None
        if not task.is_gold and task.completed_count + 1 >= task.overlap:
            others = list(
                task.annotations.values_list("verdict", "corrected_price") if task.overlap > 1 else []
            )
            guess_price = task.guess.price if task.guess else None
            votes = [Vote(v, vote_price(v, p, guess_price)) for v, p in [*others, (verdict, price)]]
            updates["status"], label = _resolve(task, votes)
            updates["resolved_at"] = now if label is not None else None
        if _single_statement_writes():
            # The same writes and guard as below, in one statement (PostgreSQL).
            if not annotation_record(
                assignment=assignment,
                annotation=annotation,
                label=label,
                task_status=updates.get("status"),
                now=now,
            ):
                raise TaskFull(f"Task {task.id} already has its {task.overlap} annotation(s).")
            if task.is_gold:
                _gold_answered(annotator=annotator, task=task, annotation=annotation)
            return annotation
        if not task.is_gold:  # gold keeps no counts: everyone answers it once
            # The compare-and-set that keeps "never more than overlap" even if the lock were bypassed.
            done = Task.objects.filter(
                id=task.id, status=TaskStatus.OPEN, completed_count__lt=F("overlap")
            ).update(**updates)
            if done != 1:
                raise TaskFull(f"Task {task.id} already has its {task.overlap} annotation(s).")
        Assignment.objects.filter(id=assignment.id).update(status=AssignmentStatus.DONE, updated=now)
        assignment.status = AssignmentStatus.DONE
        annotation.save(force_insert=True)
        if label is not None:
            label.save(force_insert=True)
        if task.is_gold:
            _gold_answered(annotator=annotator, task=task, annotation=annotation)
        return annotation


def _label_in_use(label: ResolvedLabel) -> bool:
    """Whether anything outside this app (a retrain batch) references the label: then it is final."""
    for rel in ResolvedLabel._meta.related_objects:
        manager = rel.related_model._default_manager
        if manager.filter(**{rel.field.name: label}).exists():
            return True
    return False


def annotation_undo_last(*, annotator: User) -> Annotation:
    """Take back the annotator's newest annotation; its item becomes their live lease again.

    Allowed within ``ANNOTATION_UNDO_WINDOW_S`` and while the task's outcome is not final: a label a
    reviewer adjudicated or a retrain batch took cannot be undone. A label the consensus produced
    automatically is withdrawn with the annotation (the task reopens). The returned annotation is the
    deleted one (it keeps its ``id`` for display; the row is gone); ``annotation.assignment`` is the
    lease, live again.
    """
    cfg = annotation_config()
    now = timezone.now()
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        if status.paused:
            raise AnnotatorPaused(status.paused_reason)
        annotation = (
            Annotation.objects.filter(annotator=annotator)
            .select_related("task", "task__guess", "assignment")
            .order_by("-created", "-id")
            .first()
        )
        if annotation is None:
            raise UndoNotAllowed("You have no annotation to undo.")
        if now - annotation.created > timedelta(seconds=cfg.undo_window_s):
            raise UndoNotAllowed(f"Your last annotation is older than the {cfg.undo_window_s} s undo window.")
        task = Task.objects.select_for_update().get(id=annotation.task_id)
        if task.status == TaskStatus.RESOLVED and not task.is_gold:
            label = ResolvedLabel.objects.filter(task=task).first()
            if label is not None and (label.method == ResolutionMethod.ADJUDICATED or _label_in_use(label)):
                raise UndoNotAllowed(
                    "This item's label is final (adjudicated or batched): it cannot be undone."
                )
            if label is not None:
                label.delete()
        # The undone item becomes the current one: any other live lease goes back to the queue.
        other_live = list(
            Assignment.objects.filter(annotator=annotator, status=AssignmentStatus.LIVE)
            .exclude(id=annotation.assignment_id)
            .values_list("id", flat=True)
        )
        if other_live:
            from annotation.queue import _release

            _release(other_live, new_status=AssignmentStatus.RELEASED)
        Task.objects.filter(id=task.id, is_gold=False).update(
            completed_count=F("completed_count") - 1, status=TaskStatus.OPEN, resolved_at=None
        )
        assignment = annotation.assignment
        assignment.status = AssignmentStatus.LIVE
        assignment.expires_at = now + timedelta(seconds=cfg.lease_ttl_s)
        assignment.updated = now
        assignment.save(update_fields=["status", "expires_at", "updated"])
        if task.is_gold:
            _gold_record(
                annotator=annotator,
                correct=_gold_correct(task, annotation.verdict, annotation.corrected_price),
                delta=-1,
            )
        undone_id = annotation.pk
        annotation.delete()
        annotation.pk = undone_id  # for display: the row itself is gone
        return annotation


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


def annotator_pause(*, annotator: User, reason: str, reviewer: User | None = None) -> AnnotatorStatus:
    """Stop an annotator's work (gold accuracy, or a reviewer's decision); their live leases go back and
    their labels not yet in a batch are quarantined (``annotation/quarantine.py``)."""
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        if not status.paused:
            status.paused = True
            status.paused_at = timezone.now()
            status.paused_reason = reason if reviewer is None else f"{reason} (paused by {reviewer.username})"
            status.save(update_fields=["paused", "paused_at", "paused_reason"])
            AuditEvent.objects.create(
                action=AuditAction.ANNOTATOR_PAUSE,
                actor=reviewer,
                subject=f"annotator:{annotator.pk}",
                numbers={"gold_seen": status.gold_seen, "gold_correct": status.gold_correct},
                message=status.paused_reason,
            )
        leases_release_for_annotator(annotator=annotator)
        # After the leases: a submit that held one has committed, so its annotation is held too.
        quarantine_hold_for_annotator(annotator=annotator, reason=status.paused_reason, actor=reviewer)
        return status


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
