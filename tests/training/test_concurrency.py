"""Races on PostgreSQL (real row locks and concurrent transactions; skipped on SQLite, which has a
single writer): two reviewers approving one batch, and champion swaps racing a reader."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from tests.training.factories import make_version
from training import pipeline
from training.models import ModelVersion, RetrainBatch, TrainingRun, VersionStatus
from training.services import batches as batch_services
from training.services.registry import version_rollback
from webapp.roles import Role
from webapp.services import user_create_with_role

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (row locks, concurrent writers)")


def _in_threads(functions: list[Callable[[], Any]]) -> list[Any]:
    """Run each function in its own thread (own database connection), released together."""
    barrier = threading.Barrier(len(functions))
    results: list[Any] = [None] * len(functions)

    def runner(index: int, function: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results[index] = function()
        except Exception as exc:  # the test inspects it
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=runner, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_it_creates_one_run_when_two_reviewers_approve_at_once(
    reviewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, _ = user_create_with_role(username="rex", role=Role.REVIEWER, password="x" * 12)
    enqueued: list[int] = []
    # Count the broker sends instead of making them (no worker runs here): exactly one is expected.
    monkeypatch.setattr(pipeline, "run_step_send", enqueued.append)
    for attempt in range(5):
        batch = RetrainBatch.objects.create(content_sha256=f"{attempt:064d}", size=0)
        results = _in_threads(
            [
                # An empty batch fails its quality checks: both approve with an override reason.
                lambda b=batch: batch_services.batch_approve(
                    reviewer=reviewer, batch_id=b.pk, override_reason="t"
                ),
                lambda b=batch: batch_services.batch_approve(
                    reviewer=other, batch_id=b.pk, override_reason="t"
                ),
            ]
        )
        assert all(isinstance(r, TrainingRun) for r in results), results
        assert results[0].pk == results[1].pk
        assert TrainingRun.objects.filter(batch=batch).count() == 1
    assert len(enqueued) == 5
    assert len(set(enqueued)) == 5


@pytest.mark.django_db(transaction=True)
def test_it_always_has_exactly_one_champion_while_promotions_race(
    reviewer: Any, settings: Any, tmp_path: Path
) -> None:
    settings.ARTIFACT_ROOT = tmp_path  # rollback verifies each version's files before the swap
    versions = [
        make_version(
            tmp_path, n, status=VersionStatus.CHAMPION if n == 1 else VersionStatus.ARCHIVED, evaluate=False
        )
        for n in range(1, 5)
    ]
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(ModelVersion.objects.filter(status=VersionStatus.CHAMPION).count())
        finally:
            connections.close_all()

    def promoter(targets: list[ModelVersion]) -> Callable[[], int]:
        def run() -> int:
            done = 0
            for i in range(40):
                version_rollback(reviewer=reviewer, version_id=targets[i % len(targets)].pk)
                done += 1
            return done

        return run

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        results = _in_threads([promoter(versions[:2]), promoter(versions[2:]), promoter(versions[::-1])])
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert results == [40, 40, 40], results
    assert len(seen) > 100, "the reader barely ran: the race proves little"
    assert set(seen) == {1}, f"champion counts seen: {sorted(set(seen))}"
    assert ModelVersion.objects.filter(status=VersionStatus.CHAMPION).count() == 1
