"""Quarantine: a paused annotator's labels never reach a retrain batch until a reviewer decides."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation import services
from annotation.models import QuarantinedAnnotation, Task, TaskStatus
from tests.annotation.queue_helpers import lease, make_gold, make_tasks, submit
from tests.conftest import client_for
from training.exceptions import NotEnoughLabelsError
from training.models import AuditEvent, BatchItem
from training.services.batches import batch_create_from_resolved, batch_reject

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _label(user: User, n: int, price: str = "80") -> list[int]:
    """``user`` corrects their next ``n`` items to ``price``; the task ids."""
    ids = []
    for _ in range(n):
        a = lease(user)
        submit(user, a, "correct", price)
        ids.append(a.task_id)
    return ids


def _batched_task_ids() -> set[int]:
    return set(BatchItem.objects.values_list("resolved_label__task_id", flat=True))


def test_it_keeps_labels_made_before_the_pause_out_of_every_batch(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    make_tasks(5)
    early = _label(annotator, 3)  # good-looking labels, made before anyone knew
    good = _label(annotator2, 2)
    services.annotator_pause(annotator=annotator, reason="gold accuracy 0/5.")

    batch = batch_create_from_resolved(min_size=1)
    assert _batched_task_ids() == set(good)
    assert batch.size == 2
    assert QuarantinedAnnotation.objects.filter(annotator=annotator, state="held").count() == 3
    # Unpausing lets them work again but does not release what was held.
    services.annotator_unpause(reviewer=reviewer, annotator=annotator)
    with pytest.raises(NotEnoughLabelsError, match="3 more are quarantined"):
        batch_create_from_resolved(min_size=1)
    assert not _batched_task_ids() & set(early)


def test_it_holds_a_label_that_resolves_after_the_pause(annotator: User, annotator2: User) -> None:
    (task,) = make_tasks(1, overlap=2)
    submit(annotator, lease(annotator), "correct", "80")
    services.annotator_pause(annotator=annotator, reason="spam.")
    submit(annotator2, lease(annotator2), "correct", "81")  # completes the item after the pause
    assert Task.objects.get(id=task.id).status == TaskStatus.RESOLVED
    with pytest.raises(NotEnoughLabelsError):
        batch_create_from_resolved(min_size=1)


def test_it_never_holds_labels_of_a_decided_batch_or_gold_answers(
    annotator: User, reviewer: User, settings
) -> None:
    make_tasks(2)
    first = _label(annotator, 1)
    batch = batch_create_from_resolved(min_size=1)
    batch_reject(reviewer=reviewer, batch_id=batch.pk, reason="decided before the pause")
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_gold(1)
    gold = lease(annotator)
    assert gold.task.is_gold
    submit(annotator, gold, "correct", "500", confirm_price=True)
    services.annotator_pause(annotator=annotator, reason="manual")
    held = set(QuarantinedAnnotation.objects.values_list("task_id", flat=True))
    assert not held & set(first)
    assert gold.task_id not in held


def test_a_reviewer_releases_held_labels_through_the_api_and_they_are_batched(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    make_tasks(3)
    held = _label(annotator, 3)
    services.annotator_pause(annotator=annotator, reason="gold accuracy 1/5.")
    client = client_for(reviewer)

    listed = client.get("/api/v1/annotation/quarantine").json()["results"]
    assert listed == [
        {
            "annotator_id": annotator.id,
            "username": "alice",
            "paused": True,
            "paused_reason": "gold accuracy 1/5.",
            "held": 3,
            "held_labels": 3,
        }
    ]
    assert client_for(annotator).get("/api/v1/annotation/quarantine").status_code == 403
    assert (
        client_for(annotator2).post(f"/api/v1/annotation/annotators/{annotator.id}/quarantine/release")
    ).status_code == 403
    assert client.post(f"/api/v1/annotation/annotators/{reviewer.id}/quarantine/release").status_code == 404

    response = client.post(f"/api/v1/annotation/annotators/{annotator.id}/quarantine/release")
    assert response.status_code == 200
    assert response.json() == {
        "annotator_id": annotator.id,
        "username": "alice",
        "decision": "released",
        "annotations": 3,
        "labels": 3,
        "requeued": 0,
        "withdrawn": 0,
    }
    assert client.get("/api/v1/annotation/quarantine").json()["results"] == []
    batch_create_from_resolved(min_size=1)
    assert _batched_task_ids() == set(held)
    event = AuditEvent.objects.get(action="quarantine_release")
    assert (event.actor, event.subject, event.numbers["labels"]) == (reviewer, f"annotator:{annotator.id}", 3)


def test_a_reviewer_drops_held_labels_and_their_products_are_labelled_again(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    tasks = make_tasks(2)
    _label(annotator, 2)
    services.annotator_pause(annotator=annotator, reason="random prices", reviewer=reviewer)
    response = client_for(reviewer).post(f"/api/v1/annotation/annotators/{annotator.id}/quarantine/drop")
    assert response.status_code == 200
    assert response.json()["decision"] == "dropped"
    assert response.json()["requeued"] == 2
    # Never batched, even after the annotator is unpaused; the products come back for someone else.
    with pytest.raises(NotEnoughLabelsError):
        batch_create_from_resolved(min_size=1)
    relabelled = _label(annotator2, 2, price="99")
    assert {Task.objects.get(id=t).product_id for t in relabelled} == {t.product_id for t in tasks}
    batch = batch_create_from_resolved(min_size=1)
    assert sorted(BatchItem.objects.filter(batch=batch).values_list("price", flat=True)) == [99, 99]
    hold, drop = (AuditEvent.objects.get(action=a) for a in ("quarantine_hold", "quarantine_drop"))
    assert (hold.actor, hold.numbers) == (reviewer, {"annotations": 2})
    assert (drop.actor, drop.subject) == (reviewer, f"annotator:{annotator.id}")


def test_dropping_withdraws_the_vote_from_items_not_resolved_yet(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    from annotation.models import Annotation
    from webapp.roles import Role
    from webapp.services import user_create_with_role

    carol, _ = user_create_with_role(username="carol", role=Role.ANNOTATOR)
    tasks = make_tasks(2, overlap=2)
    _label(annotator, 2, price="999")
    a = lease(annotator2)
    submit(annotator2, a, "correct", "80")  # 80 vs 999: a reviewer would have to adjudicate
    disputed = Task.objects.get(id=a.task_id)
    (waiting,) = [t for t in tasks if t.id != disputed.id]  # still waiting for its second vote
    assert disputed.status == TaskStatus.NEEDS_ADJUDICATION
    services.annotator_pause(annotator=annotator, reason="wild prices.")

    response = client_for(reviewer).post(f"/api/v1/annotation/annotators/{annotator.id}/quarantine/drop")
    assert response.json()["withdrawn"] == 2
    assert not Annotation.objects.filter(annotator=annotator).exists()
    disputed.refresh_from_db()
    waiting.refresh_from_db()
    assert (disputed.status, disputed.completed_count, disputed.claimed_count) == (TaskStatus.OPEN, 1, 1)
    assert (waiting.status, waiting.completed_count, waiting.claimed_count) == (TaskStatus.OPEN, 0, 0)
    # Another annotator completes the disputed item: it resolves without the dropped vote.
    a = lease(carol)
    assert a.task_id == disputed.id  # started items first
    submit(carol, a, "correct", "82")
    assert Task.objects.get(id=disputed.id).resolved_label.price == 81


def test_the_queue_page_releases_held_labels_with_a_button(annotator: User, reviewer: User) -> None:
    make_tasks(1)
    _label(annotator, 1)
    services.annotator_pause(annotator=annotator, reason="gold accuracy 0/5.")
    client = client_for(reviewer)
    page = client.get("/review/queue/").content.decode()
    assert "Quarantined labels" in page
    assert "Release the labels of alice" in page
    response = client.post(f"/review/annotators/{annotator.id}/quarantine/release/", follow=True)
    assert "Released 1 held annotation(s) of alice" in response.content.decode()
    assert "No labels are quarantined." in response.content.decode()
    assert client_for(annotator).post(f"/review/annotators/{annotator.id}/quarantine/drop/").status_code in (
        302,
        403,
    )
    assert QuarantinedAnnotation.objects.get().state == "released"
