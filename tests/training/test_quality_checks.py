"""Batch quality checks: a failing batch is approved only with a written override reason."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation import services
from annotation.models import AnnotatorStatus
from tests.annotation.queue_helpers import lease, make_tasks, submit
from tests.conftest import client_for
from training import pipeline
from training.models import AuditEvent, RetrainBatch, TrainingRun
from training.services.batches import batch_create_from_resolved

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_GOLD_MIN_SEEN = 5
    settings.ANNOTATION_GOLD_ACCURACY_MIN = 0.6
    settings.RETRAIN_GOLD_ACCURACY_MIN = 0.7
    settings.RETRAIN_OUT_OF_RANGE_MAX_SHARE = 0.02
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


def _gold_record(user: User, correct: int, seen: int) -> None:
    AnnotatorStatus.objects.update_or_create(user=user, defaults={"gold_seen": seen, "gold_correct": correct})


def _batch(user: User, prices: list[str]) -> RetrainBatch:
    make_tasks(len(prices))
    for price in prices:
        submit(user, lease(user), "correct", price, confirm_price=True)
    return batch_create_from_resolved(min_size=1)


def _checks(reviewer: User, batch: RetrainBatch) -> dict[str, Any]:
    body = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}").json()
    return {"passed": body["checks_passed"], **{c["name"]: c for c in body["checks"]}}


def test_a_batch_of_checked_annotators_passes_and_is_approved_without_a_reason(
    annotator: User, reviewer: User
) -> None:
    _gold_record(annotator, correct=9, seen=10)
    batch = _batch(annotator, ["80"] * 4)
    body = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}").json()
    assert body["checks_passed"] is True
    assert [c["name"] for c in body["checks"]] == [
        "gold_accuracy",
        "out_of_range_share",
        "annotators_below_floor",
        "quarantined_labels",
    ]
    assert set(body["checks"][0]) == {"name", "passed", "value", "threshold", "message"}
    assert body["checks"][0]["value"] == 0.9
    assert body["checks"][0]["threshold"] == 0.7
    response = client_for(reviewer).post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json")
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="batch_approve")
    assert event.numbers["override"] is False
    assert event.numbers["checks_passed"] is True


def test_a_batch_without_gold_answers_needs_an_override_with_a_reason(
    annotator: User, reviewer: User
) -> None:
    batch = _batch(annotator, ["80", "90"])
    checks = _checks(reviewer, batch)
    assert checks["passed"] is False
    assert checks["gold_accuracy"]["passed"] is False
    assert checks["gold_accuracy"]["value"] is None
    assert "quality is unknown" in checks["gold_accuracy"]["message"]

    client = client_for(reviewer)
    refused = client.post(f"/api/v1/batches/{batch.pk}/approve", {"override_reason": "   "}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "quality_checks_failed"
    assert "gold_accuracy" in refused.json()["error"]["message"]
    assert not TrainingRun.objects.exists()

    reason = "first batch of a new install: gold items arrive next week"
    approved = client.post(f"/api/v1/batches/{batch.pk}/approve", {"override_reason": reason}, format="json")
    assert approved.status_code == 200
    event = AuditEvent.objects.get(action="batch_approve")
    assert (event.actor, event.batch_id, event.message) == (reviewer, batch.pk, reason)
    assert event.numbers["override"] is True
    assert event.numbers["failed_checks"] == ["gold_accuracy"]
    batch.refresh_from_db()
    assert batch.reason == reason


def test_out_of_range_prices_fail_the_batch(annotator: User, reviewer: User) -> None:
    _gold_record(annotator, correct=10, seen=10)
    batch = _batch(annotator, ["80", "90", "999999999", "70"])
    checks = _checks(reviewer, batch)
    assert checks["out_of_range_share"]["passed"] is False
    assert checks["out_of_range_share"]["value"] == 0.25
    assert "1 of 4 priced label(s)" in checks["out_of_range_share"]["message"]
    assert checks["gold_accuracy"]["passed"] is True


def test_the_batch_page_and_the_check_text_give_the_same_share(annotator: User, reviewer: User) -> None:
    from django.test import Client

    _gold_record(annotator, correct=10, seen=10)
    batch = _batch(annotator, ["80"] * 21 + ["999999999"])
    checks = _checks(reviewer, batch)
    assert checks["out_of_range_share"]["value"] == 0.0455
    assert "1 of 22 priced label(s) (4.55%)" in checks["out_of_range_share"]["message"]
    browser = Client()
    browser.force_login(reviewer)
    page = browser.get(f"/review/batches/{batch.pk}/").content.decode()
    assert '<td class="num">0.0455</td>' in page  # was 0.046 beside "(4.5%)": rounded twice
    assert "(4.55%)" in page


def test_an_annotator_paused_after_the_snapshot_fails_the_batch(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    _gold_record(annotator, correct=10, seen=10)
    _gold_record(annotator2, correct=1, seen=4)  # too few answers to be paused by accuracy yet
    make_tasks(4)
    for user in (annotator, annotator, annotator2, annotator2):
        submit(user, lease(user), "correct", "80")
    batch = batch_create_from_resolved(min_size=1)
    checks = _checks(reviewer, batch)
    # Not paused yet, but below the floor on the gold answered so far: the batch must not pass.
    assert checks["annotators_below_floor"]["passed"] is False
    assert "bob (gold 1/4 so far)" in checks["annotators_below_floor"]["message"]
    # Weighted by items: (2 × 1.0 + 2 × 0.25) / 4.
    assert checks["gold_accuracy"]["value"] == 0.625
    assert checks["gold_accuracy"]["passed"] is False

    services.annotator_pause(annotator=annotator2, reason="copy-pasted prices.", reviewer=reviewer)
    checks = _checks(reviewer, batch)
    assert checks["annotators_below_floor"]["passed"] is False
    assert checks["annotators_below_floor"]["value"] == 1
    assert "bob (paused: copy-pasted prices." in checks["annotators_below_floor"]["message"]


def test_the_batch_page_shows_the_checks_and_asks_for_an_override_reason(
    annotator: User, reviewer: User
) -> None:
    batch = _batch(annotator, ["80"])
    client = client_for(reviewer)
    page = client.get(f"/review/batches/{batch.pk}/").content.decode()
    assert 'id="quality-checks"' in page
    assert "gold_accuracy" in page
    assert 'name="override_reason"' in page
    refused = client.post(f"/review/batches/{batch.pk}/approve/", {"recipe": "sft"}, follow=True)
    assert "fails 1 quality check(s)" in refused.content.decode()
    assert not TrainingRun.objects.exists()
    approved = client.post(
        f"/review/batches/{batch.pk}/approve/", {"recipe": "sft", "override_reason": "pilot batch"}
    )
    run = TrainingRun.objects.get(batch=batch)
    assert approved["Location"] == f"/review/runs/{run.pk}/"
    page = client.get(f"/review/batches/{batch.pk}/").content.decode()
    assert "Override reason: pilot batch" in page


def _paused_after_the_snapshot(annotator: User, annotator2: User, reviewer: User) -> RetrainBatch:
    """A batch of 6 labels (4 by a careful annotator, 2 by one paused once the batch exists)."""
    _gold_record(annotator, correct=10, seen=10)
    _gold_record(annotator2, correct=10, seen=10)
    make_tasks(6)
    for user in (annotator, annotator, annotator, annotator, annotator2, annotator2):
        submit(user, lease(user), "correct", "80")
    batch = batch_create_from_resolved(min_size=1)
    assert _checks(reviewer, batch)["passed"] is True
    _gold_record(annotator2, correct=10, seen=30)  # then misses 20 gold items in a row
    services.annotator_pause(annotator=annotator2, reason="gold accuracy 10/30.")
    return batch


def test_a_pending_batch_with_a_paused_annotators_labels_waits_until_they_are_released(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    batch = _paused_after_the_snapshot(annotator, annotator2, reviewer)
    checks = _checks(reviewer, batch)
    assert checks["passed"] is False
    assert (checks["quarantined_labels"]["passed"], checks["quarantined_labels"]["value"]) == (False, 2)
    assert checks["annotators_below_floor"]["passed"] is False
    client = client_for(reviewer)
    assert client.post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json").status_code == 409

    released = client.post(f"/api/v1/annotation/annotators/{annotator2.id}/quarantine/release")
    assert released.json()["labels"] == 2
    checks = _checks(reviewer, batch)
    assert checks["quarantined_labels"]["passed"] is True
    assert checks["annotators_below_floor"]["passed"] is True  # the reviewer vouched for those labels
    # (4 × 1.0 + 2 × 0.33) / 6 = 0.78: the batch's gold accuracy still passes.
    assert checks["passed"] is True
    assert client.post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json").status_code == 200


def test_dropping_a_paused_annotators_labels_takes_them_out_of_the_pending_batch(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    batch = _paused_after_the_snapshot(annotator, annotator2, reviewer)
    old_hash = batch.content_sha256
    client = client_for(reviewer)
    dropped = client.post(f"/api/v1/annotation/annotators/{annotator2.id}/quarantine/drop")
    assert dropped.json()["requeued"] == 2
    batch.refresh_from_db()
    assert batch.size == 4
    assert batch.stats["rows"] == 4
    assert batch.content_sha256 != old_hash
    assert all(ids == [annotator.id] for ids in batch.items.values_list("annotator_ids", flat=True))
    body = client.get(f"/api/v1/batches/{batch.pk}").json()
    assert body["size"] == 4
    assert body["checks_passed"] is True
    event = AuditEvent.objects.get(action="quarantine_drop")
    assert event.numbers["removed_from_batches"] == {str(batch.pk): 2}
    assert client.post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json").status_code == 200
