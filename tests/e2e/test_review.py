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
from training import pipeline
from training.models import BatchStatus, RetrainBatch, TrainingRun
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
    "Flagged items",
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
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


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


def _labelled_batch(annotator: User, annotator2: User, *, mine: int = 3, theirs: int = 2) -> RetrainBatch:
    """``mine`` items corrected to $80 by annotator, ``theirs`` to $900 by annotator2; both checked."""
    services.tasks_create_for_products(products=_products("item", mine + theirs))
    for user, n, price in ((annotator, mine, "80"), (annotator2, theirs, "900")):
        for _ in range(n):
            a = services.lease_next_task(annotator=user)
            assert a is not None
            services.annotation_submit(
                annotator=user,
                assignment_id=a.id,
                verdict="correct",
                corrected_price=price,
                seconds_spent=3,
                confirm_price=True,
            )
    AnnotatorStatus.objects.filter(user__in=[annotator, annotator2]).update(gold_seen=10, gold_correct=10)
    return batch_create_from_resolved(min_size=1)


def test_a_reviewer_excludes_an_annotators_items_and_approves_the_rest(
    page: Any, login_as: Any, reviewer: User, annotator: User, annotator2: User, settings: Any
) -> None:
    from training.services.runs import _label_rows

    settings.ANNOTATION_GOLD_RATE = 0.0
    batch = _labelled_batch(annotator, annotator2)
    login_as(page.context, reviewer)
    page.goto("/")
    page.get_by_role("link", name="Review", exact=True).first.click()
    _go(page, "Batches")
    page.get_by_role("link", name=f"#{batch.pk}").first.click()
    items = page.get_by_role("region", name="Items")
    expect(items.locator("#items-matching")).to_contain_text("5 item(s) match")

    items.locator("select[name=annotator]").select_option(annotator2.username)
    items.get_by_label("Error vs guess at least").fill("500")
    items.get_by_role("button", name="Filter").click()
    expect(items.locator("#items-matching")).to_contain_text("2 item(s) match the filter")
    expect(items.locator("tbody tr")).to_have_count(2)
    items.get_by_label("Reason").fill("copy-pasted $900 everywhere")
    items.get_by_role("button", name="Exclude all 2 matching").click()
    expect(page.locator(".messages")).to_contain_text("2 item(s) excluded; 3 item(s) left to approve.")
    expect(page.locator("tr.item-excluded")).to_have_count(2)
    expect(page.locator("tr.item-excluded").first).to_contain_text("copy-pasted $900 everywhere")

    page.get_by_role("button", name="Approve and train").click()
    expect(page).to_have_url(re.compile(r"/review/runs/\d+/$"))
    approved = RetrainBatch.objects.get(pk=batch.pk)
    assert (approved.status, approved.size) == (BatchStatus.APPROVED, 3)
    assert approved.content_sha256 != batch.content_sha256
    assert sorted(row.price for row in _label_rows([batch.pk])) == [80.0, 80.0, 80.0]

    _go(page, "Audit")
    expect(page.locator("#audit-table")).to_contain_text("batch_exclude")
    expect(page.locator('#audit-table tr[data-action="batch_exclude"]')).to_contain_text(reviewer.username)


def test_a_run_approved_with_8_bit_shows_its_settings_on_the_leaderboard(
    page: Any,
    login_as: Any,
    reviewer: User,
    annotator: User,
    annotator2: User,
    settings: Any,
    tmp_path: Any,
    tiny_base: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from training.services import registry
    from training.services.runs import dataset_build, run_train

    torch.set_num_threads(1)
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.BASE_MODEL = str(tiny_base)
    settings.RETRAIN_RECIPE = "tiny"
    settings.RETRAIN_RECIPE_OVERRIDES = json.dumps({"train": {"max_steps": 2}})  # a smoke run, not a model
    settings.RETRAIN_REPLAY_SHARE = 0.0
    settings.RETRAIN_EVAL_MAX_ITEMS = 0
    monkeypatch.setattr(pipeline, "guess_send", lambda version_id: None)  # no worker here
    for i in range(6):  # the frozen test split the version is scored on
        Product.objects.create(
            external_id=f"test-{i}", title=f"t{i}", text="A plain thing.", price=40 + i, split="test"
        )
    batch = _labelled_batch(annotator, annotator2, mine=4, theirs=0)
    login_as(page.context, reviewer)

    page.goto(f"/review/batches/{batch.pk}/")
    form = page.locator("#run-settings")
    form.get_by_label("Quantization").select_option("8bit")
    form.get_by_label("LoRA rank").select_option("8")
    page.get_by_role("button", name="Approve and train").click()
    expect(page).to_have_url(re.compile(r"/review/runs/\d+/$"))
    run = TrainingRun.objects.get(batch=batch)
    assert run.hyperparameters == {"quant": {"mode": "8bit"}, "lora": {"r": 8, "alpha": 16}}

    # The worker's three steps, run here: dataset, training (8-bit), scoring and the gate.
    assert dataset_build(run_id=run.pk) is not None
    assert run_train(run_id=run.pk, enqueue_next=False) == "trained"
    decision = registry.run_evaluate_and_gate(run_id=run.pk)
    assert decision is not None
    assert decision["promote"] is True
    run.refresh_from_db()
    assert run.candidate is not None
    evaluation = run.candidate.evaluations.get()
    assert evaluation.predictor_settings["quantization"] == "8bit"
    assert f"scored {run.candidate.name} on 6 test items (8bit, prompt base): MAE $" in run.logs
    assert f"gate: {run.candidate.name} promoted" in run.logs

    page.goto(f"/review/runs/{run.pk}/")
    expect(page.locator("#run-settings")).to_contain_text("quant.mode=8bit")

    _go(page, "Versions")
    settings_cell = page.locator(f'td.version-settings[data-version="{run.candidate.name}"]')
    expect(settings_cell.locator(".quantization")).to_have_text("8-bit")
    expect(settings_cell).to_contain_text("LoRA r 8")
    expect(settings_cell).to_contain_text("2 steps")
    expect(page.locator("#metric-definitions")).to_contain_text("Share of green guesses")


def test_the_run_page_follows_a_run_from_its_first_step_to_its_end_without_a_reload(
    page: Any, login_as: Any, reviewer: User, annotator: User, annotator2: User, settings: Any
) -> None:
    from training.models import ProgressPoint

    settings.ANNOTATION_GOLD_RATE = 0.0
    batch = _labelled_batch(annotator, annotator2)
    login_as(page.context, reviewer)
    page.goto(f"/review/batches/{batch.pk}/")
    page.get_by_role("button", name="Approve and train").click()
    expect(page).to_have_url(re.compile(r"/review/runs/\d+/$"))
    expect(page.locator("#loss-curve")).to_contain_text("waiting for the first step")
    run = TrainingRun.objects.get(batch=batch)

    # The worker (patched out here) logs its first step and then the run's end; the open page polls.
    TrainingRun.objects.filter(pk=run.pk).update(status="running", stage="train")
    ProgressPoint.objects.create(run=run, step=1, total_steps=4, loss=2.5, learning_rate=1e-3)
    expect(page.locator("#curve-summary")).to_contain_text("step 1: loss 2.5000", timeout=10_000)
    expect(page.locator("#run-status")).to_have_text("running")

    ProgressPoint.objects.create(run=run, step=4, total_steps=4, loss=1.25, learning_rate=1e-4)
    expect(page.locator("#curve-summary")).to_contain_text("step 4: loss 1.2500", timeout=10_000)
    TrainingRun.objects.filter(pk=run.pk).update(status="failed", stage="train")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=10_000)
    expect(page.get_by_role("button", name="Retry the run")).to_be_visible(timeout=10_000)  # the reload
