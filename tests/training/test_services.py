"""Pipeline services without a model: batching, state guards, cancel, the stale-run reaper, refusals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from annotation.models import Product, Split
from annotation.services import guesses_record_bulk, tasks_create_for_products
from tests.training.conftest import catalogue_rows, import_catalogue, label_everything
from training.exceptions import BatchStateError, NotEnoughLabelsError, RunStateError
from training.models import (
    AuditEvent,
    BatchItem,
    BatchStatus,
    RetrainBatch,
    RunStage,
    RunStatus,
    TrainingRun,
)
from training.services.batches import batch_approve, batch_create_from_resolved, batch_reject
from training.services.recovery import runs_recover
from training.services.runs import dataset_build, run_cancel, run_train


@pytest.fixture
def labelled(pipeline_settings: Any, annotator: Any) -> int:
    """40 products imported, guessed by the mean baseline, and labelled (every other one corrected)."""
    import_catalogue(catalogue_rows(40))
    pool = list(Product.objects.filter(split=Split.POOL))
    guesses_record_bulk(rows=[{"product_id": p.pk, "price": "50.00"} for p in pool], source="baseline:mean")
    tasks_create_for_products(products=[p.pk for p in pool])
    return label_everything(annotator, price_of=lambda p: p.price if p.pk % 2 else None)


@pytest.mark.django_db
def test_it_snapshots_resolved_labels_into_a_batch_once(labelled: int, reviewer: Any) -> None:
    with pytest.raises(NotEnoughLabelsError, match="needs at least"):
        batch_create_from_resolved(min_size=labelled + 1)
    batch = batch_create_from_resolved(min_size=1)
    assert batch.size == labelled
    assert len(batch.content_sha256) == 64
    assert batch.stats["rows"] == labelled
    assert set(batch.stats["shares"]) == {"accept", "correct", "reject"}
    assert abs(sum(batch.stats["shares"].values()) - 1) < 1e-9
    assert batch.stats["annotators"][0]["username"] == "alice"
    assert sum(b["count"] for b in batch.stats["price"]["histogram"]) == labelled
    verdicts = set(BatchItem.objects.filter(batch=batch).values_list("verdict", flat=True))
    assert verdicts == {"accept", "correct"}
    with pytest.raises(NotEnoughLabelsError):
        batch_create_from_resolved(min_size=1)  # every label is in a batch already
    assert AuditEvent.objects.filter(action="batch_create", batch=batch).exists()


@pytest.mark.django_db
def test_it_refuses_approval_of_a_rejected_batch_and_rejection_without_reason(
    reviewer: Any, annotator: Any
) -> None:
    batch = RetrainBatch.objects.create(content_sha256="1" * 64)
    with pytest.raises(BatchStateError, match="reason is required"):
        batch_reject(reviewer=reviewer, batch_id=batch.pk, reason="")
    with pytest.raises(PermissionError):
        batch_reject(reviewer=annotator, batch_id=batch.pk, reason="no")
    batch_reject(reviewer=reviewer, batch_id=batch.pk, reason="duplicates")
    with pytest.raises(BatchStateError, match="rejected"):
        batch_approve(reviewer=reviewer, batch_id=batch.pk)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_it_does_nothing_when_a_step_is_delivered_again(reviewer: Any) -> None:
    run = TrainingRun.objects.create(
        recipe_name="tiny", base_model="b", status=RunStatus.RUNNING, stage=RunStage.EVALUATE
    )
    assert run_train(run_id=run.pk) == "skipped"  # trained already: a redelivery does not train twice
    assert dataset_build(run_id=run.pk) is None
    TrainingRun.objects.filter(pk=run.pk).update(stage=RunStage.TRAIN, heartbeat=timezone.now())
    assert run_train(run_id=run.pk) == "busy"  # a live worker holds the lease
    run.refresh_from_db()
    assert run.attempts == 0


@pytest.mark.django_db
def test_it_cancels_a_queued_run_at_once(reviewer: Any) -> None:
    batch = RetrainBatch.objects.create(content_sha256="2" * 64)
    run = TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model="b")
    run = run_cancel(reviewer=reviewer, run_id=run.pk)
    assert run.status == RunStatus.CANCELLED
    assert dataset_build(run_id=run.pk) is None
    with pytest.raises(RunStateError, match="already ended"):
        run_cancel(reviewer=reviewer, run_id=run.pk)


@pytest.mark.django_db
def test_it_fails_a_bootstrap_run_whose_worker_died_and_leaves_waiting_runs_alone() -> None:
    old = timezone.now() - timedelta(hours=1)
    dead = TrainingRun.objects.create(
        recipe_name="tiny", base_model="b", status=RunStatus.RUNNING, stage=RunStage.TRAIN, heartbeat=old
    )
    waiting = TrainingRun.objects.create(
        recipe_name="tiny", base_model="b", status=RunStatus.RUNNING, stage=RunStage.TRAIN, started=old
    )
    assert runs_recover(stale_after_s=60).failed == [dead.pk]
    dead.refresh_from_db()
    waiting.refresh_from_db()
    assert dead.status == RunStatus.FAILED
    assert "worker lost" in dead.error
    assert waiting.status == RunStatus.RUNNING


@pytest.mark.django_db
def test_it_fails_the_run_when_a_test_product_reaches_the_dataset(labelled: int, reviewer: Any) -> None:
    batch = batch_create_from_resolved(min_size=1)
    item = BatchItem.objects.filter(batch=batch).select_related("product").first()
    assert item is not None
    Product.objects.filter(pk=item.product_id).update(split=Split.TEST)  # as if the split had moved
    run = TrainingRun.objects.create(
        batch=batch, recipe_name="tiny", base_model=_base(), status=RunStatus.QUEUED
    )
    RetrainBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.APPROVED, reviewed_at=timezone.now())
    assert dataset_build(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "test-split product" in run.error
    assert item.product.external_id in run.error


def _seed_label() -> Product:
    """One product of the named seed set v1 was trained on ("A seeded lamp", $77)."""
    from annotation.models import SeedLabel

    seeded = Product.objects.create(external_id="seed-1", title="Seeded", text="A seeded lamp", price=77)
    SeedLabel.objects.create(product=seeded, price="77.00", seed_set="demo-seed-labels.jsonl")
    return seeded


def _base() -> str:
    from django.conf import settings

    return settings.BASE_MODEL


@pytest.mark.django_db
def test_it_picks_products_to_guess_new_only_or_the_unlabelled_pool(labelled: int, settings: Any) -> None:
    from annotation.models import Guess
    from training.models import ModelVersion
    from training.services.guesses import products_needing_guess

    version = ModelVersion.objects.create(number=7, base_model="b")
    fresh = Product.objects.create(external_id="fresh", title="New", text="new product", split=Split.POOL)
    Product.objects.create(external_id="exam", title="Test", text="test product", split=Split.TEST)
    assert products_needing_guess(version=version, reguess_pool=False) == [fresh.pk]
    unlabelled = set(
        Product.objects.filter(split=Split.POOL, tasks__resolved_label__isnull=True).values_list(
            "pk", flat=True
        )
    ) | {fresh.pk}
    assert set(products_needing_guess(version=version, reguess_pool=True)) == unlabelled
    Guess.objects.create(product=fresh, model_version=version, source="model", price="3.00")
    assert fresh.pk not in products_needing_guess(version=version, reguess_pool=True)


def test_it_scores_with_fp8_or_dense_weights_only_when_the_recipe_says_so_and_fingerprints_them_apart(
    settings: Any, tiny_base: Any
) -> None:
    from training.recipes import make_predictor, predictor_settings

    settings.RETRAIN_RECIPE = "tiny"
    settings.RETRAIN_RECIPE_OVERRIDES = ""
    plain = predictor_settings()
    assert "matmul" not in plain  # bf16 fingerprints stay as they were before the setting existed
    assert make_predictor(base_model=str(tiny_base), adapter_dir=None, predictor=plain).matmul == "bf16"

    settings.RETRAIN_RECIPE_OVERRIDES = '{"predict": {"matmul": "fp8"}}'
    fp8 = predictor_settings()
    assert fp8 == {**plain, "matmul": "fp8"}
    assert make_predictor(base_model=str(tiny_base), adapter_dir=None, predictor=fp8).matmul == "fp8"

    # Dense weights: scored apart only when the recipe says 'on' ('auto' depends on the GPU's free memory).
    assert "dense_weights" not in plain
    assert not make_predictor(base_model=str(tiny_base), adapter_dir=None, predictor=plain).dense
    settings.RETRAIN_RECIPE_OVERRIDES = '{"predict": {"dense_weights": "on"}}'
    dense = predictor_settings()
    assert dense == {**plain, "dense_weights": "on"}
    assert make_predictor(base_model=str(tiny_base), adapter_dir=None, predictor=dense).dense


@pytest.mark.django_db
def test_a_replay_share_draws_on_the_seed_set_v1_was_trained_on(
    labelled: int, reviewer: Any, settings: Any
) -> None:
    import json
    from pathlib import Path

    from training import paths

    _seed_label()
    settings.RETRAIN_FROM = "champion"  # the replay share is that mode's; from the base every label is in
    settings.RETRAIN_REPLAY_SHARE = 0.5
    batch = batch_create_from_resolved(min_size=1)
    RetrainBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.APPROVED, reviewed_at=timezone.now())
    run = TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model=_base())
    dataset = dataset_build(run_id=run.pk)
    assert dataset is not None
    rows = [json.loads(line) for line in Path(paths.resolve(dataset.path)).read_text().splitlines()]
    assert any("A seeded lamp" in json.dumps(row) for row in rows)  # the seed label is replayed
    assert list(dataset.replay_batches.all()) == []  # no earlier batch: the seed set is not one
    seed_rows = dataset.manifest["seed_set"]["rows"]  # named in the lineage, as many as were drawn
    assert seed_rows == sum("A seeded lamp" in json.dumps(row) for row in rows) == 1


@pytest.mark.django_db
def test_a_candidate_from_the_base_learns_every_approved_label_so_far(
    labelled: int, reviewer: Any, settings: Any
) -> None:
    """RETRAIN_FROM=base: the seed set, every earlier approved batch (no rejected one), the new batch."""
    from pathlib import Path

    from training import paths

    seeded = _seed_label()
    settings.RETRAIN_FROM = "base"
    settings.RETRAIN_REPLAY_SHARE = 0.0
    first = batch_create_from_resolved(min_size=1)
    items = list(BatchItem.objects.filter(batch=first).order_by("id").select_related("product"))
    rejected = RetrainBatch.objects.create(
        content_sha256="e" * 64, status=BatchStatus.REJECTED, reviewed_at=timezone.now(), reason="spam"
    )
    new = RetrainBatch.objects.create(
        content_sha256="f" * 64, status=BatchStatus.APPROVED, reviewed_at=timezone.now()
    )
    BatchItem.objects.filter(pk__in=[i.pk for i in items[20:30]]).update(batch=rejected)
    BatchItem.objects.filter(pk__in=[i.pk for i in items[30:]]).update(batch=new)
    RetrainBatch.objects.filter(pk=first.pk).update(status=BatchStatus.APPROVED, reviewed_at=timezone.now())
    run = TrainingRun.objects.create(batch=new, recipe_name="tiny", base_model=_base())
    dataset = dataset_build(run_id=run.pk)
    assert dataset is not None
    text = Path(paths.resolve(dataset.path)).read_text()
    wanted = [i.product for i in items[:20] + items[30:]] + [seeded]
    assert dataset.rows == len(wanted) == 20 + (labelled - 30) + 1
    assert all(p.text[:40] in text for p in wanted)
    assert not any(i.product.text[:40] in text for i in items[20:30])  # the rejected batch stays out
    assert [b.pk for b in dataset.replay_batches.all()] == [first.pk]
    assert dataset.manifest["seed_set"] == {"name": "demo-seed-labels.jsonl", "rows": 1}  # lineage names it
    run.refresh_from_db()
    assert "from the base" in run.logs
