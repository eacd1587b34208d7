"""A reviewer downloads exports from the pages, in a real browser: no shell, no API token.

Run: ``.venv/bin/python -m pytest tests/e2e/test_exports.py`` (needs /usr/bin/chromium; see conftest.py).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.contrib.auth.models import User

from annotation.models import Guess
from tests.annotation.queue_helpers import lease, make_tasks, submit
from training.models import ModelVersion
from training.services.batches import batch_create_from_resolved

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _download(page: Any, region: Any, name: str) -> bytes:
    with page.expect_download() as info:
        region.get_by_role("link", name=name, exact=True).first.click()
    return Path(info.value.path()).read_bytes()


def test_a_reviewer_downloads_a_batch_and_the_labels_from_the_pages(
    page: Any, login_as: Any, reviewer: User, annotator: User
) -> None:
    tasks = make_tasks(2)
    for number, task in zip((5, 6), tasks, strict=True):
        version = ModelVersion.objects.create(number=number, base_model="tiny")
        Guess.objects.filter(id=task.guess_id).update(model_version=version, source="model")
    for _ in tasks:
        submit(annotator, lease(annotator), "correct", "42")
    batch = batch_create_from_resolved(min_size=1)
    expected = {t.product.external_id: str(n) for n, t in zip((5, 6), tasks, strict=True)}
    login_as(page.context, reviewer)

    page.goto(f"/review/batches/{batch.pk}/")
    rows = list(
        csv.DictReader(io.StringIO(_download(page, page.locator("#batch-downloads"), "CSV").decode()))
    )
    assert {r["product_id"]: r["guess_model_version"] for r in rows} == expected
    assert {r["price"] for r in rows} == {"42.00"}

    page.goto("/review/")
    table = pq.read_table(io.BytesIO(_download(page, page.locator("#exports"), "Parquet")))
    assert {r["product_id"]: r["guess_model_version"] for r in table.to_pylist()} == {
        k: int(v) for k, v in expected.items()
    }
