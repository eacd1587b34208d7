"""The work queue: leases. Hands each task to one annotator at a time, never the same task twice.

Concurrency: every lease runs in one transaction that first locks the annotator's status row (so one
annotator's parallel requests queue up behind each other and "next" stays idempotent), then picks a
task with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (other annotators' in-flight picks are
skipped, not waited for). SQLite has no row locks: its transactions are IMMEDIATE (settings), so one
writer at a time. The database refuses what must never happen whatever the code does: a second live
lease per annotator, a second lease of one task to one annotator, more than ``overlap`` claims.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Exists, F, Model, OuterRef, Q
from django.db.models.functions import Mod
from django.utils import timezone

from annotation.conf import AnnotationConfig, annotation_config
from annotation.exceptions import AnnotatorPaused, CodebookAckRequired, LeaseLost, LeaseNotFound
from annotation.models import (
    AnnotatorStatus,
    Assignment,
    AssignmentStatus,
    CodebookAck,
    CodebookVersion,
    Guess,
    Product,
    Task,
    TaskStatus,
)

RETURNABLE = (AssignmentStatus.SKIPPED, AssignmentStatus.EXPIRED, AssignmentStatus.RELEASED)
_RELATED = ("task__product", "task__guess")
# Columns an annotator never sees: not read on the hot path (they load lazily if touched).
_DEFERRED = ("task__product__extra", "task__guess__topk")
_TASK_DEFERRED = ("product__extra", "guess__topk")


def codebook_unacknowledged(*, annotator: User) -> CodebookVersion | None:
    """The current codebook version if ``annotator`` has not acknowledged it yet (one query)."""
    current = (
        CodebookVersion.objects.defer("markdown", "reason_codes")  # read on every next: keep it small
        .annotate(acked=Exists(CodebookAck.objects.filter(annotator=annotator, version=OuterRef("pk"))))
        .order_by("-number")
        .first()
    )
    if current is None or current.acked:  # type: ignore[attr-defined]
        return None
    return current


def annotator_status_locked(*, annotator: User, with_live: bool = False) -> AnnotatorStatus:
    """The annotator's status row, locked until the end of the current transaction.

    ``with_live=True`` also reads, in the same query, the id of their live lease (``status.live_id``,
    None if none), the current codebook version's id (``status.codebook_id``, None before the first
    one) and whether they acknowledged it (``status.codebook_acked``).
    """
    if with_live:
        status = _status_with_live(annotator)
        if status is None:
            AnnotatorStatus.objects.get_or_create(user=annotator)
            status = _status_with_live(annotator)
        assert status is not None  # created just above, in this transaction
        return status
    qs = AnnotatorStatus.objects.select_for_update().filter(user=annotator)
    status = qs.first()
    if status is None:
        AnnotatorStatus.objects.get_or_create(user=annotator)
        status = qs.get()
    return status


def _status_with_live_sql() -> str:
    # Written out once instead of built by the ORM on every "next": compiling the equivalent queryset
    # (three subqueries) cost ~4 ms of CPU per request, the raw query ~1 ms (docs/perf-queue.md).
    # Only table names are formatted in (from the models); every value is a query parameter.
    current = f"SELECT c.id FROM {CodebookVersion._meta.db_table} c ORDER BY c.number DESC LIMIT 1"  # noqa: S608
    lock = " FOR UPDATE OF s" if connection.features.has_select_for_update_of else ""
    return (
        f"SELECT s.*, "  # noqa: S608
        f"(SELECT a.id FROM {Assignment._meta.db_table} a WHERE a.annotator_id = %s AND a.status = %s "
        f"LIMIT 1) AS live_id, ({current}) AS codebook_id, "
        f"EXISTS(SELECT 1 FROM {CodebookAck._meta.db_table} k WHERE k.annotator_id = %s "
        f"AND k.version_id = ({current})) AS codebook_acked "
        f"FROM {AnnotatorStatus._meta.db_table} s WHERE s.user_id = %s{lock}"
    )


def _status_with_live(annotator: User) -> AnnotatorStatus | None:
    params = [annotator.id, AssignmentStatus.LIVE.value, annotator.id, annotator.id]
    return next(iter(AnnotatorStatus.objects.raw(_status_with_live_sql(), params)), None)


def _gold_due(status: AnnotatorStatus, cfg: AnnotationConfig) -> bool:
    # Deterministic pacing: the n-th lease is gold when fewer than floor(n * rate) gold items were served.
    if cfg.gold_rate <= 0:
        return False
    return status.gold_leases < math.floor((status.leases_total + 1) * cfg.gold_rate + 1e-9)


def _not_seen_by(annotator: User) -> Exists:
    return Exists(Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator))


def _pick_gold(annotator: User) -> Task | None:
    # Gold has no capacity to protect (everyone answers it once): no lock, no counters. A shuffled
    # order per annotator keeps annotators off the same gold item at the same time.
    shuffle = Mod(F("id") * 7919 + annotator.id * 104_729, 1_000_003)
    return (
        Task.objects.filter(is_gold=True, status=TaskStatus.OPEN)
        .filter(~_not_seen_by(annotator))
        .select_related("product", "guess")
        .defer(*_TASK_DEFERRED)
        .order_by(shuffle, "id")
        .first()
    )


def _pick_fresh(annotator: User) -> Task | None:
    # Served in the order of the partial index ``task_queue_order``: started first, then priority.
    # Written-out SQL (the ORM spent ~4 ms of CPU compiling this queryset on every fresh lease):
    # ``Task.objects.filter(status=OPEN, is_gold=False, claimed_count__lt=F("overlap"))`` minus the
    # tasks this annotator has seen, ``.order_by("-claimed_count", "-priority", "id")``, with
    # ``select_related("product", "guess")`` less the columns annotators never see, and
    # ``select_for_update(skip_locked=True, of=("self",))``.
    with connection.cursor() as cursor:
        cursor.execute(_pick_fresh_sql(), [TaskStatus.OPEN.value, annotator.id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    task = _from_row(Task, values)
    task.product = _from_row(Product, values, skip=("extra",))
    guess = _from_row(Guess, values, skip=("topk",))
    task.guess = guess if task.guess_id is not None else None
    return task


def _pick_fresh_sql() -> str:
    lock = " FOR UPDATE OF t SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    return (
        f"SELECT {_columns(Task, 't')}, {_columns(Product, 'p', skip=('extra',))}, "  # noqa: S608
        f"{_columns(Guess, 'g', skip=('topk',))} "
        f"FROM {Task._meta.db_table} t JOIN {Product._meta.db_table} p ON p.id = t.product_id "
        f"LEFT JOIN {Guess._meta.db_table} g ON g.id = t.guess_id "
        f"WHERE t.claimed_count < t.overlap AND NOT t.is_gold AND t.status = %s "
        f"AND NOT EXISTS(SELECT 1 FROM {Assignment._meta.db_table} a "
        f"WHERE a.annotator_id = %s AND a.task_id = t.id) "
        f"ORDER BY t.claimed_count DESC, t.priority DESC, t.id ASC LIMIT 1{lock}"
    )


def _pick_returned(annotator: User) -> Assignment | None:
    # Items this annotator skipped (or let expire) come back last, oldest skip first.
    return (
        Assignment.objects.filter(annotator=annotator, status__in=RETURNABLE, task__status=TaskStatus.OPEN)
        .filter(Q(task__is_gold=True) | Q(task__claimed_count__lt=F("task__overlap")))
        .order_by("updated", "id")
        .select_related(*_RELATED)
        .defer(*_DEFERRED)
        .select_for_update(skip_locked=True, of=("self", "task"))
        .first()
    )


def lease_next_task(*, annotator: User) -> Assignment | None:
    """The annotator's current lease, or a new one on the next task; ``None`` when nothing is left.

    Idempotent: while a lease is live, every call returns that same lease (and renews its TTL).
    Raises ``CodebookAckRequired`` when a codebook version is unacknowledged and ``AnnotatorPaused``
    when gold accuracy paused the annotator. The returned assignment has ``task``, ``task.product`` and
    ``task.guess`` loaded.
    """
    cfg = annotation_config()
    now = timezone.now()
    expires_at = now + timedelta(seconds=cfg.lease_ttl_s)
    with transaction.atomic():
        # One query: the lock, the live lease and the codebook check (it reads the version current
        # now, so a version published a moment ago is caught here as before).
        status = annotator_status_locked(annotator=annotator, with_live=True)
        if status.codebook_id is not None and not status.codebook_acked:  # type: ignore[attr-defined]
            raise CodebookAckRequired(CodebookVersion.objects.defer("markdown").get(id=status.codebook_id))  # type: ignore[attr-defined]
        if status.paused:
            raise AnnotatorPaused(status.paused_reason)
        if status.live_id is not None:  # type: ignore[attr-defined]
            renewed = Assignment.objects.filter(id=status.live_id, status=AssignmentStatus.LIVE).update(  # type: ignore[attr-defined]
                expires_at=expires_at
            )
            if renewed:  # else the expirer took it back a moment ago: lease afresh
                live = Assignment.objects.select_related(*_RELATED).defer(*_DEFERRED).get(id=status.live_id)  # type: ignore[attr-defined]
                return live

        task = _pick_gold(annotator) if _gold_due(status, cfg) else None
        if task is None:
            task = _pick_fresh(annotator)
        if task is not None:
            assignment = Assignment.objects.create(
                task=task,
                annotator=annotator,
                status=AssignmentStatus.LIVE,
                expires_at=expires_at,
                updated=now,
            )
            AnnotatorStatus.objects.filter(id=status.id).update(
                leases_total=F("leases_total") + 1, gold_leases=F("gold_leases") + int(task.is_gold)
            )
        else:
            returned = _pick_returned(annotator)
            if returned is None:
                return None
            assignment, task = returned, returned.task
            Assignment.objects.filter(id=assignment.id, status__in=RETURNABLE).update(
                status=AssignmentStatus.LIVE, expires_at=expires_at, updated=now
            )
            assignment.status, assignment.expires_at, assignment.updated = (
                AssignmentStatus.LIVE,
                expires_at,
                now,
            )
        if not task.is_gold:
            # The row is locked; the condition is the database-side guard.
            claimed = Task.objects.filter(id=task.id, claimed_count__lt=F("overlap")).update(
                claimed_count=F("claimed_count") + 1
            )
            if claimed != 1:  # pragma: no cover - only reachable if the locks above were bypassed
                raise LeaseLost("The item was taken meanwhile; ask for the next one.")
            task.claimed_count += 1
        assignment.task = task
        return assignment


def _assignment_locked(*, annotator: User, assignment_id: int) -> Assignment:
    """The annotator's assignment with its task (both locked) and the task's guess, plus the current
    codebook version (``current_codebook_id``, ``current_codebook_number``); one query.

    Equivalent to ``select_related("task", "task__guess").select_for_update(of=("self", "task"))``
    with two subquery annotations, written out once: the ORM spent ~4 ms of CPU compiling it on every
    submit (docs/perf-queue.md).
    """
    with connection.cursor() as cursor:
        cursor.execute(_assignment_locked_sql(), [assignment_id, annotator.id])
        row = cursor.fetchone()
    if row is None:
        # Someone else's assignment is indistinguishable from a missing one (no IDOR oracle).
        raise LeaseNotFound(f"No assignment {assignment_id} of yours.")
    values = iter(row)
    assignment, task, guess = _from_row(Assignment, values), _from_row(Task, values), _from_row(Guess, values)
    task.guess = guess if task.guess_id is not None else None
    assignment.task = task
    assignment.current_codebook_id, assignment.current_codebook_number = next(values), next(values)  # type: ignore[attr-defined]
    return assignment


_M = TypeVar("_M", bound=Model)


def _from_row(model: type[_M], values: Iterator[Any], *, skip: tuple[str, ...] = ()) -> _M:
    """An instance of ``model`` from the next columns of a raw row (``_columns(model, …, skip=skip)``),
    with the database's converters applied as the ORM would (SQLite dates and decimals, JSON); the
    ``skip``ped fields are deferred (they load if touched)."""
    fields = [f for f in model._meta.concrete_fields if f.name not in skip]
    converted = []
    for field in fields:
        value = next(values)
        col = field.get_col(model._meta.db_table)
        if value is not None:
            for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
                value = convert(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _columns(model: type[Model], alias: str, *, skip: tuple[str, ...] = ()) -> str:
    quote = connection.ops.quote_name
    return ", ".join(
        f"{alias}.{quote(str(f.column))}" for f in model._meta.concrete_fields if f.name not in skip
    )


def _assignment_locked_sql() -> str:
    current = f"FROM {CodebookVersion._meta.db_table} c ORDER BY c.number DESC LIMIT 1"
    lock = " FOR UPDATE OF a, t" if connection.features.has_select_for_update_of else ""
    return (
        f"SELECT {_columns(Assignment, 'a')}, {_columns(Task, 't')}, {_columns(Guess, 'g')}, "  # noqa: S608
        f"(SELECT c.id {current}), (SELECT c.number {current}) "
        f"FROM {Assignment._meta.db_table} a JOIN {Task._meta.db_table} t ON t.id = a.task_id "
        f"LEFT JOIN {Guess._meta.db_table} g ON g.id = t.guess_id "
        f"WHERE a.id = %s AND a.annotator_id = %s{lock}"
    )


def assignment_skip(*, annotator: User, assignment_id: int) -> Assignment:
    """Give the item back; it returns to the end of this annotator's own queue (after fresh items)."""
    now = timezone.now()
    with transaction.atomic():
        assignment = _assignment_locked(annotator=annotator, assignment_id=assignment_id)
        changed = Assignment.objects.filter(id=assignment.id, status=AssignmentStatus.LIVE).update(
            status=AssignmentStatus.SKIPPED, updated=now
        )
        if changed != 1:
            raise LeaseLost(f"Assignment {assignment_id} is {assignment.status}, not live: nothing to skip.")
        Task.objects.filter(id=assignment.task_id, is_gold=False).update(claimed_count=F("claimed_count") - 1)
        assignment.status, assignment.updated = AssignmentStatus.SKIPPED, now
        return assignment


def _release(assignment_ids: list[int], *, new_status: str, only_expired_before: object = None) -> int:
    """Compare-and-set ``live → new_status`` for each id, then give each task its claim back once.

    The rows are locked first, so the claims given back are exactly those of the rows changed here,
    even if an expirer or a submit races for the same leases (they wait, then find them no longer live).
    """
    if not assignment_ids:
        return 0
    now = timezone.now()
    rows = Assignment.objects.filter(id__in=assignment_ids, status=AssignmentStatus.LIVE)
    if only_expired_before is not None:
        rows = rows.filter(expires_at__lt=only_expired_before)
    locked = list(rows.select_for_update(of=("self",)).values_list("id", "task_id", "task__is_gold"))
    if not locked:
        return 0
    changed = Assignment.objects.filter(id__in=[row[0] for row in locked]).update(
        status=new_status, updated=now
    )
    per_task: dict[int, int] = {}
    for _, task_id, is_gold in locked:
        if not is_gold:  # gold tasks keep no claim counts
            per_task[task_id] = per_task.get(task_id, 0) + 1
    for task_id, n in per_task.items():
        Task.objects.filter(id=task_id).update(claimed_count=F("claimed_count") - n)
    return changed


def leases_expire(*, limit: int = 5000) -> int:
    """Return expired live leases to the queue, each exactly once; the number returned.

    Two expirers running at once take disjoint rows (SKIP LOCKED) and each row's ``live → expired``
    is a compare-and-set, so no task gets its claim back twice.
    """
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Assignment.objects.filter(status=AssignmentStatus.LIVE, expires_at__lt=now)
            .order_by("expires_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        return _release(ids, new_status=AssignmentStatus.EXPIRED, only_expired_before=now)


def leases_release_for_annotator(*, annotator: User) -> int:
    """Take back every live lease of ``annotator`` (paused); their items return to the queue."""
    with transaction.atomic():
        ids = list(
            Assignment.objects.filter(annotator=annotator, status=AssignmentStatus.LIVE)
            .select_for_update()
            .values_list("id", flat=True)
        )
        return _release(ids, new_status=AssignmentStatus.RELEASED)
