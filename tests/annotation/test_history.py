"""The annotator's own history: listing, and changing an answer until its item resolves."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from annotation import services
from annotation.exceptions import AnnotationFinal, AnnotatorPaused
from annotation.models import Annotation, PriceFlag, Task, TaskStatus
from tests.annotation.queue_helpers import lease, make_tasks, submit

pytestmark = pytest.mark.django_db

CODEBOOK = "# Rules\n\n## Reject reasons\n- `not-a-product`: no sellable item\n- `bundle`: several items\n"


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_PREFETCH = False


@pytest.fixture
def codebook(reviewer: User, annotator: User, annotator2: User) -> None:
    version = services.codebook_publish(author=reviewer, markdown=CODEBOOK)
    for user in (annotator, annotator2):
        services.codebook_acknowledge(annotator=user, version_number=version.number)


def _answered(annotator: User, *, overlap: int = 2) -> Annotation:
    make_tasks(1, overlap=overlap, guess="100.00")
    return submit(annotator, lease(annotator), "accept")


def _edit(annotator: User, annotation: Annotation, verdict: str, price: Any = None, **kw: Any) -> Annotation:
    return services.annotation_edit(
        annotator=annotator, annotation_id=annotation.id, verdict=verdict, corrected_price=price, **kw
    )


def test_edit_before_resolution_changes_the_answer_not_the_counts(annotator: User, codebook: None) -> None:
    annotation = _answered(annotator)
    edited = _edit(annotator, annotation, "correct", "120.50")
    stored = Annotation.objects.get(id=annotation.id)
    assert (stored.verdict, stored.corrected_price) == ("correct", Decimal("120.50"))
    assert edited.task.completed_count == 1
    assert edited.task.status == TaskStatus.OPEN
    _edit(annotator, annotation, "reject", reason_code="bundle")
    stored.refresh_from_db()
    assert (stored.verdict, stored.corrected_price, stored.reason_code) == ("reject", None, "bundle")


def test_edit_has_the_submit_rules(annotator: User, codebook: None) -> None:
    annotation = _answered(annotator)
    with pytest.raises(ValidationError) as unusual:  # 10x the guess: asks for a confirmation
        _edit(annotator, annotation, "correct", "1000.00")
    assert unusual.value.error_dict["corrected_price"][0].code == services.PRICE_UNCONFIRMED
    with pytest.raises(ValidationError, match="not in codebook"):
        _edit(annotator, annotation, "reject", reason_code="made-up")
    with pytest.raises(ValidationError, match="not a price"):
        _edit(annotator, annotation, "correct", "999999999999")
    assert Annotation.objects.get(id=annotation.id).verdict == "accept"  # nothing refused was saved
    confirmed = _edit(annotator, annotation, "correct", "5000.00", confirm_price=True)
    assert confirmed.price_flag == PriceFlag.OUT_OF_RANGE


def test_resolved_item_is_final_and_others_answers_are_not_yours(
    annotator: User, annotator2: User, codebook: None
) -> None:
    annotation = _answered(annotator)
    submit(annotator2, lease(annotator2), "accept")  # the second answer resolves the item
    with pytest.raises(AnnotationFinal):
        _edit(annotator, annotation, "correct", "90.00")
    assert Annotation.objects.get(id=annotation.id).verdict == "accept"
    with pytest.raises(Annotation.DoesNotExist):
        _edit(annotator2, annotation, "correct", "90.00")


def test_api_lists_editable_and_edits(annotator: User, annotator2: User, codebook: None) -> None:
    open_one = _answered(annotator)
    client = APIClient()
    client.force_authenticate(annotator)
    rows = client.get("/api/v1/annotate/annotations").json()["results"]
    assert rows[0]["id"] == open_one.id
    assert rows[0]["editable"] is True
    assert rows[0]["product_title"]
    url = f"/api/v1/annotate/annotations/{open_one.id}"
    refused = client.post(url, {"verdict": "correct", "corrected_price": "1000"}, format="json")
    assert refused.status_code == 400
    assert "confirm_price" in str(refused.json())
    ok = client.post(url, {"verdict": "correct", "corrected_price": "110"}, format="json")
    assert ok.status_code == 200
    assert ok.json()["corrected_price"] == "110.00"
    submit(annotator2, lease(annotator2), "accept")
    assert client.get("/api/v1/annotate/annotations").json()["results"][0]["editable"] is False
    final = client.post(url, {"verdict": "accept"}, format="json")
    assert final.status_code == 409
    assert final.json()["error"]["code"] == "annotation_final"
    other = APIClient()
    other.force_authenticate(annotator2)
    assert other.post(url, {"verdict": "accept"}, format="json").status_code == 404


def test_history_page_edits_and_shows_final(annotator: User, annotator2: User, codebook: None) -> None:
    annotation = _answered(annotator)
    client = Client()
    client.force_login(annotator)
    assert b"/annotate/history/" in client.get("/annotate/").content
    page = client.get("/annotate/history/").content.decode()
    assert annotation.task.product.title in page
    assert "Save" in page
    url = f"/annotate/history/{annotation.id}/"
    asked = client.post(url, {"verdict": "correct", "corrected_price": "1000"}, follow=True).content.decode()
    assert "Not changed" in asked
    assert "The price is right" in asked
    done = client.post(
        url, {"verdict": "correct", "corrected_price": "1000", "confirm_price": "on"}, follow=True
    ).content.decode()
    assert "Changed:" in done
    assert "$1,000.00" in done
    submit(annotator2, lease(annotator2), "accept")
    page = client.get("/annotate/history/").content.decode()
    assert "Final: the item resolved." in page
    assert "Save" not in page
    assert "Not changed" in client.post(url, {"verdict": "accept"}, follow=True).content.decode()


def test_check_items_and_paused_annotators_cannot_change_answers(annotator: User, codebook: None) -> None:
    gold_answer = _answered(annotator)
    Task.objects.filter(id=gold_answer.task_id).update(
        is_gold=True, gold_price=Decimal("50.00")
    )  # a check item: scored when answered
    assert not services.annotation_editable(Annotation.objects.select_related("task").get(id=gold_answer.id))
    with pytest.raises(AnnotationFinal):
        _edit(annotator, gold_answer, "correct", "50.00")
    annotation = _answered(annotator)
    services.annotator_pause(annotator=annotator, reason="Test pause.")
    with pytest.raises(AnnotatorPaused):
        _edit(annotator, annotation, "correct", "90.00")
    assert Annotation.objects.get(id=annotation.id).verdict == "accept"
