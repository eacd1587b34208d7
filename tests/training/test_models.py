"""Database-level guarantees of the retraining models (they hold whatever the services do)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from training.models import ModelVersion, RetrainBatch, TrainingRun, VersionStatus


@pytest.mark.django_db
def test_it_refuses_a_second_champion() -> None:
    ModelVersion.objects.create(number=1, base_model="b", status=VersionStatus.CHAMPION)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(number=2, base_model="b", status=VersionStatus.CHAMPION)
    assert ModelVersion.objects.filter(status=VersionStatus.CHAMPION).count() == 1


@pytest.mark.django_db
def test_it_refuses_a_second_run_for_one_batch() -> None:
    batch = RetrainBatch.objects.create(content_sha256="a" * 64, size=0)
    TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model="b")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model="b")
    assert TrainingRun.objects.filter(batch=batch).count() == 1


@pytest.mark.django_db
def test_it_refuses_a_reviewed_batch_without_a_review_time() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        RetrainBatch.objects.create(content_sha256="b" * 64, status="approved")
