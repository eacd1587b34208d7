"""Submitting: validation, duplicates, consensus, gold pauses, blind items, undo, codebook stamping."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation import selectors, services
from annotation.exceptions import AnnotatorPaused, LeaseLost, LeaseNotFound, UndoNotAllowed
from annotation.models import (
    Annotation,
    AnnotatorStatus,
    Assignment,
    AssignmentStatus,
    ResolvedLabel,
    Task,
    TaskStatus,
)
from tests.annotation.queue_helpers import lease, make_gold, make_tasks, submit
from webapp.roles import Role
from webapp.services import user_create_with_role

pytestmark = pytest.mark.django_db

REASONS = "# Codebook\n\n## Reject reasons\n- `not-a-product`: no sellable item\n- bundle: several items\n"


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _annotators(n: int) -> list[User]:
    return [user_create_with_role(username=f"ann{i}", role=Role.ANNOTATOR)[0] for i in range(n)]


def _label_task(task: Task, answers: list[tuple[str, str | None]]) -> Task:
    for user, (verdict, price) in zip(_annotators(len(answers)), answers, strict=True):
        a = lease(user)
        assert a.task_id == task.id
        submit(user, a, verdict, price, reason_code="bundle" if verdict == "reject" else "")
    task.refresh_from_db()
    return task


# --- validation ------------------------------------------------------------------------------------------


def _refusal(info: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    (error,) = info.value.error_dict["corrected_price"]
    return error.code or "", " ".join(info.value.message_dict["corrected_price"])


def test_it_stores_an_out_of_range_correction_only_once_confirmed_and_flags_it(annotator: User) -> None:
    make_tasks(1)
    a = lease(annotator)
    for typed in ("999999999", "1200.5", "0.49"):
        with pytest.raises(ValidationError) as info:
            submit(annotator, a, "correct", typed)
        code, message = _refusal(info)
        assert code == "price_unconfirmed"
        assert "outside the trainable range $0.50–$999.49" in message
        assert "confirm_price=true" in message  # the fix
    assert not Annotation.objects.exists()
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.LIVE

    ann = submit(annotator, a, "correct", "1200.5", confirm_price=True)
    assert ann.corrected_price == Decimal("1200.50")
    assert ann.price_flag == "out_of_range"
    assert ResolvedLabel.objects.get().price_flag == "out_of_range"


def test_it_asks_to_confirm_a_correction_the_codebook_factor_away_from_the_shown_guess(
    annotator: User, settings
) -> None:
    settings.ANNOTATION_CONFIRM_FACTOR = 10
    make_tasks(6, guess="50.00")
    refused = {}
    for typed in ("500", "5", "499.99", "5.01"):
        a = lease(annotator)
        try:
            submit(annotator, a, "correct", typed)
        except ValidationError as exc:
            refused[typed] = " ".join(exc.message_dict["corrected_price"])
            submit(annotator, a, "correct", typed, confirm_price=True)
    assert refused == {
        "500": "$500.00 is 10 times the model's guess ($50.00). Check it; if it is right, send it again "
        "with confirm_price=true.",
        "5": "$5.00 is 1/10 of the model's guess ($50.00). Check it; if it is right, send it again with "
        "confirm_price=true.",
    }
    # Confirmed and in range: a plain, trainable label.
    assert set(Annotation.objects.values_list("price_flag", flat=True)) == {""}

    settings.ANNOTATION_CONFIRM_FACTOR = 3
    with pytest.raises(ValidationError, match="3 times the model's guess"):
        submit(annotator, lease(annotator), "correct", "150")


def test_it_never_compares_with_a_guess_the_annotator_was_not_shown(annotator: User) -> None:
    (task,) = make_tasks(1, guess="50.00", blind=True)
    ann = submit(annotator, lease(annotator), "correct", "900")  # 18x the hidden guess: no question
    assert (ann.task_id, ann.price_flag, ann.guess_shown) == (task.id, "", False)


@pytest.mark.parametrize(
    "bad", ["abc", "-5", "0", "0.001", "1e-999999", "NaN", "Infinity", "1e30", "1e999999"]
)
def test_it_rejects_a_malformed_price_naming_the_field(annotator: User, bad: str) -> None:
    make_tasks(1)
    a = lease(annotator)
    with pytest.raises(ValidationError) as info:
        submit(annotator, a, "correct", bad)
    assert "corrected_price" in info.value.message_dict
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.LIVE


def test_it_needs_a_price_to_correct_and_a_codebook_reason_to_reject(annotator: User, reviewer: User) -> None:
    make_tasks(1)
    services.codebook_publish(author=reviewer, markdown=REASONS)
    services.codebook_acknowledge(annotator=annotator, version_number=1)
    a = lease(annotator)
    with pytest.raises(ValidationError, match="needs the price"):
        submit(annotator, a, "correct", None)
    with pytest.raises(ValidationError) as info:
        submit(annotator, a, "reject", reason_code="made-up")
    assert "not-a-product, bundle" in str(info.value)
    ann = submit(annotator, a, "reject", reason_code="not-a-product")
    assert ann.codebook_version.number == 1
    assert ann.reason_code == "not-a-product"


def test_it_cannot_accept_a_blind_item(annotator: User) -> None:
    make_tasks(1, blind=True)
    a = lease(annotator)
    with pytest.raises(ValidationError) as info:
        submit(annotator, a, "accept")
    assert "verdict" in info.value.message_dict
    ann = submit(annotator, a, "correct", "80")
    assert ann.guess_shown is False


def test_it_hides_the_guess_on_the_configured_share_of_tasks(settings) -> None:
    settings.ANNOTATION_BLIND_SHARE = 0.3
    tasks = make_tasks(400, blind=None)
    share = sum(t.is_blind for t in tasks) / len(tasks)
    assert 0.2 < share < 0.4


def test_it_refuses_to_submit_on_another_annotators_assignment(annotator: User, annotator2: User) -> None:
    make_tasks(1)
    a = lease(annotator)
    with pytest.raises(LeaseNotFound):
        submit(annotator2, a)
    assert not Annotation.objects.exists()


def test_it_records_a_duplicate_submit_once(annotator: User) -> None:
    make_tasks(2)
    a = lease(annotator)
    first = submit(annotator, a, "correct", "90", client_token="tok-1")
    again = submit(annotator, a, "correct", "90", client_token="tok-1")
    assert again.id == first.id
    assert Annotation.objects.count() == 1
    with pytest.raises(LeaseLost):  # without a token a resubmit is refused, never stored twice
        submit(annotator, a, "correct", "90")


# --- consensus ------------------------------------------------------------------------------------------


def test_it_resolves_an_accept_majority_to_the_guess_price() -> None:
    (task,) = make_tasks(1, overlap=3, guess="100.00")
    task = _label_task(task, [("accept", None), ("accept", None), ("correct", "300")])
    assert task.status == TaskStatus.RESOLVED
    label = ResolvedLabel.objects.get(task=task)
    assert (label.method, label.price, label.n_accept, label.n_correct) == (
        "accept_majority",
        Decimal("100.00"),
        2,
        1,
    )


def test_it_resolves_agreeing_corrections_to_their_median() -> None:
    (task,) = make_tasks(1, overlap=3, guess="100.00")
    task = _label_task(task, [("correct", "50"), ("correct", "52"), ("correct", "53")])
    label = ResolvedLabel.objects.get(task=task)
    assert (label.method, label.price, label.spread) == ("median", Decimal("52.00"), Decimal("3.00"))


def test_it_sends_disagreement_beyond_tolerance_to_adjudication(reviewer: User) -> None:
    (task,) = make_tasks(1, overlap=2, guess="100.00")
    task = _label_task(task, [("correct", "20"), ("correct", "200")])
    assert task.status == TaskStatus.NEEDS_ADJUDICATION
    assert not ResolvedLabel.objects.exists()
    assert [t.id for t in selectors.adjudication_queue()] == [task.id]
    label = services.adjudication_resolve(reviewer=reviewer, task_id=task.id, price="150")
    task.refresh_from_db()
    assert (task.status, label.method, label.price, label.adjudicated_by) == (
        "resolved",
        "adjudicated",
        Decimal("150.00"),
        reviewer,
    )
    with pytest.raises(Exception, match="only tasks needing adjudication"):
        services.adjudication_resolve(reviewer=reviewer, task_id=task.id, price="10")


def test_it_resolves_a_reject_majority_without_a_price() -> None:
    (task,) = make_tasks(1, overlap=3)
    _label_task(task, [("reject", None), ("reject", None), ("accept", None)])
    label = ResolvedLabel.objects.get(task=task)
    assert (label.method, label.price) == ("rejected", None)


def test_it_never_collects_more_than_overlap_annotations(annotator: User, annotator2: User) -> None:
    (task,) = make_tasks(1, overlap=1)
    submit(annotator, lease(annotator))
    assert services.lease_next_task(annotator=annotator2) is None
    assert Task.objects.get(id=task.id).completed_count == 1


# --- gold -----------------------------------------------------------------------------------------------


def test_it_pauses_an_annotator_below_gold_accuracy_and_releases_their_work(
    annotator: User, reviewer: User, settings
) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    settings.ANNOTATION_GOLD_MIN_SEEN = 2
    settings.ANNOTATION_GOLD_ACCURACY_MIN = 0.6
    make_tasks(6)
    make_gold(3, price="50.00", guess="50.00")
    answers = []
    for _ in range(4):
        a = lease(annotator)
        answers.append(a.task.is_gold)
        submit(annotator, a, "correct", "200" if a.task.is_gold else "100")  # every gold answer wrong
    assert answers == [False, True, False, True]
    status = AnnotatorStatus.objects.get(user=annotator)
    assert status.paused
    assert "0/2" in status.paused_reason
    with pytest.raises(AnnotatorPaused):
        services.lease_next_task(annotator=annotator)

    services.annotator_unpause(reviewer=reviewer, annotator=annotator)
    a = lease(annotator)
    assert a.status == AssignmentStatus.LIVE


def test_it_counts_a_correct_gold_answer(annotator: User, settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_tasks(2)
    make_gold(1, price="50.00", guess="55.00")
    submit(annotator, lease(annotator))
    submit(annotator, lease(annotator), "accept")  # 55 is within 20% of 50
    status = AnnotatorStatus.objects.get(user=annotator)
    assert (status.gold_seen, status.gold_correct, status.gold_accuracy) == (1, 1, 1.0)


def test_it_gives_back_the_live_lease_of_a_paused_annotator(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    (task,) = make_tasks(1)
    a = lease(annotator)
    services.annotator_pause(annotator=annotator, reason="Off-topic answers.", reviewer=reviewer)
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.RELEASED
    assert Task.objects.get(id=task.id).claimed_count == 0
    assert lease(annotator2).task_id == task.id
    with pytest.raises(LeaseLost):
        submit(annotator, a)
    with pytest.raises(AnnotatorPaused, match="Off-topic answers"):
        services.lease_next_task(annotator=annotator)


# --- undo -----------------------------------------------------------------------------------------------


def test_it_undoes_the_last_annotation_and_serves_the_item_again(annotator: User) -> None:
    tasks = make_tasks(2, entropies=[2.0, 1.0])
    a = lease(annotator)
    submit(annotator, a, "correct", "70")
    nxt = lease(annotator)
    assert nxt.task_id == tasks[1].id
    undone = services.annotation_undo_last(annotator=annotator)
    assert undone.task_id == tasks[0].id
    assert not Annotation.objects.exists()
    assert not ResolvedLabel.objects.exists()
    task = Task.objects.get(id=tasks[0].id)
    assert (task.status, task.completed_count, task.claimed_count) == ("open", 0, 1)
    assert lease(annotator).id == a.id  # the undone item is the current one again
    assert Task.objects.get(id=tasks[1].id).claimed_count == 0  # the other lease was given back
    submit(annotator, lease(annotator), "accept")
    assert ResolvedLabel.objects.get().method == "accept_majority"


def test_it_refuses_undo_after_the_window(annotator: User, settings) -> None:
    settings.ANNOTATION_UNDO_WINDOW_S = 60
    make_tasks(1)
    ann = submit(annotator, lease(annotator))
    Annotation.objects.filter(id=ann.id).update(created=timezone.now() - timedelta(seconds=61))
    with pytest.raises(UndoNotAllowed, match="undo window"):
        services.annotation_undo_last(annotator=annotator)
    assert Annotation.objects.filter(id=ann.id).exists()


def test_it_refuses_undo_once_a_reviewer_adjudicated(reviewer: User) -> None:
    (task,) = make_tasks(1, overlap=2)
    users = _annotators(2)
    for user, price in zip(users, ["20", "500"], strict=True):
        submit(user, lease(user), "correct", price)
    services.adjudication_resolve(reviewer=reviewer, task_id=task.id, price="100")
    with pytest.raises(UndoNotAllowed, match="final"):
        services.annotation_undo_last(annotator=users[1])


def test_it_undoes_only_the_annotators_own_annotation(annotator: User, annotator2: User) -> None:
    make_tasks(2)
    submit(annotator, lease(annotator))
    with pytest.raises(UndoNotAllowed, match="no annotation"):
        services.annotation_undo_last(annotator=annotator2)
    assert Annotation.objects.filter(annotator=annotator).count() == 1


def test_it_takes_back_a_gold_answer_on_undo(annotator: User, settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_tasks(2)
    make_gold(1)
    submit(annotator, lease(annotator))
    submit(annotator, lease(annotator), "accept")
    services.annotation_undo_last(annotator=annotator)
    status = AnnotatorStatus.objects.get(user=annotator)
    assert (status.gold_seen, status.gold_correct) == (0, 0)


def test_it_refuses_undo_once_a_retrain_batch_took_the_label(annotator: User) -> None:
    from training.services.batches import batch_create_from_resolved

    make_tasks(1)
    submit(annotator, lease(annotator), "correct", "42")
    batch_create_from_resolved(min_size=1)
    with pytest.raises(UndoNotAllowed, match="final"):
        services.annotation_undo_last(annotator=annotator)
    assert ResolvedLabel.objects.get().price == Decimal("42.00")


def test_it_undoes_a_skip_only_while_it_is_the_last_action_in_the_window(annotator: User, settings) -> None:
    tasks = make_tasks(3)
    skipped = lease(annotator)
    services.assignment_skip(annotator=annotator, assignment_id=skipped.id)
    shown = lease(annotator)
    assert shown.task_id == tasks[1].id
    back = services.assignment_unskip_last(annotator=annotator)
    assert back is not None
    assert (back.id, back.status, back.task_id) == (skipped.id, AssignmentStatus.LIVE, tasks[0].id)
    assert Assignment.objects.get(id=shown.id).status == AssignmentStatus.RELEASED
    assert [t.claimed_count for t in Task.objects.order_by("id")] == [1, 0, 0]

    services.assignment_skip(annotator=annotator, assignment_id=skipped.id)
    submit(annotator, lease(annotator))  # an annotation after the skip: undo means that one
    assert services.assignment_unskip_last(annotator=annotator) is None

    settings.ANNOTATION_UNDO_WINDOW_S = 0
    other = lease(annotator)
    services.assignment_skip(annotator=annotator, assignment_id=other.id)
    assert services.assignment_unskip_last(annotator=annotator) is None  # too old


def test_it_cannot_bring_back_a_skipped_item_others_finished(annotator: User, annotator2: User) -> None:
    (task,) = make_tasks(1)
    skipped = lease(annotator)
    services.assignment_skip(annotator=annotator, assignment_id=skipped.id)
    submit(annotator2, lease(annotator2))
    with pytest.raises(UndoNotAllowed, match="Others finished the item you skipped"):
        services.assignment_unskip_last(annotator=annotator)
    assert Assignment.objects.get(id=skipped.id).status == AssignmentStatus.SKIPPED
    assert Task.objects.get(id=task.id).claimed_count == 1
