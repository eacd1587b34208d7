"""The retraining loop through its services, in-process: bootstrap v1, label, batch, approve,
dataset, train, gate. (The same loop with a real worker process is in test_integration.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import Guess, Split
from tests.training.conftest import WEAK_V1, import_catalogue, label_everything
from training.models import (
    AuditEvent,
    BatchStatus,
    ModelVersion,
    RunStage,
    RunStatus,
    VersionStatus,
)
from training.services.batches import batch_approve, batch_create_from_resolved
from training.services.bootstrap import version_bootstrap_v1
from training.services.guesses import champion_guess_products
from training.services.registry import run_evaluate_and_gate
from training.services.runs import dataset_build, run_train

pytestmark = pytest.mark.slow


@pytest.mark.django_db
def test_it_promotes_a_better_candidate_and_rejects_a_worse_one(
    pipeline_settings: Any, annotator: Any, reviewer: Any
) -> None:
    import_catalogue()
    v1 = version_bootstrap_v1(max_items=30, overrides=WEAK_V1)
    assert v1.status == VersionStatus.CHAMPION
    assert v1.number == 1
    assert champion_guess_products() > 0
    assert Guess.objects.filter(model_version=v1, product__split=Split.TEST).count() == 0

    assert label_everything(annotator, price_of=lambda p: p.price) > 0
    batch = batch_create_from_resolved()
    assert batch.status == BatchStatus.PENDING_REVIEW
    assert batch.size > 0
    run = batch_approve(reviewer=reviewer, batch_id=batch.pk)
    dataset_build(run_id=run.pk)
    assert run_train(run_id=run.pk) == "trained"
    decision = run_evaluate_and_gate(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.stage == RunStage.DONE
    assert run.points.exists()
    print("gate v2", decision)
    v2 = run.candidate
    v2.refresh_from_db()
    assert decision is not None
    assert decision["promote"], decision
    assert v2.status == VersionStatus.CHAMPION
    assert ModelVersion.objects.filter(status=VersionStatus.CHAMPION).count() == 1
    assert AuditEvent.objects.filter(action="promote", version=v2).exists()
