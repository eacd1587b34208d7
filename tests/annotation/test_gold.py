"""Gold management: manage.py import_gold, GET/POST /api/v1/gold, the Gold page, feedback after a miss."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from annotation.models import AnnotatorStatus, Product, Task
from tests.annotation.queue_helpers import lease, make_products, make_tasks
from tests.conftest import client_for
from training.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_GOLD_TOLERANCE = 0.2
    settings.ANNOTATION_GOLD_POOL_MIN = 2


def _import(path: Path) -> tuple[str, str, bool]:
    out, err = io.StringIO(), io.StringIO()
    failed = False
    try:
        call_command("import_gold", str(path), stdout=out, stderr=err)
    except CommandError:
        failed = True
    return out.getvalue(), err.getvalue(), failed


def test_import_gold_creates_items_and_reports_every_bad_line(tmp_path: Path) -> None:
    pool = make_products(3)
    (test_product,) = make_products(1, split="test")
    lines = [
        json.dumps({"id": pool[0].external_id, "price": 129.99}),
        json.dumps({"id": pool[1].external_id, "price": "$45.00", "tolerance": 0.1}),
        "{not json",
        json.dumps({"id": pool[2].external_id}),
        json.dumps({"id": "nope-123", "price": 10}),
        json.dumps({"id": test_product.external_id, "price": 10}),
        json.dumps({"id": pool[2].external_id, "price": 10, "tolerance": 2}),
        json.dumps({"title": "Brass door hinge", "text": "Solid brass, 3 inch, pair.", "price": 12.5}),
        json.dumps({"id": pool[0].external_id, "price": 1}),
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out, err, failed = _import(path)
    assert failed
    assert "3 gold item(s) created (1 new product(s)), 0 already gold, 6 bad line(s)." in out
    reported = err.splitlines()
    assert [line.split(":")[1] for line in reported] == ["3", "4", "5", "6", "7", "9"]
    assert "price: a gold item needs its true price" in reported[1]
    assert "no product has the id 'nope-123'" in reported[2]
    assert "frozen test split" in reported[3]
    assert "tolerance: 2 must be a share above 0 and at most 1" in reported[4]
    assert "already on line 1" in reported[5]

    gold = {t.product.external_id: t for t in Task.objects.filter(is_gold=True).select_related("product")}
    assert str(gold[pool[0].external_id].gold_price) == "129.99"
    assert float(gold[pool[0].external_id].gold_tolerance) == 0.2
    assert float(gold[pool[1].external_id].gold_tolerance) == 0.1
    new = Product.objects.get(source="gold")
    assert new.title == "Brass door hinge"
    assert new.split == "pool"
    assert gold[new.external_id].is_blind  # no guess to show: the annotator types the price

    # Importing the good lines again changes nothing.
    path.write_text("\n".join([lines[0], lines[1], lines[7]]) + "\n")
    out, err, failed = _import(path)
    assert not failed
    assert "0 gold item(s) created (0 new product(s)), 3 already gold, 0 bad line(s)." in out
    assert Task.objects.filter(is_gold=True).count() == 3


def test_the_api_creates_one_or_many_gold_items_and_lists_them_with_the_pool(
    reviewer: User, annotator: User
) -> None:
    products = make_products(3)
    client = client_for(reviewer)
    one = client.post("/api/v1/gold", {"id": products[0].external_id, "price": 80}, format="json")
    assert one.status_code == 201, one.content
    assert one.json()["created"] == 1
    item = one.json()["items"][0]
    assert item["product"]["external_id"] == products[0].external_id
    assert (item["price"], item["tolerance"], item["answers"]) == ("80.00", 0.2, 0)

    bad = client.post(
        "/api/v1/gold",
        [{"id": products[1].external_id, "price": 50}, {"id": products[2].external_id, "price": "cheap"}],
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid"
    assert list(bad.json()["error"]["fields"]) == ["items[1].price"]
    assert Task.objects.filter(is_gold=True).count() == 1  # nothing of a bad request is stored

    many = client.post(
        "/api/v1/gold",
        [{"id": p.external_id, "price": 50, "tolerance": 0.3} for p in products],
        format="json",
    )
    assert many.status_code == 201
    assert (many.json()["created"], many.json()["existing"]) == (2, 1)

    listed = client.get("/api/v1/gold").json()
    assert listed["count"] == 3
    assert [r["product"]["external_id"] for r in listed["results"]] == [p.external_id for p in products[::-1]]
    assert listed["pool"]["items"] == 3
    assert listed["pool"]["warning"] is None
    assert client_for(annotator).get("/api/v1/gold").status_code == 403
    events = AuditEvent.objects.filter(action="gold_create").order_by("id")
    assert [(e.actor, e.numbers["created"]) for e in events] == [(reviewer, 1), (reviewer, 2)]


def test_the_gold_page_warns_when_the_pool_runs_low_and_adds_items(reviewer: User, annotator: User) -> None:
    products = make_products(2)
    client = client_for(reviewer)
    page = client.get("/review/gold/").content.decode()
    assert 'id="gold-pool-warning"' in page
    assert "Only 0 gold item(s) exist" in page

    response = client.post("/review/gold/", {"id": products[0].external_id, "price": "19.99"}, follow=True)
    assert "1 gold item(s) added." in response.content.decode()
    refused = client.post("/review/gold/", {"lines": json.dumps({"id": "missing", "price": 3})})
    assert refused.status_code == 400
    assert "line 1: id: no product has the id &#x27;missing&#x27;" in refused.content.decode()
    client.post("/review/gold/", {"lines": json.dumps({"id": products[1].external_id, "price": 5})})
    page = client.get("/review/gold/").content.decode()
    assert 'id="gold-pool-warning"' not in page  # 2 unseen each for alice: the minimum
    assert client_for(annotator).get("/review/gold/").status_code in (302, 403)


def _answer_gold_via_api(annotator: User, price: str) -> dict:
    """Label ordinary items (at $80) until a gold item comes, answer it with ``price``; the answer."""
    client = client_for(annotator)
    while True:
        assignment = lease(annotator)
        gold = assignment.task.is_gold
        response = client.post(
            "/api/v1/annotate/submit",
            {
                "assignment_id": assignment.id,
                "verdict": "correct",
                "corrected_price": price if gold else "80",
            },
            format="json",
        )
        assert response.status_code == 200, response.content
        if gold:
            return response.json()
        assert response.json()["gold_feedback"] is None


def _gold_for(reviewer: User, products: list[Product], price: int = 50) -> None:
    response = client_for(reviewer).post(
        "/api/v1/gold", [{"id": p.external_id, "price": price} for p in products], format="json"
    )
    assert response.status_code == 201, response.content


def test_an_annotator_learns_the_true_price_after_a_wrong_gold_answer(
    annotator: User, reviewer: User, settings
) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_tasks(3)
    _gold_for(reviewer, make_products(2))
    wrong = _answer_gold_via_api(annotator, "500")
    assert wrong["gold_feedback"]["correct"] is False
    assert wrong["gold_feedback"]["true_price"] == "50.00"
    assert wrong["gold_feedback"]["your_price"] == "500.00"
    assert "known price of $50.00" in wrong["gold_feedback"]["message"]
    right = _answer_gold_via_api(annotator, "52")
    assert right["gold_feedback"] is None


def test_the_annotator_page_says_a_gold_answer_was_wrong(annotator: User, reviewer: User, settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    make_tasks(1)
    _gold_for(reviewer, make_products(1))
    client = client_for(annotator)
    for price in ("80", "5"):  # an ordinary item first, then the gold one
        assignment = lease(annotator)
        page = client.post(
            "/annotate/submit/",
            {
                "assignment_id": assignment.id,
                "verdict": "correct",
                "corrected_price": price,
                "seconds_spent": "3",
            },
            follow=True,
        )
    assert assignment.task.is_gold
    assert "known price of $50.00" in page.content.decode()


def test_gold_items_created_through_the_api_pause_a_careless_annotator(
    annotator: User, reviewer: User, settings
) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.5
    settings.ANNOTATION_GOLD_MIN_SEEN = 2
    settings.ANNOTATION_GOLD_ACCURACY_MIN = 0.6
    make_tasks(4)
    _gold_for(reviewer, make_products(3))
    for _ in range(2):
        _answer_gold_via_api(annotator, "900")
    status = AnnotatorStatus.objects.get(user=annotator)
    assert status.paused
    assert "0/2" in status.paused_reason


def test_a_product_made_gold_leaves_the_ordinary_queue_unless_someone_holds_it(
    reviewer: User, annotator: User
) -> None:
    """Queued first, made gold later: its unanswered ordinary task goes; one an annotator holds stays."""
    tasks = make_tasks(3)
    held = lease(annotator)  # the first task, now on the annotator's screen
    client = client_for(reviewer)
    made = client.post(
        "/api/v1/gold", [{"id": t.product.external_id, "price": 90} for t in tasks], format="json"
    )
    assert made.status_code == 201, made.content
    assert (made.json()["created"], made.json()["withdrawn"]) == (3, 2)
    ordinary = Task.objects.filter(product__in=[t.product for t in tasks], is_gold=False)
    assert list(ordinary.values_list("pk", flat=True)) == [held.task_id]
    assert AuditEvent.objects.get(action="gold_create").numbers["withdrawn"] == 2
