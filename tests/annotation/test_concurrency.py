"""The queue under concurrent load on PostgreSQL (row locks, SKIP LOCKED, compare-and-set updates).

8 threads, one annotator each, 1,000 next-task calls per thread (next, then 40% submit, 10% skip, 50%
nothing: the next call must return the same lease),
then the database is checked: no task leased twice at once, none with more than ``overlap``
annotations, claim counters exact. Two expirers racing return each expired lease exactly once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.db.models import Count, F, Q
from django.utils import timezone

from annotation import services
from annotation.models import Annotation, Assignment, AssignmentStatus, Task
from tests.annotation.queue_helpers import make_gold, make_tasks
from webapp.roles import Role
from webapp.services import user_create_with_role

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8
CALLS = 1_000


@pytest.fixture(autouse=True)
def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks and SKIP LOCKED need PostgreSQL (SQLite runs one writer at a time)")


def _run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn: Callable[[], None]) -> None:
        try:
            barrier.wait()
            fn()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return errors


def _annotators(n: int) -> list[User]:
    return [user_create_with_role(username=f"load{i}", role=Role.ANNOTATOR)[0] for i in range(n)]


def test_it_never_hands_a_task_to_two_annotators_or_overfills_it(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.05
    settings.ANNOTATION_BLIND_SHARE = 0.0
    make_tasks(1_500, overlap=2, entropies=[random.random() for _ in range(1_500)])
    make_gold(20)
    users = _annotators(THREADS)
    stats = {"leases": 0, "submits": 0, "skips": 0}
    lock = threading.Lock()
    live_seen: dict[int, set[int]] = {}  # assignment id -> annotators that were handed it

    def work(user: User, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(CALLS):
            assignment = services.lease_next_task(annotator=user)
            if assignment is None:
                continue
            with lock:
                stats["leases"] += 1
                live_seen.setdefault(assignment.id, set()).add(user.id)
            roll = rng.random()
            if roll < 0.4:
                gold = assignment.task.is_gold  # answered right, so that nobody is paused mid-run
                services.annotation_submit(
                    annotator=user,
                    assignment_id=assignment.id,
                    verdict="accept" if gold else "correct",
                    corrected_price=None if gold else str(rng.choice([90, 100, 110])),
                    seconds_spent=1,
                    client_token=f"{user.id}-{i}",
                )
                with lock:
                    stats["submits"] += 1
            elif roll < 0.5:
                services.assignment_skip(annotator=user, assignment_id=assignment.id)
                with lock:
                    stats["skips"] += 1

    errors = _run_threads([lambda u=u, k=k: work(u, k) for k, u in enumerate(users)])
    assert not errors, errors[:3]
    assert stats["submits"] > 1_000

    # Nobody was ever handed someone else's lease.
    assert all(len(holders) == 1 for holders in live_seen.values())
    # At most one live lease per annotator, one row per (task, annotator).
    assert (
        not Assignment.objects.filter(status=AssignmentStatus.LIVE)
        .values("annotator")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not Assignment.objects.values("task", "annotator").annotate(n=Count("id")).filter(n__gt=1)
    # Never more than overlap annotations; counters match the rows.
    over = Task.objects.filter(is_gold=False).annotate(n=Count("annotations")).filter(n__gt=F("overlap"))
    assert not over.exists()
    live = Count("assignments", filter=Q(assignments__status=AssignmentStatus.LIVE), distinct=True)
    done = Count("annotations", distinct=True)
    counted = Task.objects.filter(is_gold=False).annotate(live=live, done=done)
    assert not counted.exclude(completed_count=F("done")).exists()
    assert not counted.exclude(claimed_count=F("live") + F("done")).exists()
    assert Annotation.objects.count() == stats["submits"]


def test_it_returns_expired_leases_exactly_once_with_two_expirers() -> None:
    tasks = make_tasks(300)
    users = _annotators(300)
    past = timezone.now() - timedelta(seconds=5)
    Assignment.objects.bulk_create(
        Assignment(task=t, annotator=u, status=AssignmentStatus.LIVE, expires_at=past, updated=past)
        for t, u in zip(tasks, users, strict=True)
    )
    Task.objects.filter(id__in=[t.id for t in tasks]).update(claimed_count=1)
    returned: list[int] = []
    lock = threading.Lock()

    def expire() -> None:
        total = 0
        for _ in range(20):
            total += services.leases_expire(limit=25)
        with lock:
            returned.append(total)

    errors = _run_threads([expire, expire])
    assert not errors, errors
    assert sum(returned) == 300
    assert Assignment.objects.filter(status=AssignmentStatus.EXPIRED).count() == 300
    assert set(Task.objects.filter(id__in=[t.id for t in tasks]).values_list("claimed_count", flat=True)) == {
        0
    }
