"""The work queue: leases. Hands each task to one annotator at a time, never the same task twice.

Concurrency: every lease runs in one transaction that first locks the annotator's status row (so one
annotator's parallel requests queue up behind each other and "next" stays idempotent), then picks a
task with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (other annotators' in-flight picks are
skipped, not waited for). SQLite has no row locks: its transactions are IMMEDIATE (settings), so one
writer at a time. The database refuses what must never happen whatever the code does: a second live
lease per annotator, a second lease of one task to one annotator, more than ``overlap`` claims.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Mod
from django.utils import timezone

from annotation.conf import AnnotationConfig, annotation_config
from annotation.exceptions import (
    AnnotatorPaused,
    CodebookAckRequired,
    LeaseLost,
    LeaseNotFound,
    UndoNotAllowed,
)
from annotation.models import (
    HELD,
    Annotation,
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
from webapp.rawsql import columns as _columns
from webapp.rawsql import fetch_one
from webapp.rawsql import from_row as _from_row

RETURNABLE = (AssignmentStatus.SKIPPED, AssignmentStatus.EXPIRED, AssignmentStatus.RELEASED)
_RELATED = ("task__product", "task__guess")
# Columns an annotator never sees: not read on the hot path (they load lazily if touched).
_DEFERRED = ("task__product__extra", "task__guess__topk")
_TASK_DEFERRED = ("product__extra", "guess__topk")


def codebook_unacknowledged(*, annotator: User) -> CodebookVersion | None:
    """The current codebook version if ``annotator`` has not acknowledged it yet (one query)."""
    current = (
        # Read on every next: keep it small.
        CodebookVersion.objects.defer("markdown", "reason_codes", "flag_codes")
        .annotate(acked=Exists(CodebookAck.objects.filter(annotator=annotator, version=OuterRef("pk"))))
        .order_by("-number")
        .first()
    )
    if current is None or current.acked:  # type: ignore[attr-defined]
        return None
    return current


def annotator_status_locked(*, annotator: User, with_live: bool = False) -> AnnotatorStatus:
    """The annotator's status row, locked until the end of the current transaction.

    ``with_live=True`` also reads, in the same query, the current codebook version's id
    (``status.codebook_id``, None before the first one), whether they acknowledged it
    (``status.codebook_acked``) and, on SQLite only, the id of their live lease (``status.live_id``,
    None if none; always None on PostgreSQL, where the lease statement reads it: see
    ``_status_with_live_sql``).
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


@functools.cache  # per database vendor: the text never changes
def _status_with_live_sql(vendor: str) -> str:
    # Written out once instead of built by the ORM on every "next": compiling the equivalent queryset
    # (three subqueries) cost ~4 ms of CPU per request, the raw query ~1 ms (docs/perf-queue.md).
    # Only table names and fixed choices are formatted in (from the models); every value is a parameter.
    #
    # The live lease is read here only on SQLite. On PostgreSQL (READ COMMITTED) every part of this
    # statement reads the snapshot taken when it started, before it waited for the lock: when two
    # requests of one annotator arrive together, the second waits here while the first leases, then
    # reads "no live lease" from before that lease and inserts a second one (issue 14: HTTP 500
    # ``assignment_one_live_lease``). Only the locked row itself is re-read after the wait. So on
    # PostgreSQL the lease statement (``_lease_new_sql``), which starts after the lock is held, reads
    # and renews the live lease. SQLite takes its write lock at BEGIN (IMMEDIATE), before any read.
    current = f"SELECT c.id FROM {CodebookVersion._meta.db_table} c ORDER BY c.number DESC LIMIT 1"  # noqa: S608
    lock = " FOR UPDATE OF s" if connection.features.has_select_for_update_of else ""
    live = (
        "NULL"
        if single_statement_writes()
        else f"(SELECT a.id FROM {Assignment._meta.db_table} a WHERE a.annotator_id = %(user)s "  # noqa: S608
        f"AND {_held_sql('a')} ORDER BY a.status = {_choice(AssignmentStatus.LIVE)} DESC LIMIT 1)"
    )
    return (
        f"SELECT {_columns(AnnotatorStatus, 's')}, {live} AS live_id, ({current}) AS codebook_id, "  # noqa: S608
        f"EXISTS(SELECT 1 FROM {CodebookAck._meta.db_table} k WHERE k.annotator_id = %(user)s "
        f"AND k.version_id = ({current})) AS codebook_acked "
        f"FROM {AnnotatorStatus._meta.db_table} s WHERE s.user_id = %(user)s{lock}"
    )


def _held_sql(alias: str) -> str:
    """SQL: the lease ``alias`` is live or ahead (the live one is preferred where both exist)."""
    return f"{alias}.status IN ({_choice(AssignmentStatus.LIVE)}, {_choice(AssignmentStatus.AHEAD)})"


def _status_with_live(annotator: User) -> AnnotatorStatus | None:
    row = fetch_one(_status_with_live_sql(connection.vendor), {"user": annotator.id})
    if row is None:
        return None
    values = iter(row)
    status = _from_row(AnnotatorStatus, values)
    status.live_id, status.codebook_id, status.codebook_acked = values  # type: ignore[attr-defined]
    return status


def _gold_due(status: AnnotatorStatus, cfg: AnnotationConfig) -> bool:
    # Deterministic pacing: the n-th lease is gold when fewer than floor(n * rate) gold items were served.
    if cfg.gold_rate <= 0:
        return False
    return status.gold_leases < math.floor((status.leases_total + 1) * cfg.gold_rate + 1e-9)


def _not_seen_by(annotator: User) -> Exists:
    return Exists(Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator))


# Gold items come in a shuffled order per annotator, (id * A + annotator * B) mod M, which keeps
# annotators off the same gold item at the same time. Both picks (ORM and written-out SQL) use these.
_GOLD_SHUFFLE = (7919, 104_729, 1_000_003)


def _pick_gold(annotator: User) -> Task | None:
    # Gold has no capacity to protect (everyone answers it once): no lock, no counters.
    by_id, by_annotator, modulus = _GOLD_SHUFFLE
    shuffle = Mod(F("id") * by_id + annotator.id * by_annotator, modulus)
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
    row = fetch_one(_pick_fresh_sql(connection.vendor), {"user": annotator.id})
    if row is None:
        return None
    values = iter(row)
    task = _from_row(Task, values)
    task.product = _from_row(Product, values, skip=("extra",))
    guess = _from_row(Guess, values, skip=("topk",))
    task.guess = guess if task.guess_id is not None else None
    return task


def _not_seen_sql() -> str:
    """SQL: the task ``t`` was never leased to the annotator ``%(user)s``."""
    return (
        f"NOT EXISTS(SELECT 1 FROM {Assignment._meta.db_table} a "  # noqa: S608
        f"WHERE a.annotator_id = %(user)s AND a.task_id = t.id)"
    )


def _fresh_pick_sql(*, unless: str = "") -> str:
    """SQL: WHERE … ORDER BY … LIMIT 1 of the next fresh task ``t`` for ``%(user)s``, in the order of the
    partial index ``task_queue_order`` (started first, then priority). Both fresh picks use it;
    ``unless`` (an SQL condition followed by AND) goes first."""
    return (
        f"WHERE {unless}t.claimed_count < t.overlap AND NOT t.is_gold "
        f"AND t.status = {_choice(TaskStatus.OPEN)} AND {_not_seen_sql()} "
        "ORDER BY t.claimed_count DESC, t.priority DESC, t.id ASC LIMIT 1"
    )


@functools.cache  # per database vendor: the text never changes
def _pick_fresh_sql(vendor: str) -> str:
    lock = " FOR UPDATE OF t SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    return (
        f"SELECT {_columns(Task, 't')}, {_columns(Product, 'p', skip=('extra',))}, "  # noqa: S608
        f"{_columns(Guess, 'g', skip=('topk',))} "
        f"FROM {Task._meta.db_table} t JOIN {Product._meta.db_table} p ON p.id = t.product_id "
        f"LEFT JOIN {Guess._meta.db_table} g ON g.id = t.guess_id {_fresh_pick_sql()}{lock}"
    )


def _choice(value: str) -> str:
    """A model choice as an SQL literal. The hot statements are prepared (webapp/rawsql.py): a status
    written as a parameter would keep PostgreSQL's generic plan off the partial indexes, whose
    conditions name the status."""
    assert value.isidentifier(), value  # a fixed choice of the models, never input
    return f"'{value}'"


def single_statement_writes() -> bool:
    """Whether the hot path may write with data-modifying ``WITH … UPDATE/INSERT … RETURNING``.

    PostgreSQL only: SQLite has no data-modifying CTEs, so it runs the same steps one statement at a
    time (it has one writer anyway). Each ORM statement cost 0.5 to 1.5 ms of CPU to compile and
    round-trip on every request; one written-out statement costs about as much as one of them
    (docs/perf-queue.md).
    """
    return connection.vendor == "postgresql"


@functools.cache  # per database vendor: the text never changes
def _lease_new_sql(*, gold: bool, vendor: str) -> str:
    """One statement: renew the annotator's live lease if they have one; else pick a task as
    ``_pick_gold``/``_pick_fresh`` do, insert the live lease, count it in the annotator's status row
    and, for a non-gold task, claim it (compare-and-set on ``claimed_count < overlap``, the row locked
    by the pick). Exactly one row: the live lease's id (NULL if none), the picked id (NULL if none),
    then the new lease, task, product and guess columns (NULLs if nothing was leased).

    The live lease is read here, not with the status lock, because this statement starts after the
    lock is held and so sees a lease that a parallel request of the same annotator committed while
    this one waited for the lock (``_status_with_live_sql``)."""
    task_t, assign_t, status_t = (
        Task._meta.db_table,
        Assignment._meta.db_table,
        AnnotatorStatus._meta.db_table,
    )
    # The live lease, else the lease ahead (the page's pre-fetched item), which becomes the live one.
    # The status condition is repeated outside the subquery: after waiting for an expirer's row lock,
    # PostgreSQL re-checks it on the row's new version (an expired lease is not revived).
    is_live = _choice(AssignmentStatus.LIVE)
    live = (
        f"live AS (UPDATE {assign_t} a SET expires_at = %(expires)s, status = {is_live} "  # noqa: S608
        f"WHERE a.id = (SELECT h.id FROM {assign_t} h WHERE h.annotator_id = %(user)s AND {_held_sql('h')} "
        f"ORDER BY h.status = {is_live} DESC LIMIT 1) AND {_held_sql('a')} RETURNING a.id)"
    )
    unless = "NOT EXISTS(SELECT 1 FROM live) AND "
    insert = (
        f"lease AS (INSERT INTO {assign_t} (task_id, annotator_id, status, expires_at, created, updated) "  # noqa: S608
        f"SELECT {{source}}.id, %(user)s, %(live)s, %(expires)s, %(now)s, %(now)s FROM {{source}} "
        f"RETURNING {_columns(Assignment, assign_t)})"
    )
    if gold:
        # The order of _pick_gold: a shuffle per annotator, no lock (gold has no capacity to protect).
        by_id, _, modulus = _GOLD_SHUFFLE
        pick = (
            f"SELECT t.id FROM {task_t} t WHERE {unless}t.is_gold AND t.status = {_choice(TaskStatus.OPEN)} "  # noqa: S608
            f"AND {_not_seen_sql()} ORDER BY MOD(t.id * {by_id} + %(shuffle)s, {modulus}), t.id LIMIT 1"
        )
        claim, source, task_cols = "", "pick", f"{task_t} task ON task.id = lease.task_id"
        counted = "leases_total = s.leases_total + 1, gold_leases = s.gold_leases + 1"
    else:
        # The statement of _pick_fresh (partial index task_queue_order), then the claim.
        pick = f"SELECT t.id FROM {task_t} t {_fresh_pick_sql(unless=unless)} FOR UPDATE OF t SKIP LOCKED"  # noqa: S608
        claim = (
            f"task AS (UPDATE {task_t} t SET claimed_count = t.claimed_count + 1 FROM pick "  # noqa: S608
            f"WHERE t.id = pick.id AND t.claimed_count < t.overlap RETURNING {_columns(Task, 't')}), "
        )
        source, task_cols = "task", "task ON task.id = lease.task_id"
        counted = "leases_total = s.leases_total + 1"
    return (
        f"WITH {live}, pick AS MATERIALIZED ({pick}), {claim}{insert.format(source=source)}, "  # noqa: S608
        f"counted AS (UPDATE {status_t} s SET {counted} FROM lease WHERE s.id = %(status)s RETURNING s.id) "
        f"SELECT one.live_id, pick.id, {_columns(Assignment, 'lease')}, {_columns(Task, 'task')}, "
        f"{_columns(Product, 'p', skip=('extra',))}, {_columns(Guess, 'g', skip=('topk',))} "
        f"FROM (SELECT (SELECT live.id FROM live) AS live_id) one LEFT JOIN pick ON TRUE "
        f"LEFT JOIN lease ON lease.task_id = pick.id LEFT JOIN {task_cols} "
        f"LEFT JOIN {Product._meta.db_table} p ON p.id = task.product_id "
        f"LEFT JOIN {Guess._meta.db_table} g ON g.id = task.guess_id"
    )


def _lease_new(
    annotator: User, status: AnnotatorStatus, *, gold: bool, expires_at: datetime, now: datetime
) -> Assignment | None:
    """The annotator's live lease, renewed, if they have one; else a new live lease on the next gold
    (``gold=True``) or fresh task, in one statement; ``None`` when there is neither. Only with
    ``single_statement_writes()``; the caller holds the status lock."""
    params: dict[str, Any] = {
        "user": annotator.id,
        "live": AssignmentStatus.LIVE.value,
        "expires": expires_at,
        "now": now,
        "status": status.id,
        "shuffle": annotator.id * _GOLD_SHUFFLE[1],
    }
    row = fetch_one(_lease_new_sql(gold=gold, vendor=connection.vendor), params)
    assert row is not None  # the statement answers one row
    live_id, picked_id = row[0], row[1]
    if live_id is not None:  # renewed by the statement
        return _live_loaded(live_id)
    if picked_id is None:
        return None
    if row[2] is None:  # pragma: no cover - only reachable if the pick's row lock were bypassed
        raise LeaseLost("The item was taken meanwhile; ask for the next one.")
    values = iter(row)
    next(values), next(values)  # the live and picked ids
    assignment, task = _from_row(Assignment, values), _from_row(Task, values)
    task.product = _from_row(Product, values, skip=("extra",))
    guess = _from_row(Guess, values, skip=("topk",))
    task.guess = guess if task.guess_id is not None else None
    assignment.task = task
    return assignment


def _live_loaded(assignment_id: int) -> Assignment:
    return Assignment.objects.select_related(*_RELATED).defer(*_DEFERRED).get(id=assignment_id)


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

    Idempotent: while a lease is live, every call returns that same lease (and renews its TTL). Without
    a live lease, the lease ahead (``lease_ahead``) becomes the live one.
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
        if status.live_id is not None:  # type: ignore[attr-defined]  # SQLite (PostgreSQL: _lease_new)
            renewed = Assignment.objects.filter(id=status.live_id, status__in=HELD).update(  # type: ignore[attr-defined]
                expires_at=expires_at, status=AssignmentStatus.LIVE
            )
            if renewed:  # else the expirer took it back a moment ago: lease afresh
                return _live_loaded(status.live_id)  # type: ignore[attr-defined]

        if single_statement_writes():
            # Live lease renewed, or pick + insert + counters (+ claim), as one statement each; same
            # picks, locks and guards. Past this point the annotator has no live lease: the statement
            # read that after the status lock was held, and every path to a live lease takes that lock.
            gold_due = _gold_due(status, cfg)
            leased = (
                _lease_new(annotator, status, gold=True, expires_at=expires_at, now=now) if gold_due else None
            )
            if leased is None:
                leased = _lease_new(annotator, status, gold=False, expires_at=expires_at, now=now)
            if leased is not None:
                return leased
            # Neither gold nor fresh: only an item that came back may be left.
            return _lease_picked(annotator, status, lease_status=AssignmentStatus.LIVE, fresh=False, now=now)
        return _lease_picked(annotator, status, lease_status=AssignmentStatus.LIVE, fresh=True, now=now)


def lease_ahead(*, annotator: User) -> Assignment | None:
    """The item after the annotator's live one, leased for them ``ahead`` (the annotator page's
    pre-fetch, so that the next item shows without a round trip); the next ``lease_next_task`` makes it
    live. Same picks, locks, claims and TTL as a live lease, and like one it expires (``leases_expire``)
    when the page is abandoned. Idempotent: an existing lease ahead is renewed and returned.

    None when the annotator holds no live lease, must acknowledge the codebook, is paused, or nothing
    else is left. The returned assignment has ``task``, ``task.product`` and ``task.guess`` loaded.
    """
    cfg = annotation_config()
    now = timezone.now()
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        if status.paused or codebook_unacknowledged(annotator=annotator) is not None:
            return None
        held = dict(
            Assignment.objects.filter(annotator=annotator, status__in=HELD).values_list("status", "id")
        )
        if AssignmentStatus.LIVE not in held:
            return None  # nothing is ahead of no item
        ahead_id = held.get(AssignmentStatus.AHEAD)
        if ahead_id is not None:
            renewed = Assignment.objects.filter(id=ahead_id, status=AssignmentStatus.AHEAD).update(
                expires_at=now + timedelta(seconds=cfg.lease_ttl_s)
            )
            if renewed:
                return _live_loaded(ahead_id)
        # Only a gold or fresh item: one the annotator skipped stays at the end of their queue (and its
        # skip can still be undone) until nothing else is left.
        return _lease_picked(
            annotator, status, lease_status=AssignmentStatus.AHEAD, fresh=True, returned=False, now=now
        )


def _lease_picked(
    annotator: User,
    status: AnnotatorStatus,
    *,
    lease_status: str,
    fresh: bool,
    returned: bool = True,
    now: datetime,
) -> Assignment | None:
    """Lease the next gold or fresh task (``fresh``), else (``returned``) one of the annotator's own
    returned items, with ``lease_status`` (live or ahead), and claim it; None when there is none. The
    caller holds the status lock (``annotator_status_locked``)."""
    cfg = annotation_config()
    expires_at = now + timedelta(seconds=cfg.lease_ttl_s)
    task = None
    if fresh:
        task = _pick_gold(annotator) if _gold_due(status, cfg) else None
        if task is None:
            task = _pick_fresh(annotator)
    if task is not None:
        assignment = Assignment.objects.create(
            task=task, annotator=annotator, status=lease_status, expires_at=expires_at, updated=now
        )
        AnnotatorStatus.objects.filter(id=status.id).update(
            leases_total=F("leases_total") + 1, gold_leases=F("gold_leases") + int(task.is_gold)
        )
    else:
        back = _pick_returned(annotator) if returned else None
        if back is None:
            return None
        assignment, task = back, back.task
        Assignment.objects.filter(id=assignment.id, status__in=RETURNABLE).update(
            status=lease_status, expires_at=expires_at, updated=now
        )
        assignment.status, assignment.expires_at, assignment.updated = lease_status, expires_at, now
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


def assignment_locked(*, annotator: User, assignment_id: int) -> Assignment:
    """The annotator's assignment with its task (both locked) and the task's guess, plus the current
    codebook version (``current_codebook_id``, ``current_codebook_number``); one query.

    Equivalent to ``select_related("task", "task__guess").select_for_update(of=("self", "task"))``
    with two subquery annotations, written out once: the ORM spent ~4 ms of CPU compiling it on every
    submit (docs/perf-queue.md).

    On PostgreSQL it locks the annotator's status row first, as "next" does, so that one annotator's
    next and submit never wait for each other in opposite orders: a gold submit locks the status row
    to count the answer, and a "next" holding that lock renews the live lease, which a submit holding
    the lease's lock would block (a deadlock, issue 14). Both wait in the same order instead.
    """
    row = fetch_one(_assignment_locked_sql(connection.vendor), {"id": assignment_id, "user": annotator.id})
    if row is None:
        # Someone else's assignment is indistinguishable from a missing one (no IDOR oracle).
        raise LeaseNotFound(f"No assignment {assignment_id} of yours.")
    values = iter(row)
    assignment, task, guess = _from_row(Assignment, values), _from_row(Task, values), _from_row(Guess, values)
    task.guess = guess if task.guess_id is not None else None
    assignment.task = task
    assignment.current_codebook_id, assignment.current_codebook_number = next(values), next(values)  # type: ignore[attr-defined]
    return assignment


@functools.cache  # per database vendor: the text never changes
def _assignment_locked_sql(vendor: str) -> str:
    current = f"FROM {CodebookVersion._meta.db_table} c ORDER BY c.number DESC LIMIT 1"
    lock, status_lock, status_locked = "", "", ""
    if connection.features.has_select_for_update_of:
        lock = " FOR UPDATE OF a, t"
        # The status row's lock sits in a subquery of the output row, which PostgreSQL computes below
        # the LockRows step that takes the lease's and task's locks: status first, then lease and task.
        # After a wait there, LockRows re-reads the lease and task rows at their latest versions.
        status_lock = (
            f"WITH s AS MATERIALIZED (SELECT s.id FROM {AnnotatorStatus._meta.db_table} s "  # noqa: S608
            f"WHERE s.user_id = %(user)s FOR UPDATE) "
        )
        status_locked = ", (SELECT count(*) FROM s)"
    return (
        f"{status_lock}SELECT {_columns(Assignment, 'a')}, {_columns(Task, 't')}, {_columns(Guess, 'g')}, "  # noqa: S608
        f"(SELECT c.id {current}), (SELECT c.number {current}){status_locked} "
        f"FROM {Assignment._meta.db_table} a JOIN {Task._meta.db_table} t ON t.id = a.task_id "
        f"LEFT JOIN {Guess._meta.db_table} g ON g.id = t.guess_id "
        f"WHERE a.id = %(id)s AND a.annotator_id = %(user)s{lock}"
    )


def assignment_skip(*, annotator: User, assignment_id: int) -> Assignment:
    """Give the item back; it returns to the end of this annotator's own queue (after fresh items)."""
    now = timezone.now()
    with transaction.atomic():
        assignment = assignment_locked(annotator=annotator, assignment_id=assignment_id)
        changed = Assignment.objects.filter(id=assignment.id, status=AssignmentStatus.LIVE).update(
            status=AssignmentStatus.SKIPPED, updated=now
        )
        if changed != 1:
            raise LeaseLost(f"Assignment {assignment_id} is {assignment.status}, not live: nothing to skip.")
        Task.objects.filter(id=assignment.task_id, is_gold=False).update(claimed_count=F("claimed_count") - 1)
        assignment.status, assignment.updated = AssignmentStatus.SKIPPED, now
        return assignment


def assignment_unskip_last(*, annotator: User) -> Assignment | None:
    """Undo a skip: if the annotator's most recent action was a skip (newer than their newest
    annotation, within ``ANNOTATION_UNDO_WINDOW_S``), the skipped item becomes their live lease again
    and any other live lease goes back to the queue; None when their last action was not a skip.

    Raises ``UndoNotAllowed`` when the item was filled up or resolved by others meanwhile, and
    ``AnnotatorPaused`` for a paused annotator.
    """
    cfg = annotation_config()
    now = timezone.now()
    with transaction.atomic():
        status = annotator_status_locked(annotator=annotator)
        if status.paused:
            raise AnnotatorPaused(status.paused_reason)
        skipped = (
            Assignment.objects.filter(
                annotator=annotator,
                status=AssignmentStatus.SKIPPED,
                updated__gte=now - timedelta(seconds=cfg.undo_window_s),
            )
            .order_by("-updated", "-id")
            .first()
        )
        if skipped is None:
            return None
        newest = Annotation.objects.filter(annotator=annotator).order_by("-created").values("created")[:1]
        if any(row["created"] >= skipped.updated for row in newest):
            return None  # an annotation came after the skip: that is what "undo" takes back
        live = Assignment.objects.filter(annotator=annotator, status=AssignmentStatus.LIVE)
        others = list(live.values_list("id", flat=True))
        leases_release(others, new_status=AssignmentStatus.RELEASED)  # before: one live lease per annotator
        task = Task.objects.select_for_update().get(id=skipped.task_id)
        if task.status != TaskStatus.OPEN or (not task.is_gold and task.claimed_count >= task.overlap):
            raise UndoNotAllowed("Others finished the item you skipped meanwhile: it cannot come back.")
        if not task.is_gold:
            Task.objects.filter(id=task.id).update(claimed_count=F("claimed_count") + 1)
        Assignment.objects.filter(id=skipped.id, status=AssignmentStatus.SKIPPED).update(
            status=AssignmentStatus.LIVE, expires_at=now + timedelta(seconds=cfg.lease_ttl_s), updated=now
        )
        return _live_loaded(skipped.id)


def leases_release(assignment_ids: list[int], *, new_status: str, only_expired_before: object = None) -> int:
    """Compare-and-set ``live/ahead → new_status`` for each id, then give each task its claim back once.

    The rows are locked first, so the claims given back are exactly those of the rows changed here,
    even if an expirer or a submit races for the same leases (they wait, then find them no longer live).
    """
    if not assignment_ids:
        return 0
    now = timezone.now()
    rows = Assignment.objects.filter(id__in=assignment_ids, status__in=HELD)
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
    """Return expired live and ahead leases to the queue, each exactly once; the number returned.

    Two expirers running at once take disjoint rows (SKIP LOCKED) and each row's ``live → expired``
    is a compare-and-set, so no task gets its claim back twice.
    """
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            # One condition per status: each matches its partial index (assignment_*_expiry).
            Assignment.objects.filter(
                Q(status=AssignmentStatus.LIVE, expires_at__lt=now)
                | Q(status=AssignmentStatus.AHEAD, expires_at__lt=now)
            )
            .order_by("expires_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        return leases_release(ids, new_status=AssignmentStatus.EXPIRED, only_expired_before=now)


def leases_release_for_annotator(*, annotator: User) -> int:
    """Take back every live and ahead lease of ``annotator`` (paused); their items return to the queue."""
    with transaction.atomic():
        ids = list(
            Assignment.objects.filter(annotator=annotator, status__in=HELD)
            .select_for_update()
            .values_list("id", flat=True)
        )
        return leases_release(ids, new_status=AssignmentStatus.RELEASED)
