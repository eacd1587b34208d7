"""Submit and undo: an annotator's answer on their live item, in one module.

``annotation_submit`` validates the answer (verdict, price, reason code against the codebook in force),
counts it on the task under the lease's and task's row locks (``queue.assignment_locked``), resolves the
task when it has its ``overlap`` answers (``consensus``), scores check (gold) items and pauses an annotator
whose accuracy falls too low. ``annotation_undo_last`` takes the newest answer back. The leases
themselves (next, ahead, skip, expiry) live in ``annotation/queue.py``; ``annotation.services``
re-exports what callers use.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Model
from django.utils import timezone

from annotation.conf import annotation_config
from annotation.consensus import CENT, PRICE_MAX, PRICE_MIN, Vote, consensus_decide, price_flag, vote_price
from annotation.exceptions import AnnotationFinal, AnnotatorPaused, LeaseLost, TaskFull, UndoNotAllowed
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    AssignmentStatus,
    CodebookVersion,
    ItemFlag,
    ResolutionMethod,
    ResolvedLabel,
    Task,
    TaskStatus,
    Verdict,
)
from annotation.quarantine import quarantine_hold_for_annotator
from annotation.queue import (
    annotator_status_locked,
    assignment_locked,
    leases_release,
    leases_release_for_annotator,
    single_statement_writes,
)
from training.models import AuditAction, AuditEvent
from webapp.rawsql import fetch_one

MAX_PRICE = Decimal("9999999999.99")  # what the column holds; the curated range is flagged, not refused


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


def gold_correct(task: Task, verdict: str, price: Decimal | None) -> bool:
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
    correct = gold_correct(task, annotation.verdict, annotation.corrected_price)
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
        assignment = assignment_locked(annotator=annotator, assignment_id=assignment_id)
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
        if single_statement_writes():
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


def label_in_use(label: ResolvedLabel) -> bool:
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
        flagged = ItemFlag.objects.filter(annotator=annotator).order_by("-created").values("created")[:1]
        if any(annotation is None or row["created"] > annotation.created for row in flagged):
            # Undo takes back the last action; a flag is the reviewers' to decide, not undone here.
            raise UndoNotAllowed(
                "Your last action was a flag: a reviewer decides on it, it cannot be undone."
            )
        if annotation is None:
            raise UndoNotAllowed("You have no annotation to undo.")
        if now - annotation.created > timedelta(seconds=cfg.undo_window_s):
            raise UndoNotAllowed(f"Your last annotation is older than the {cfg.undo_window_s} s undo window.")
        task = Task.objects.select_for_update().get(id=annotation.task_id)
        if task.status in (TaskStatus.FLAGGED, TaskStatus.DROPPED):
            raise UndoNotAllowed(
                "Your last item was flagged for a reviewer meanwhile: your answer stays until they decide."
            )
        if task.status == TaskStatus.RESOLVED and not task.is_gold:
            label = ResolvedLabel.objects.filter(task=task).first()
            if label is not None and (label.method == ResolutionMethod.ADJUDICATED or label_in_use(label)):
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
            leases_release(other_live, new_status=AssignmentStatus.RELEASED)
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
                correct=gold_correct(task, annotation.verdict, annotation.corrected_price),
                delta=-1,
            )
        undone_id = annotation.pk
        annotation.delete()
        annotation.pk = undone_id  # for display: the row itself is gone
        return annotation


def annotation_editable(annotation: Annotation) -> bool:
    """Whether the annotator may still change this answer: its item is open (not resolved, not waiting
    for adjudication) and not a check (gold) item, whose answer is scored when given."""
    return annotation.task.status == TaskStatus.OPEN and not annotation.task.is_gold


def annotation_edit(
    *,
    annotator: User,
    annotation_id: int,
    verdict: str,
    corrected_price: Any = None,
    reason_code: str = "",
    confirm_price: bool = False,
) -> Annotation:
    """Change the annotator's own answer while its item has not resolved.

    The same validation as ``annotation_submit`` (verdict, price, the plausibility rule with
    ``confirm_price``, a reject's reason code against the codebook version the answer was made under).
    ``Annotation.DoesNotExist`` for an id that is not the annotator's; ``AnnotationFinal`` once the
    item resolved, went to adjudication, or is a check item; ``AnnotatorPaused`` while paused. Counts
    are unchanged: one answer stays one.
    """
    with transaction.atomic():
        # As undo: a paused annotator's answers are held for a reviewer (quarantine), not theirs to change.
        status = annotator_status_locked(annotator=annotator)
        if status.paused:
            raise AnnotatorPaused(status.paused_reason)
        annotation = (
            Annotation.objects.select_related("task__guess", "codebook_version")
            .select_for_update(of=("self",))
            .get(id=annotation_id, annotator=annotator)
        )
        # The task's row lock orders this edit with the submit that would resolve the item.
        task = Task.objects.select_for_update(of=("self",)).select_related("guess").get(id=annotation.task_id)
        annotation.task = task
        if not annotation_editable(annotation):
            raise AnnotationFinal(
                "This item's outcome is settled (resolved or with a reviewer): your answer is final."
            )
        price = _validate_verdict(
            task=task,
            verdict=verdict,
            corrected_price=corrected_price,
            reason_code=reason_code or "",
            version=annotation.codebook_version,
            confirm_price=confirm_price,
        )
        annotation.verdict = verdict
        annotation.corrected_price = price
        annotation.price_flag = price_flag(price) if price is not None else ""
        annotation.reason_code = reason_code or ""
        annotation.save(update_fields=["verdict", "corrected_price", "price_flag", "reason_code"])
        return annotation


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


def _insert_values(obj: Model, *, skip: tuple[str, ...] = ()) -> tuple[str, str, list[Any]]:
    """(columns, typed placeholders, values) to insert the unsaved ``obj`` as the ORM would (``pre_save``
    fills ``auto_now_add``; values prepared per field). A NULL gets its column's type, which
    ``INSERT … SELECT`` needs; other values keep theirs, so an oversized one still fails as it would."""
    quote = connection.ops.quote_name
    fields = [f for f in obj._meta.concrete_fields if not f.primary_key and f.name not in skip]
    columns = ", ".join(quote(str(f.column)) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    placeholders = ", ".join(
        "%s" if value is not None else f"CAST(%s AS {f.cast_db_type(connection)})"
        for f, value in zip(fields, values, strict=True)
    )
    return columns, placeholders, values


def annotation_record(
    *,
    assignment: Assignment,
    annotation: Annotation,
    label: ResolvedLabel | None,
    task_status: str | None,
    now: datetime,
) -> bool:
    """Submit's writes in one statement (only with ``single_statement_writes()``, the lease and task
    locked by ``assignment_locked``): for a non-gold task, the compare-and-set that counts the
    annotation (``status = open and completed_count < overlap``; ``task_status`` set when this one
    completes it), then the lease done, the annotation and the label, each only if the step before
    it happened. False, with nothing written, when the task already had its annotations."""
    task = assignment.task
    ann_cols, ann_marks, ann_values = _insert_values(annotation, skip=("assignment", "task"))
    assign_t = Assignment._meta.db_table
    params: list[Any] = []
    sql = "WITH "
    gate = ""
    if not task.is_gold:  # gold keeps no counts: everyone answers it once
        sql += (
            f"counted AS (UPDATE {Task._meta.db_table} t SET completed_count = t.completed_count + 1, "  # noqa: S608
            f"status = %s, resolved_at = CASE WHEN %s THEN %s ELSE t.resolved_at END "
            f"WHERE t.id = %s AND t.status = %s AND t.completed_count < t.overlap RETURNING t.id), "
        )
        finishing = task_status is not None
        params += [task_status or TaskStatus.OPEN.value, finishing, now if label else None]
        params += [task.id, TaskStatus.OPEN.value]
        gate = " AND EXISTS(SELECT 1 FROM counted)"
    sql += (
        f"done AS (UPDATE {assign_t} a SET status = %s, updated = %s WHERE a.id = %s{gate} RETURNING a.id), "  # noqa: S608
        f"noted AS (INSERT INTO {Annotation._meta.db_table} (task_id, assignment_id, {ann_cols}) "
        f"SELECT %s, done.id, {ann_marks} FROM done RETURNING id)"
    )
    params += [AssignmentStatus.DONE.value, now, assignment.id, task.id, *ann_values]
    if label is not None:
        label_cols, label_marks, label_values = _insert_values(label, skip=("task",))
        sql += (
            f", labelled AS (INSERT INTO {ResolvedLabel._meta.db_table} (task_id, {label_cols}) "  # noqa: S608
            f"SELECT counted.id, {label_marks} FROM counted RETURNING id)"
        )
        params += label_values
    sql += " SELECT (SELECT id FROM noted)" + (", (SELECT id FROM labelled)" if label is not None else "")  # noqa: S608
    row = fetch_one(sql, params)
    if row is None or row[0] is None:
        return False
    annotation.id = row[0]
    annotation.assignment, annotation.task = assignment, task
    annotation._state.adding, annotation._state.db = False, connection.alias
    if label is not None:
        label.id = row[1]
        label._state.adding, label._state.db = False, connection.alias
    assignment.status = AssignmentStatus.DONE
    return True
