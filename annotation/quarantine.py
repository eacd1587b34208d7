"""Quarantine: a paused annotator's labels stay out of training until a reviewer releases or drops them.

When an annotator is paused (gold accuracy below the floor, or a reviewer's decision), every annotation
of theirs whose label is not in an approved or rejected batch is *held*: annotations made long before
the pause, annotations on items still waiting for their other annotators, and labels in a batch still
pending review. A label with a held (or dropped) annotation is never snapshotted into a batch
(``training.services.batches``), and a pending batch holding one fails its ``quarantined_labels``
check (``training/checks.py``). A reviewer then decides for all of one annotator's held annotations
at once:

- ``quarantine_release``: the labels may be batched (the reviewer looked and trusts them);
- ``quarantine_drop``: the labels are never trained on: they leave pending batches, and their products
  go back to the queue, so other annotators label them afresh; on items not resolved yet the
  annotation is withdrawn (the item needs one annotation more).

Every decision is an ``AuditEvent`` naming the reviewer and the annotator (``subject="annotator:<id>"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    QuarantinedAnnotation,
    QuarantineState,
    ResolvedLabel,
    Task,
    TaskStatus,
)
from training.models import AuditAction, AuditEvent, BatchStatus

# States that keep a label out of every batch.
BLOCKING = (QuarantineState.HELD, QuarantineState.DROPPED)
DECIDED_BATCH_STATES = (BatchStatus.APPROVED, BatchStatus.REJECTED)


@dataclass(frozen=True)
class QuarantineDecision:
    annotator: User
    decision: str  # "released" | "dropped"
    annotations: int  # annotations the decision applied to
    labels: int  # resolved labels among them (the rest wait for their other annotators)
    requeued: int  # products queued again (drop only)
    withdrawn: int  # annotations taken off items not resolved yet, which need one more (drop only)


def _subject(annotator: User) -> str:
    return f"annotator:{annotator.pk}"


def quarantine_hold_for_annotator(*, annotator: User, reason: str, actor: User | None = None) -> int:
    """Hold every annotation of ``annotator`` whose label no batch holds; the number newly held.

    Called by ``annotator_pause`` after it took the annotator's live leases back (a submit racing the
    pause has then committed, so its annotation is held too). Annotations a reviewer already released
    or dropped keep that decision; gold answers are not labels and are never held.
    """
    candidates = list(
        Annotation.objects.filter(annotator=annotator, task__is_gold=False, quarantine__isnull=True)
        # Through training's BatchItem (reverse one-to-one): a label in an approved or rejected batch
        # is final; one in a batch still pending review is held too (the batch's checks then fail).
        .exclude(task__resolved_label__batch_item__batch__status__in=DECIDED_BATCH_STATES)
        .values_list("id", "task_id")
    )
    rows = [
        QuarantinedAnnotation(annotation_id=aid, task_id=tid, annotator=annotator, reason=reason[:300])
        for aid, tid in candidates
    ]
    created = QuarantinedAnnotation.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    if rows:
        AuditEvent.objects.create(
            action=AuditAction.QUARANTINE_HOLD,
            actor=actor,
            subject=_subject(annotator),
            numbers={"annotations": len(created)},
            message=reason[:2000],
        )
    return len(created)


def _held(annotator: User) -> Any:
    return QuarantinedAnnotation.objects.filter(annotator=annotator, state=QuarantineState.HELD)


def _decide(*, reviewer: User, annotator: User, state: str) -> tuple[list[int], int]:
    """Move the annotator's held annotations to ``state``; (their task ids, resolved label count)."""
    now = timezone.now()
    held = list(_held(annotator).select_for_update().values_list("id", "task_id"))
    if not held:
        return [], 0
    QuarantinedAnnotation.objects.filter(id__in=[h[0] for h in held], state=QuarantineState.HELD).update(
        state=state, decided_by=reviewer, decided_at=now
    )
    task_ids = sorted({h[1] for h in held})
    labels = Task.objects.filter(id__in=task_ids, status=TaskStatus.RESOLVED).count()
    return task_ids, labels


def quarantine_release(*, reviewer: User, annotator: User) -> QuarantineDecision:
    """Let the annotator's held labels be batched (labels other held annotations block stay out)."""
    with transaction.atomic():
        task_ids, labels = _decide(reviewer=reviewer, annotator=annotator, state=QuarantineState.RELEASED)
        AuditEvent.objects.create(
            action=AuditAction.QUARANTINE_RELEASE,
            actor=reviewer,
            subject=_subject(annotator),
            numbers={"annotations": len(task_ids), "labels": labels},
        )
    return QuarantineDecision(annotator, "released", len(task_ids), labels, 0, 0)


def _withdraw_from_unresolved(*, annotator: User, task_ids: list[int]) -> int:
    """Take the annotator's annotations off items not resolved yet (waiting for their other annotators,
    sent to adjudication by the disagreement they caused, or flagged for a reviewer); the number withdrawn.

    Each item then needs one annotation more and goes back to the queue (status open), as if the
    annotator had never answered it: their vote must not decide the label. The lease row goes with
    the annotation (so does its quarantine row; the audit event keeps the count).
    """
    unresolved = list(
        Task.objects.select_for_update()
        .filter(
            id__in=task_ids,
            is_gold=False,
            status__in=(TaskStatus.OPEN, TaskStatus.NEEDS_ADJUDICATION, TaskStatus.FLAGGED),
        )
        .values_list("id", "status")
    )
    withdrawn = 0
    for task_id, status in unresolved:
        deleted = (
            Assignment.objects.filter(task_id=task_id, annotator=annotator, annotation__isnull=False)
            .delete()[1]
            .get(Assignment._meta.label, 0)
        )
        if deleted:
            # Compare-and-set: the counts drop by exactly what was withdrawn, never below zero.
            Task.objects.filter(id=task_id, completed_count__gte=1, claimed_count__gte=1).update(
                completed_count=F("completed_count") - 1,
                claimed_count=F("claimed_count") - 1,
                # A flagged item stays with the reviewers (annotation/flags.py); the vote goes all the same.
                status=TaskStatus.FLAGGED if status == TaskStatus.FLAGGED else TaskStatus.OPEN,
                resolved_at=None,
            )
            withdrawn += 1
    return withdrawn


def quarantine_drop(*, reviewer: User, annotator: User) -> QuarantineDecision:
    """Never train on the annotator's held labels; queue their products again for other annotators.

    Labels already in a batch pending review are taken out of it (its hash and stats recomputed). An
    annotation on an item not resolved yet (waiting for other annotators, or in adjudication) is
    withdrawn: the item goes back to the queue needing one annotation more.
    """
    from annotation.services import tasks_create_for_products
    from training.services.batches import batch_labels_remove

    with transaction.atomic():
        task_ids, labels = _decide(reviewer=reviewer, annotator=annotator, state=QuarantineState.DROPPED)
        withdrawn = _withdraw_from_unresolved(annotator=annotator, task_ids=task_ids)
        removed = batch_labels_remove(
            label_ids=list(ResolvedLabel.objects.filter(task_id__in=task_ids).values_list("id", flat=True))
        )
        resolved = list(
            Task.objects.filter(id__in=task_ids, status=TaskStatus.RESOLVED).values_list(
                "product_id", "overlap"
            )
        )
        requeued = 0
        for overlap in sorted({o for _, o in resolved}):
            products = [p for p, o in resolved if o == overlap]
            requeued += tasks_create_for_products(products=products, overlap=overlap)
        AuditEvent.objects.create(
            action=AuditAction.QUARANTINE_DROP,
            actor=reviewer,
            subject=_subject(annotator),
            numbers={
                "annotations": len(task_ids),
                "labels": labels,
                "requeued": requeued,
                "withdrawn": withdrawn,
                "removed_from_batches": {str(b): n for b, n in removed.items()},
            },
        )
    return QuarantineDecision(annotator, "dropped", len(task_ids), labels, requeued, withdrawn)


# --- reads ---------------------------------------------------------------------------------------------


def quarantine_summary() -> list[dict[str, Any]]:
    """One row per annotator with held annotations: who, paused or not (and why), how many held."""
    rows = (
        QuarantinedAnnotation.objects.filter(state=QuarantineState.HELD)
        .values("annotator_id", "annotator__username")
        .annotate(held=Count("id"), held_labels=Count("id", filter=Q(task__status=TaskStatus.RESOLVED)))
        .order_by("annotator__username")
    )
    statuses = {
        s.user_id: s for s in AnnotatorStatus.objects.filter(user_id__in=[r["annotator_id"] for r in rows])
    }
    out = []
    for r in rows:
        status = statuses.get(r["annotator_id"])
        out.append(
            {
                "annotator_id": r["annotator_id"],
                "username": r["annotator__username"],
                "paused": bool(status and status.paused),
                "paused_reason": status.paused_reason if status else "",
                "held": r["held"],
                "held_labels": r["held_labels"],
            }
        )
    return out


def quarantine_held_count(*, annotator: User) -> int:
    return int(_held(annotator).count())
