"""Flags: an annotator sends an item that cannot be labelled as it stands (broken text, wrong category, a
duplicate…) to the reviewers, with a reason code from the codebook and an optional note.

A flag is not an annotation: no label, not counted toward overlap, gold accuracy or quality. It ends the
annotator's lease (the item never comes back to them) and takes the task out of every queue: the task is
``flagged``, every other lease on it (another annotator's live item, or one pre-fetched ahead) goes back,
and no answer is accepted until a reviewer decides:

- ``requeue``: the task is open again; the answers it already had are kept and count toward its overlap;
- ``drop``: the task is ``dropped``: never served, never resolved, so never batched; its product is not
  queued again (``tasks_create_for_products`` skips a product with an unresolved task).

Reasons: the codebook's "## Flag reasons" section (``annotation.codebook.flag_codes_parse``). A codebook
without one, or no codebook yet, uses ``DEFAULT_FLAG_REASONS``, so annotators can always flag a broken
item. Every decision is an ``AuditEvent`` (``flag_requeue``/``flag_drop``, ``subject="task:<id>"``).

Locks: the flagger's status row, then every held lease of the task (in id order), then the task: the
order in which a submit locks (its status row, its lease, then the task), so the two never deadlock.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotation.exceptions import AnnotatorPaused, FlagDecided, LeaseLost, LeaseNotFound
from annotation.models import (
    HELD,
    Assignment,
    AssignmentStatus,
    CodebookVersion,
    FlagState,
    ItemFlag,
    Task,
    TaskStatus,
)
from annotation.queue import annotator_status_locked, leases_release
from training.models import AuditAction, AuditEvent

DEFAULT_FLAG_REASONS: list[dict[str, str]] = [
    {"code": "broken-text", "label": "the text is cut off, garbled or mixes several products"},
    {"code": "wrong-category", "label": "the category does not match the product"},
    {"code": "duplicate", "label": "the same product appears as another item"},
    {"code": "other", "label": "something else a reviewer should see (say what in the note)"},
]
MAX_NOTE_CHARS = 500
DECISIONS = ("requeue", "drop")


def flag_reasons(version: CodebookVersion | None) -> list[dict[str, str]]:
    """The flag reasons in force under ``version``: its "Flag reasons" section, else the defaults."""
    if version is not None and version.flag_codes:
        return [{"code": str(r["code"]), "label": str(r["label"])} for r in version.flag_codes]
    return DEFAULT_FLAG_REASONS


def codebook_current() -> CodebookVersion | None:
    return CodebookVersion.objects.defer("markdown").order_by("-number").first()


def item_flag(*, annotator: User, assignment_id: int, reason_code: str, note: str = "") -> ItemFlag:
    """Flag the annotator's live item for the reviewers; the flag.

    Refused: ``LeaseNotFound`` for an assignment that is not the annotator's (indistinguishable from a
    missing one), ``LeaseLost`` when it is no longer live, ``AnnotatorPaused`` while paused, and a
    ``ValidationError`` naming ``reason_code`` (with the valid codes) or ``note`` (too long).
    """
    code = (reason_code or "").strip()
    text = " ".join((note or "").split())  # one line: it is shown in a table
    if len(text) > MAX_NOTE_CHARS:
        raise ValidationError({"note": [f"The note is limited to {MAX_NOTE_CHARS} characters; shorten it."]})
    now = timezone.now()
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        if status.paused:
            raise AnnotatorPaused(status.paused_reason)
        task_id = (
            Assignment.objects.filter(id=assignment_id, annotator=annotator)
            .values_list("task_id", flat=True)
            .first()
        )
        if task_id is None:
            raise LeaseNotFound(f"No assignment {assignment_id} of yours.")
        version = codebook_current()
        reasons = flag_reasons(version)
        labels = {r["code"]: r["label"] for r in reasons}
        if code not in labels:
            where = f"codebook v{version.number}" if version is not None else "the default flag reasons"
            said = f"{code!r} is not a flag reason" if code else "A flag needs a reason code"
            raise ValidationError({"reason_code": [f"{said} of {where}: use one of {', '.join(labels)}."]})
        # Lock order as a submit's: leases (id order), then the task.
        held = list(
            Assignment.objects.select_for_update()
            .filter(task_id=task_id, status__in=HELD)
            .order_by("id")
            .values_list("id", flat=True)
        )
        task = Task.objects.select_for_update().get(id=task_id)
        mine = Assignment.objects.get(id=assignment_id)
        if mine.status != AssignmentStatus.LIVE:
            raise LeaseLost(f"Assignment {assignment_id} is {mine.status}, not live: nothing to flag.")
        if task.status != TaskStatus.OPEN:  # pragma: no cover - a live lease is on an open task
            raise LeaseLost(f"Task {task.id} is {task.status}: nothing to flag.")
        # Every lease on the task gives its claim back (the annotator's own included): nobody holds it.
        leases_release(held, new_status=AssignmentStatus.RELEASED)
        Assignment.objects.filter(id=mine.id).update(status=AssignmentStatus.FLAGGED, updated=now)
        Task.objects.filter(id=task.id, status=TaskStatus.OPEN).update(status=TaskStatus.FLAGGED)
        return ItemFlag.objects.create(
            task=task,
            assignment=mine,
            annotator=annotator,
            reason_code=code,
            reason_label=labels[code][:300],
            note=text,
            codebook_version=version,
        )


def flag_decide(*, reviewer: User, flag_id: int, action: str) -> ItemFlag:
    """A reviewer's decision on an open flag: ``requeue`` (the task is open again, its answers kept) or
    ``drop`` (the task is dropped: never labelled nor batched). Audited.

    ``ItemFlag.DoesNotExist`` for an unknown id; ``FlagDecided`` when another reviewer decided first.
    """
    if action not in DECISIONS:
        raise ValidationError({"action": [f"{action!r} is not a decision: use requeue or drop."]})
    now = timezone.now()
    with transaction.atomic():
        flag = ItemFlag.objects.select_for_update(of=("self",)).select_related("task").get(id=flag_id)
        if flag.state != FlagState.OPEN:
            raise FlagDecided(
                f"Flag {flag.id} was decided already ({flag.state}"
                + (f" by {flag.decided_by.get_username()}" if flag.decided_by else "")
                + "): nothing to do."
            )
        task = Task.objects.select_for_update().get(id=flag.task_id)
        new_state = FlagState.REQUEUED if action == "requeue" else FlagState.DROPPED
        task_status = TaskStatus.OPEN if action == "requeue" else TaskStatus.DROPPED
        Task.objects.filter(id=task.id, status=TaskStatus.FLAGGED).update(status=task_status)
        flag.state, flag.decided_by, flag.decided_at = new_state, reviewer, now
        flag.save(update_fields=["state", "decided_by", "decided_at"])
        AuditEvent.objects.create(
            action=AuditAction.FLAG_REQUEUE if action == "requeue" else AuditAction.FLAG_DROP,
            actor=reviewer,
            subject=f"task:{task.id}",
            numbers={
                "flag": flag.id,
                "reason_code": flag.reason_code,
                "annotator": flag.annotator_id,
                "annotations_kept": task.completed_count,
            },
            message=flag.note,
        )
        flag.task.status = task_status
        return flag


# --- reads ---------------------------------------------------------------------------------------------


def flags_list(*, state: str | None = None) -> QuerySet[ItemFlag]:
    """Flags (all, or in ``state``), oldest first, with what the flagged page shows loaded."""
    rows = ItemFlag.objects.select_related(
        "task__product", "task__guess", "annotator", "decided_by", "codebook_version"
    ).order_by("id")
    return rows.filter(state=state) if state else rows


def flags_of(*, annotator: User) -> QuerySet[ItemFlag]:
    """The annotator's own flags, newest first, with the item's title loaded (their history)."""
    return ItemFlag.objects.filter(annotator=annotator).select_related("task__product").order_by("-id")


def flags_open_count() -> int:
    return ItemFlag.objects.filter(state=FlagState.OPEN).count()
