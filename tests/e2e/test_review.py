"""Reviewer pages in a real browser: the menu, gold that pauses an annotator, quarantine that gates a batch.

Run: ``.venv/bin/python -m pytest tests/e2e -m e2e`` (needs /usr/bin/chromium; see conftest.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from annotation import services
from annotation.models import AnnotatorStatus, Product
from training.models import BatchStatus, RetrainBatch, TrainingRun
from training.services import batches as batch_services
from training.services.batches import batch_create_from_resolved

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MENU = [
    "Overview",
    "Batches",
    "Runs",
    "Versions",
    "Codebook",
    "Gold",
    "Queue & annotators",
    "Adjudication",
    "Agreement",
    "Audit",
]


def _menu(page: Any) -> Any:
    return page.get_by_role("navigation", name="Reviewer pages")


def _go(page: Any, name: str) -> None:
    """Click ``name`` in the reviewer menu."""
    _menu(page).get_by_role("link", name=name, exact=True).click()


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 1
    settings.ANNOTATION_GOLD_RATE = 0.5  # every other item is gold while gold is left
    settings.ANNOTATION_GOLD_MIN_SEEN = 2
    settings.ANNOTATION_GOLD_ACCURACY_MIN = 0.6
    settings.ANNOTATION_GOLD_POOL_MIN = 2
    monkeypatch.setattr(batch_services, "_enqueue_dataset", lambda run_id: None)  # no worker here


def _products(prefix: str, n: int, *, guess: float = 80.0) -> list[Product]:
    products = [
        Product.objects.create(external_id=f"{prefix}-{i}", title=f"{prefix} {i}", text="A plain thing.")
        for i in range(n)
    ]
    services.guesses_record_bulk(
        rows=[{"product_id": p.id, "price": guess} for p in products], source="baseline:mean"
    )
    return products


def _label(annotator: User, *, gold_price: str, price: str = "80") -> None:
    """The annotator answers everything offered: ``gold_price`` on gold items, ``price`` otherwise."""
    while (assignment := services.lease_next_task(annotator=annotator)) is not None:
        services.annotation_submit(
            annotator=annotator,
            assignment_id=assignment.id,
            verdict="correct",
            corrected_price=gold_price if assignment.task.is_gold else price,
            seconds_spent=3,
            confirm_price=True,  # a careless annotator confirms whatever they typed
        )
        if AnnotatorStatus.objects.filter(user=annotator, paused=True).exists():
            return


def test_it_reaches_every_reviewer_page_from_the_home_page(page: Any, login_as: Any, reviewer: User) -> None:
    login_as(page.context, reviewer)
    page.goto("/")
    page.get_by_role("link", name="Review", exact=True).first.click()
    expect(_menu(page).get_by_role("link")).to_have_text(MENU)
    for name in MENU:
        _go(page, name)
        current = _menu(page).locator('[aria-current="page"]')
        expect(current).to_have_text(name)
        expect(page.locator("h1")).to_be_visible()


def test_gold_items_added_on_the_gold_page_pause_a_careless_annotator(
    page: Any, login_as: Any, reviewer: User, annotator: User
) -> None:
    gold_products = _products("gold", 3, guess=50.0)
    products = _products("item", 4)
    services.tasks_create_for_products(products=products)
    login_as(page.context, reviewer)

    page.goto("/review/gold/")
    expect(page.locator("#gold-pool-warning")).to_contain_text("Only 0 gold item(s) exist")
    page.locator("#gold-lines").fill(
        "\n".join(json.dumps({"id": p.external_id, "price": 50}) for p in gold_products)
    )
    page.get_by_role("button", name="Add").click()
    expect(page.locator(".messages")).to_contain_text("3 gold item(s) added.")
    expect(page.locator("#gold-count")).to_have_text("3")
    expect(page.locator("#gold-pool-warning")).to_have_count(0)

    _label(annotator, gold_price="500")  # every gold answer ten times the true price
    _go(page, "Queue & annotators")
    paused = page.get_by_role("region", name="Paused annotators")
    expect(paused).to_contain_text(annotator.username)
    expect(paused).to_contain_text("gold accuracy 0/2")
    quarantined = page.get_by_role("region", name="Quarantined labels")
    expect(quarantined).to_contain_text(annotator.username)


def test_a_batch_with_a_paused_annotators_labels_is_approved_once_they_are_released(
    page: Any, login_as: Any, reviewer: User, annotator: User, annotator2: User, settings: Any
) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    services.tasks_create_for_products(products=_products("item", 6))
    for user, n in ((annotator, 4), (annotator2, 2)):
        for _ in range(n):
            a = services.lease_next_task(annotator=user)
            assert a is not None
            services.annotation_submit(
                annotator=user, assignment_id=a.id, verdict="correct", corrected_price="80", seconds_spent=3
            )
    for user, correct in ((annotator, 10), (annotator2, 9)):
        AnnotatorStatus.objects.filter(user=user).update(gold_seen=10, gold_correct=correct)
    batch = batch_create_from_resolved(min_size=1)
    services.annotator_pause(annotator=annotator2, reason="copy-pasted prices.", reviewer=reviewer)
    login_as(page.context, reviewer)

    page.goto(f"/review/batches/{batch.pk}/")
    checks = page.locator("#quality-checks")
    expect(checks).to_contain_text("failing")
    expect(checks.locator("tr.check-failed")).to_have_count(2)  # quarantined labels, a paused annotator
    page.get_by_role("button", name=re.compile("Override the checks")).click()
    assert page.locator("#override-reason").evaluate("e => e.validity.valueMissing")  # no reason, no post
    assert not TrainingRun.objects.exists()

    _go(page, "Queue & annotators")
    page.get_by_role("button", name=f"Release the labels of {annotator2.username}").click()
    expect(page.locator(".messages")).to_contain_text(
        f"Released 2 held annotation(s) of {annotator2.username}"
    )

    page.goto(f"/review/batches/{batch.pk}/")
    expect(page.locator("#quality-checks")).to_contain_text("all passed")
    page.get_by_role("button", name="Approve and train").click()
    expect(page).to_have_url(re.compile(r"/review/runs/\d+/$"))
    assert RetrainBatch.objects.get(pk=batch.pk).status == BatchStatus.APPROVED
