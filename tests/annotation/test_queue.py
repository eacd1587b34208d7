"""The work queue: lease order, idempotent next, skip, gold pacing, expiry, codebook ack, pauses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from annotation import services
from annotation.exceptions import AnnotatorPaused, CodebookAckRequired, LeaseLost, LeaseNotFound
from annotation.models import Annotation, AnnotatorStatus, Assignment, AssignmentStatus, Task
from tests.annotation.queue_helpers import lease, make_gold, make_products, make_tasks, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def test_it_returns_nothing_when_the_queue_is_empty(annotator: User) -> None:
    assert services.lease_next_task(annotator=annotator) is None


def test_it_returns_the_same_live_lease_on_repeated_next(annotator: User) -> None:
    make_tasks(3)
    first = lease(annotator)
    again = lease(annotator)
    assert again.id == first.id
    assert Assignment.objects.filter(annotator=annotator, status=AssignmentStatus.LIVE).count() == 1
    assert Task.objects.get(id=first.task_id).claimed_count == 1


def test_it_serves_the_highest_entropy_first(annotator: User) -> None:
    tasks = make_tasks(3, entropies=[0.5, 2.0, 1.0])
    order = []
    for _ in range(3):
        a = lease(annotator)
        order.append(a.task_id)
        submit(annotator, a)
    assert order == [tasks[1].id, tasks[2].id, tasks[0].id]


def test_it_serves_fifo_when_routing_says_so(annotator: User, settings) -> None:
    settings.ANNOTATION_ROUTING = "fifo"
    tasks = make_tasks(3, entropies=[0.5, 2.0, 1.0])
    assert lease(annotator).task_id == tasks[0].id


def test_it_finishes_started_tasks_first(annotator: User, annotator2: User) -> None:
    tasks = make_tasks(3, overlap=2, entropies=[3.0, 2.0, 1.0])
    a = lease(annotator)
    assert a.task_id == tasks[0].id
    submit(annotator, a)
    # The started task now has the lowest priority: "started first" must still win over entropy.
    Task.objects.filter(id=tasks[0].id).update(priority=0.0)
    assert lease(annotator2).task_id == tasks[0].id


def test_it_never_serves_an_annotator_the_same_task_twice(annotator: User) -> None:
    tasks = make_tasks(2, overlap=3)
    seen = []
    for _ in range(2):
        a = lease(annotator)
        seen.append(a.task_id)
        submit(annotator, a)
    assert sorted(seen) == sorted(t.id for t in tasks)
    assert services.lease_next_task(annotator=annotator) is None


def test_it_puts_a_skipped_item_at_the_end_of_that_annotators_queue(
    annotator: User, annotator2: User
) -> None:
    tasks = make_tasks(3, entropies=[3.0, 2.0, 1.0])
    first = lease(annotator)
    services.assignment_skip(annotator=annotator, assignment_id=first.id)
    assert Task.objects.get(id=tasks[0].id).claimed_count == 0
    order = []
    for _ in range(3):
        a = lease(annotator)
        order.append(a.task_id)
        submit(annotator, a)
    assert order == [tasks[1].id, tasks[2].id, tasks[0].id]
    assert Assignment.objects.filter(annotator=annotator).count() == 3  # the skip row was re-used


def test_it_gives_a_skipped_item_to_someone_else_at_once(annotator: User, annotator2: User) -> None:
    tasks = make_tasks(2, entropies=[2.0, 1.0])
    services.assignment_skip(annotator=annotator, assignment_id=lease(annotator).id)
    assert lease(annotator2).task_id == tasks[0].id


def test_it_refuses_to_skip_another_annotators_assignment(annotator: User, annotator2: User) -> None:
    make_tasks(1)
    a = lease(annotator)
    with pytest.raises(LeaseNotFound):
        services.assignment_skip(annotator=annotator2, assignment_id=a.id)
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.LIVE


def test_it_interleaves_gold_at_the_configured_rate(annotator: User, settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.25
    make_tasks(10)
    gold = make_gold(3)
    served = []
    for _ in range(8):
        a = lease(annotator)
        served.append(a.task.is_gold)
        submit(annotator, a)
    assert served == [False, False, False, True, False, False, False, True]
    assert {a.task_id for a in Assignment.objects.filter(task__is_gold=True)} <= {g.id for g in gold}


def test_it_serves_each_gold_item_to_every_annotator(annotator: User, annotator2: User, settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_tasks(4)
    gold = make_gold(1)
    for user in (annotator, annotator2):
        submit(user, lease(user))
        a = lease(user)
        assert a.task_id == gold[0].id
        submit(user, a)
    assert Annotation.objects.filter(task=gold[0]).count() == 2


def test_it_returns_expired_leases_exactly_once(annotator: User, annotator2: User) -> None:
    tasks = make_tasks(1)
    a = lease(annotator)
    Assignment.objects.filter(id=a.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.leases_expire() == 1
    assert services.leases_expire() == 0
    task = Task.objects.get(id=tasks[0].id)
    assert task.claimed_count == 0
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.EXPIRED
    assert lease(annotator2).task_id == task.id
    with pytest.raises(LeaseLost):
        submit(annotator, a)


def test_it_keeps_a_lease_that_has_not_expired(annotator: User) -> None:
    make_tasks(1)
    lease(annotator)
    assert services.leases_expire() == 0


def test_it_requires_the_codebook_to_be_acknowledged(annotator: User, reviewer: User) -> None:
    make_tasks(2)
    services.codebook_publish(author=reviewer, markdown="# v1")
    with pytest.raises(CodebookAckRequired) as info:
        services.lease_next_task(annotator=annotator)
    assert info.value.version.number == 1
    services.codebook_acknowledge(annotator=annotator, version_number=1)
    submit(annotator, lease(annotator))
    services.codebook_publish(author=reviewer, markdown="# v2", change_note="v2")
    with pytest.raises(CodebookAckRequired):
        services.lease_next_task(annotator=annotator)
    services.codebook_acknowledge(annotator=annotator, version_number=2)
    assert lease(annotator).task_id


def test_it_queues_only_pool_products_with_a_guess(annotator: User) -> None:
    pool = make_products(2)
    test = make_products(1, split="test")
    services.guesses_record_bulk(
        rows=[{"product_id": p.id, "price": "10"} for p in [pool[0], *test]], source="baseline:mean"
    )
    assert services.tasks_create_for_products(products=[*pool, *test]) == 1
    assert services.tasks_create_for_products(products=[*pool, *test]) == 0  # already queued
    assert Task.objects.get().product_id == pool[0].id


def test_it_refuses_a_paused_annotator(annotator: User) -> None:
    make_tasks(1)
    AnnotatorStatus.objects.create(user=annotator, paused=True, paused_reason="gold accuracy 1/5.")
    with pytest.raises(AnnotatorPaused, match="gold accuracy 1/5"):
        services.lease_next_task(annotator=annotator)
