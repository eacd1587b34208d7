"""Batches reviewed item by item: filter, exclude with a reason, approve the rest.

The content hash, size and stats of the batch cover only the included items; the run's dataset never
holds an excluded one; every exclusion is in the audit trail with the reviewer and the batch.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from annotation.models import AnnotatorStatus
from tests.annotation.queue_helpers import lease, make_tasks, submit
from tests.conftest import client_for
from training import pipeline
from training.models import AuditAction, AuditEvent, BatchItem, RetrainBatch
from training.services import batches as batch_services
from training.services.batches import batch_create_from_resolved
from training.services.runs import _label_rows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.RETRAIN_GOLD_ACCURACY_MIN = 0.5
    settings.RETRAIN_OUT_OF_RANGE_MAX_SHARE = 0.0
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


def _batch(annotator: User, annotator2: User) -> RetrainBatch:
    """Six items on $100 guesses: annotator accepts two and corrects to $90 and $2,500 (out of range);
    annotator2 corrects two to $40 (error $60)."""
    make_tasks(6)
    for verdict, price in (("accept", None), ("accept", None), ("correct", "90"), ("correct", "2500")):
        submit(annotator, lease(annotator), verdict, price, confirm_price=True)
    for _ in range(2):
        submit(annotator2, lease(annotator2), "correct", "40", confirm_price=True)
    AnnotatorStatus.objects.filter(user=annotator).update(gold_seen=10, gold_correct=10)
    AnnotatorStatus.objects.filter(user=annotator2).update(gold_seen=10, gold_correct=7)
    return batch_create_from_resolved(min_size=1)


def _items(reviewer: User, batch: RetrainBatch, **params: Any) -> list[dict[str, Any]]:
    response = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}/items", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_it_filters_a_batchs_items_by_annotator_verdict_error_range_and_gold_misses(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    batch = _batch(annotator, annotator2)
    assert len(_items(reviewer, batch)) == 6
    mine = _items(reviewer, batch, annotator=annotator2.username)
    assert {(i["price"], tuple(i["annotators"])) for i in mine} == {("40.00", (annotator2.username,))}
    assert len(mine) == 2
    assert len(_items(reviewer, batch, annotator=str(annotator.pk))) == 4
    assert len(_items(reviewer, batch, verdict="accept")) == 2
    assert sorted(i["error"] for i in _items(reviewer, batch, min_error=50)) == ["2400.00", "60.00", "60.00"]
    out = _items(reviewer, batch, out_of_range="true")
    assert [(i["price"], i["price_trainable"]) for i in out] == [("2500.00", False)]
    assert {i["annotators"][0] for i in _items(reviewer, batch, gold_miss="true")} == {annotator2.username}


def test_a_bad_filter_is_a_400_naming_it(reviewer: User, annotator: User, annotator2: User) -> None:
    batch = _batch(annotator, annotator2)
    for params, field in (({"verdict": "maybe"}, "verdict"), ({"min_error": "-3"}, "min_error")):
        response = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}/items", params)
        assert response.status_code == 400
        assert field in response.json()["error"]["fields"], response.json()


def test_excluded_items_leave_the_hash_size_checks_and_dataset_and_are_audited(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    batch = _batch(annotator, annotator2)
    before = client_for(reviewer).get(f"/api/v1/batches/{batch.pk}").json()
    assert before["size"] == 6
    assert not before["checks_passed"]  # the $2,500 label: 1 of 4 priced labels out of range
    out_of_range = [i["id"] for i in _items(reviewer, batch, out_of_range="true")]
    by_annotator2 = [i["id"] for i in _items(reviewer, batch, annotator=annotator2.username)]

    response = client_for(reviewer).post(
        f"/api/v1/batches/{batch.pk}/exclude",
        {"item_ids": out_of_range + by_annotator2, "reason": "typo and a copy-paster"},
        format="json",
    )
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["size"] == 3
    assert after["content_sha256"] != before["content_sha256"]
    assert after["checks_passed"] is True
    assert after["stats"]["excluded"] == 3
    excluded = BatchItem.objects.filter(batch=batch, excluded=True)
    assert {i.exclusion_reason for i in excluded} == {"typo and a copy-paster"}
    assert {i.excluded_by_id for i in excluded} == {reviewer.pk}

    event = AuditEvent.objects.get(action=AuditAction.BATCH_EXCLUDE)
    assert (event.actor, event.batch_id, event.subject) == (reviewer, batch.pk, f"batch:{batch.pk}")
    assert sorted(event.numbers["item_ids"]) == sorted(out_of_range + by_annotator2)
    assert event.numbers["content_sha256_before"] == before["content_sha256"]
    assert event.numbers["content_sha256_after"] == after["content_sha256"]
    assert event.message == "typo and a copy-paster"

    run = client_for(reviewer).post(f"/api/v1/batches/{batch.pk}/approve", {}, format="json")
    assert run.status_code == 200, run.content
    approve = AuditEvent.objects.get(action=AuditAction.BATCH_APPROVE)
    assert approve.numbers["content_sha256"] == after["content_sha256"]
    assert approve.numbers["rows"] == 3
    trained = sorted(row.price for row in _label_rows([batch.pk]))
    assert trained == [90.0, 100.0, 100.0]  # two accepted $100 guesses and the $90 correction

    # Approved: final, no more exclusions.
    late = client_for(reviewer).post(
        f"/api/v1/batches/{batch.pk}/restore", {"item_ids": out_of_range}, format="json"
    )
    assert late.status_code == 409
    assert "before approval" in late.json()["error"]["message"]


def test_restoring_puts_items_back_and_the_hash_returns(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    batch = _batch(annotator, annotator2)
    original = batch.content_sha256
    ids = [i["id"] for i in _items(reviewer, batch, verdict="accept")]
    batch_services.batch_items_exclude(reviewer=reviewer, batch_id=batch.pk, item_ids=ids, reason="check")
    assert RetrainBatch.objects.get(pk=batch.pk).content_sha256 != original
    response = client_for(reviewer).post(
        f"/api/v1/batches/{batch.pk}/restore", {"item_ids": ids}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["content_sha256"] == original
    assert AuditEvent.objects.filter(action=AuditAction.BATCH_RESTORE, actor=reviewer).count() == 1


def test_bad_exclusions_are_refused_with_a_clear_error(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    batch = _batch(annotator, annotator2)
    api = client_for(reviewer)
    no_reason = api.post(f"/api/v1/batches/{batch.pk}/exclude", {"item_ids": [1]}, format="json")
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()["error"]["fields"]
    stranger = api.post(
        f"/api/v1/batches/{batch.pk}/exclude", {"item_ids": [999_999], "reason": "x"}, format="json"
    )
    assert stranger.status_code == 409
    assert "999999 are not in batch" in stranger.json()["error"]["message"]
    everything = [i["id"] for i in _items(reviewer, batch)]
    batch_services.batch_items_exclude(
        reviewer=reviewer, batch_id=batch.pk, item_ids=everything, reason="all"
    )
    empty = api.post(f"/api/v1/batches/{batch.pk}/approve", {"override_reason": "x"}, format="json")
    assert empty.status_code == 409
    assert "nothing is left to train on" in empty.json()["error"]["message"]


def test_the_batch_page_filters_and_excludes_the_matching_items(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    batch = _batch(annotator, annotator2)
    client = Client()
    client.force_login(reviewer)
    url = reverse("training:batch", args=[batch.pk])
    page = client.get(url, {"annotator": annotator2.username}).content.decode()
    assert "2 item(s) match the filter" in page
    response = client.post(
        reverse("training:batch_exclude", args=[batch.pk]),
        {"scope": "filtered", "filter_query": f"annotator={annotator2.username}", "reason": "copy-paster"},
        follow=True,
    )
    assert "2 item(s) excluded; 4 item(s) left to approve." in response.content.decode()
    assert BatchItem.objects.filter(batch=batch, excluded=True).count() == 2
    assert response.redirect_chain[-1][0] == f"{url}?annotator={annotator2.username}#items"


def test_the_batch_page_marks_an_item_whose_guess_the_annotators_never_saw(
    reviewer: User, annotator: User, annotator2: User
) -> None:
    from annotation.models import Task

    batch = _batch(annotator, annotator2)
    blind = BatchItem.objects.filter(batch=batch).order_by("id").first()
    assert blind is not None
    Task.objects.filter(pk=blind.resolved_label.task_id).update(is_blind=True)
    client = Client()
    client.force_login(reviewer)
    page = client.get(reverse("training:batch", args=[batch.pk])).content.decode()
    row = page.split(f'data-item="{blind.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "not shown (blind)" in row  # its error vs the guess is no sign of a careless annotator
    assert page.count("not shown (blind)") == 1
