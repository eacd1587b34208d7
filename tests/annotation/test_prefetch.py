"""The lease ahead (the annotator page's pre-fetch): one per annotator, claimed like a live lease, made
live by the next "next", given back when it expires or the annotator is paused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from annotation import services
from annotation.models import Assignment, AssignmentStatus, Task
from tests.annotation.queue_helpers import lease, make_tasks, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 1


def _claims(tasks: list[Task]) -> set[int]:
    return set(Task.objects.filter(id__in=[t.id for t in tasks]).values_list("claimed_count", flat=True))


def _held(user: User) -> list[tuple[str, int]]:
    rows = Assignment.objects.filter(annotator=user, status__in=("live", "ahead")).order_by("status")
    return [(a.status, a.task_id) for a in rows]


def test_it_leases_the_next_item_ahead_and_makes_it_live_on_the_next_next(annotator: User) -> None:
    tasks = make_tasks(3)
    live = lease(annotator)
    ahead = services.lease_ahead(annotator=annotator)
    assert ahead is not None
    assert ahead.status == AssignmentStatus.AHEAD
    assert ahead.task_id != live.task_id
    assert ahead.task.product.title  # loaded for the page
    assert services.lease_ahead(annotator=annotator).id == ahead.id  # idempotent while it is held
    assert lease(annotator).id == live.id  # "next" keeps the live lease while there is one
    assert _held(annotator) == [("ahead", ahead.task_id), ("live", live.task_id)]
    assert [t.claimed_count for t in Task.objects.filter(id__in=[t.id for t in tasks]).order_by("id")] == [
        1,
        1,
        0,
    ]

    submit(annotator, live)
    promoted = lease(annotator)
    assert (promoted.id, promoted.status) == (ahead.id, AssignmentStatus.LIVE)
    assert _held(annotator) == [("live", ahead.task_id)]
    assert Task.objects.get(id=ahead.task_id).claimed_count == 1  # claimed once, not again


def test_it_keeps_the_item_ahead_from_other_annotators(annotator: User, annotator2: User) -> None:
    make_tasks(2)
    lease(annotator)
    ahead = services.lease_ahead(annotator=annotator)
    assert ahead is not None
    other = services.lease_next_task(annotator=annotator2)
    assert other is None  # overlap 1: both items are held by the first annotator


def test_it_leases_nothing_ahead_without_a_live_item_or_when_nothing_is_left(annotator: User) -> None:
    make_tasks(1)
    assert services.lease_ahead(annotator=annotator) is None  # no live item yet
    lease(annotator)
    assert services.lease_ahead(annotator=annotator) is None  # the only item is the live one


def test_it_returns_both_leases_to_the_queue_when_the_page_is_abandoned(
    annotator: User, annotator2: User
) -> None:
    tasks = make_tasks(2)
    lease(annotator)
    services.lease_ahead(annotator=annotator)
    Assignment.objects.filter(annotator=annotator).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert services.leases_expire() == 2
    assert services.leases_expire() == 0  # each exactly once
    assert _held(annotator) == []
    assert _claims(tasks) == {0}
    assert lease(annotator2).task_id in {t.id for t in tasks}  # back in the queue for others

    # The expired item ahead is not revived by the first annotator's next "next": they get a lease
    # as anyone would (the remaining free item, or one of their own expired ones).
    mine = lease(annotator)
    assert mine.status == AssignmentStatus.LIVE
    assert _held(annotator) == [("live", mine.task_id)]


def test_it_gives_back_the_item_ahead_when_the_annotator_is_paused(annotator: User) -> None:
    tasks = make_tasks(2)
    lease(annotator)
    services.lease_ahead(annotator=annotator)
    assert services.leases_release_for_annotator(annotator=annotator) == 2
    assert _claims(tasks) == {0}
