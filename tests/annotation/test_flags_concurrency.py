"""A flag racing another annotator's submit on the same item, on PostgreSQL: one of them wins cleanly,
the other gets a domain error; never a deadlock, a lost answer or a wrong count."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from annotation import services
from annotation.exceptions import LeaseLost
from annotation.flags import item_flag
from annotation.models import Annotation, ItemFlag, Task, TaskStatus
from tests.annotation.queue_helpers import lease, make_tasks
from tests.annotation.test_concurrency import _run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 15


@pytest.fixture(autouse=True)
def _postgres_only(settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (SQLite runs one writer at a time)")
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def test_a_flag_and_a_submit_on_one_item_never_deadlock(annotator: User, annotator2: User) -> None:
    tasks = make_tasks(ROUNDS, overlap=2)
    outcomes: list[str] = []
    for task in tasks:
        mine, theirs = lease(annotator), lease(annotator2)
        assert mine.task_id == theirs.task_id == task.id

        def flag(mine: Any = mine) -> None:
            item_flag(annotator=annotator, assignment_id=mine.id, reason_code="other")

        def answer(theirs: Any = theirs) -> None:
            try:
                services.annotation_submit(
                    annotator=annotator2, assignment_id=theirs.id, verdict="accept", seconds_spent=1
                )
            except LeaseLost:
                outcomes.append("flag first")
            else:
                outcomes.append("answer first")

        assert _run_threads([flag, answer]) == []
        task.refresh_from_db()
        answered = Annotation.objects.filter(task=task).count()
        assert task.status == TaskStatus.FLAGGED
        assert (task.claimed_count, task.completed_count) == (answered, answered)  # no lease holds it
        assert ItemFlag.objects.filter(task=task, state="open").count() == 1
    assert len(outcomes) == ROUNDS
    first = outcomes.count("flag first")
    print(f"\nflag vs submit: {first} flag first, {ROUNDS - first} answer first")
    assert Task.objects.filter(status=TaskStatus.OPEN).count() == 0
