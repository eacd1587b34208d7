"""Recovery without a shell: the beat job sends every run whose step has no live task, retries runs
that lost their worker a bounded number of times, and a reviewer can retry a failed run (page, API).

The broker send is the pipeline's one public seam (``pipeline.send``); the broker outage itself, with a
real redis-server and worker, is in test_broker_fault.py.
"""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import client_for
from tests.training.conftest import NO_GOLD
from training import pipeline
from training.exceptions import BrokerUnavailable
from training.models import (
    AuditAction,
    AuditEvent,
    RetrainBatch,
    RunStage,
    RunStatus,
    TrainingDataset,
    TrainingRun,
)
from training.services.batches import batch_approve
from training.services.recovery import runs_recover

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any] | None]]:
    """Every task the pipeline sends (task name, args), instead of a broker."""
    calls: list[tuple[str, list[Any] | None]] = []

    def send(step: pipeline.Step, *, args: Any = None, kwargs: Any = None) -> str:
        calls.append((step.task, args))
        return f"task-{len(calls)}"

    monkeypatch.setattr(pipeline, "send", send)
    return calls


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def send(step: pipeline.Step, **_: Any) -> str:
        raise BrokerUnavailable("the task queue (broker) is unreachable")

    monkeypatch.setattr(pipeline, "send", send)


def _run(**fields: Any) -> TrainingRun:
    batch = RetrainBatch.objects.create(content_sha256=f"{RetrainBatch.objects.count():064d}")
    return TrainingRun.objects.create(batch=batch, recipe_name="tiny", base_model="b", **fields)


def test_it_keeps_workers_out_of_the_services() -> None:
    """training/services/ sends tasks through training/pipeline.py by name; it imports nothing of workers/."""
    offenders = []
    for path in sorted((ROOT / "training" / "services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n == "workers" or n.startswith("workers.")]
    assert offenders == []


def test_it_names_only_tasks_the_workers_register_on_the_queues_celery_routes_them_to() -> None:
    from webapp.celery import app

    app.loader.import_default_modules()
    for step in (pipeline.DATASET, pipeline.TRAIN, pipeline.EVALUATE, pipeline.GUESS):
        assert step.task in app.tasks
        route = app.amqp.router.route({}, step.task)
        assert route["queue"].name == step.queue


@pytest.mark.django_db
def test_it_sends_a_queued_run_whose_send_failed_and_leaves_a_recently_sent_one(sent: Any) -> None:
    lost = _run(status=RunStatus.QUEUED)  # approved while the broker was down: no task was ever sent
    recent = _run(status=RunStatus.QUEUED, enqueued_at=timezone.now())
    stuck = _run(
        status=RunStatus.RUNNING,
        stage=RunStage.TRAIN,
        enqueued_at=timezone.now() - timedelta(hours=2),  # its message expired unstarted
    )
    _run(status=RunStatus.FAILED)

    assert runs_recover().resent == [lost.pk, stuck.pk]

    assert sent == [
        ("workers.pipeline.build_dataset", [lost.pk]),
        ("workers.training.train_run", [stuck.pk]),
    ]
    lost.refresh_from_db()
    assert lost.celery_task_id == "task-1"
    assert lost.enqueued_at is not None
    assert runs_recover().resent == []  # sent now: not again before RUN_RESEND_AFTER_S
    recent.refresh_from_db()
    assert recent.celery_task_id == ""


@pytest.mark.django_db
def test_it_retries_a_run_that_lost_its_worker_then_fails_it_after_the_limit(
    sent: Any, settings: Any
) -> None:
    settings.RUN_MAX_RETRIES = 2
    run = _run(status=RunStatus.RUNNING, stage=RunStage.TRAIN, heartbeat=timezone.now() - timedelta(hours=1))

    for attempt in (1, 2):
        outcome = runs_recover(stale_after_s=60)
        assert outcome.retried == [run.pk]
        assert outcome.resent == [run.pk]
        run.refresh_from_db()
        assert (run.status, run.stage, run.retries, run.heartbeat) == ("running", "train", attempt, None)
        assert f"retry {attempt} of 2 from its last checkpoint" in run.logs
        # The fresh worker dies too.
        TrainingRun.objects.filter(pk=run.pk).update(heartbeat=timezone.now() - timedelta(hours=1))

    outcome = runs_recover(stale_after_s=60)
    assert outcome.failed == [run.pk]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "no sign of life from its worker for 60 s (worker lost) after 2 automatic retries; "
        "a reviewer can retry it"
    )
    assert [task for task, _ in sent] == ["workers.training.train_run"] * 2


@pytest.mark.django_db
def test_it_lets_a_reviewer_retry_a_failed_run_from_its_checkpoint(
    sent: Any, reviewer: Any, annotator: Any, api_client_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = _run(status=RunStatus.FAILED, stage=RunStage.TRAIN, error="worker lost", retries=2)
    TrainingDataset.objects.create(run=run, kind="sft", path="datasets/x.jsonl", sha256="0" * 64, rows=3)

    assert client_for(annotator).post(f"/api/v1/runs/{run.pk}/retry").status_code == 403
    assert client_for(api_client_user).post(f"/api/v1/runs/{run.pk}/retry").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(reviewer).post(f"/api/v1/runs/{run.pk}/retry")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["stage"], body["error"], body["retries"]) == ("running", "train", "", 0)
    assert sent == [("workers.training.train_run", [run.pk])]
    event = AuditEvent.objects.get(action=AuditAction.RUN_RETRY, run=run)
    assert event.actor == reviewer
    assert event.message == "retried after: worker lost"

    again = client_for(reviewer).post(f"/api/v1/runs/{run.pk}/retry")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_state"


@pytest.mark.django_db
def test_it_shows_a_retry_button_on_a_failed_runs_page(
    sent: Any, reviewer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = _run(status=RunStatus.FAILED, error="dataset refused: base model 'x' cannot be downloaded")
    page = client_for(reviewer).get(f"/review/runs/{run.pk}/")
    assert b'id="run-retry"' in page.content

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(reviewer).post(f"/review/runs/{run.pk}/retry/", follow=True)

    assert b"retry started" in response.content
    run.refresh_from_db()
    assert (run.status, run.stage) == ("queued", "dataset")
    assert sent == [("workers.pipeline.build_dataset", [run.pk])]


@pytest.mark.django_db
def test_a_reviewer_retries_a_run_whose_worker_went_silent_without_waiting_for_recovery(
    sent: Any, reviewer: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # The worker was killed at step 20: the lease (120 s) lapsed long before recovery's 300 s.
    settings.RETRAIN_RUN_LEASE_S, settings.RETRAIN_RUN_STALE_S = 120, 300
    run = _run(
        status=RunStatus.RUNNING, stage=RunStage.TRAIN, heartbeat=timezone.now() - timedelta(seconds=200)
    )
    TrainingDataset.objects.create(run=run, kind="sft", path="datasets/x.jsonl", sha256="0" * 64, rows=3)
    live = _run(
        status=RunStatus.RUNNING, stage=RunStage.TRAIN, heartbeat=timezone.now() - timedelta(seconds=30)
    )
    progress = client_for(reviewer).get(f"/api/v1/runs/{run.pk}/progress").json()
    assert 200 <= progress["worker_silent_s"] < 210
    assert client_for(reviewer).get(f"/api/v1/runs/{live.pk}/progress").json()["worker_silent_s"] is None

    page = client_for(reviewer).get(f"/review/runs/{run.pk}/").content.decode()
    assert 'No sign of life from its worker for <span id="run-silent-s">20' in page
    assert "Recovery retries the run by itself once it has been silent for 300 s" in page
    assert 'id="run-retry"' in page
    assert 'id="run-retry"' not in client_for(reviewer).get(f"/review/runs/{live.pk}/").content.decode()

    refused = client_for(reviewer).post(f"/api/v1/runs/{live.pk}/retry")
    assert refused.status_code == 409
    assert "silent for over RETRAIN_RUN_LEASE_S (120 s)" in refused.json()["error"]["message"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(reviewer).post(f"/review/runs/{run.pk}/retry/", follow=True)
    assert b"retry started" in response.content
    run.refresh_from_db()
    assert (run.status, run.stage, run.heartbeat) == ("running", "train", None)
    assert sent == [("workers.training.train_run", [run.pk])]
    assert AuditEvent.objects.get(action=AuditAction.RUN_RETRY, run=run).numbers["from_status"] == "running"


@pytest.mark.django_db(transaction=True)
def test_a_step_keeps_its_lease_while_it_runs_without_progress_events() -> None:
    import time

    from training.services.run_log import lease_kept

    old = timezone.now() - timedelta(hours=1)
    run = _run(status=RunStatus.RUNNING, stage=RunStage.EVALUATE, heartbeat=old)
    with lease_kept(run.pk, every_s=0.05):
        time.sleep(0.5)  # scoring the test split: no progress event renews the lease
        run.refresh_from_db()
        assert run.heartbeat is not None
        assert run.heartbeat > timezone.now() - timedelta(seconds=5)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat=old)
    time.sleep(0.3)  # the step ended: nothing renews it any more
    run.refresh_from_db()
    assert run.heartbeat == old


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_json_when_the_broker_is_down_and_keeps_the_approval(
    labelled_batch: RetrainBatch, reviewer: Any, broker_down: None
) -> None:
    url = f"/api/v1/batches/{labelled_batch.pk}/approve"
    response = client_for(reviewer).post(url, NO_GOLD, format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    run = TrainingRun.objects.get(batch=labelled_batch)
    assert response.json() == {
        "error": {
            "code": "broker_unavailable",
            "message": f"batch {labelled_batch.pk} is approved and run {run.pk} is recorded, but the task "
            "queue (broker) is unreachable; the run starts by itself once it is back (GET /healthz shows "
            "each component's state).",
        }
    }
    labelled_batch.refresh_from_db()
    assert labelled_batch.status == "approved"
    assert (run.status, run.enqueued_at) == (RunStatus.QUEUED, None)  # the recovery job will send it


@pytest.mark.django_db(transaction=True)
def test_it_restarts_the_run_of_a_batch_approved_again_after_its_run_failed(
    labelled_batch: RetrainBatch, reviewer: Any, sent: Any
) -> None:
    run = batch_approve(reviewer=reviewer, batch_id=labelled_batch.pk, **NO_GOLD)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error="worker lost")

    again = batch_approve(reviewer=reviewer, batch_id=labelled_batch.pk)

    assert again.pk == run.pk
    assert (again.status, again.error) == (RunStatus.QUEUED, "")
    assert sent == [("workers.pipeline.build_dataset", [run.pk])] * 2
