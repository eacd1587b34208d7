from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from webapp.models import Heartbeat
from webapp.services import heartbeat_record


@pytest.mark.django_db
def test_it_reports_database_and_broker_ok() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_it_returns_503_when_the_broker_is_unreachable(settings, caplog) -> None:  # type: ignore[no-untyped-def]
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/healthz")
    assert response.status_code == 503
    # The state only: no error text, host or port for an anonymous caller; the log has the error.
    assert response.json()["broker"] == {"ok": False, "state": "unreachable", "url_scheme": "redis"}
    assert "127.0.0.1" not in response.content.decode()
    assert "Error" not in response.content.decode()
    assert "healthz: the broker is unreachable" in caplog.text
    assert "127.0.0.1:1" in caplog.text or "Connection refused" in caplog.text


@pytest.mark.django_db
def test_it_shows_whether_the_worker_heartbeat_is_fresh() -> None:
    assert Client().get("/healthz").json()["worker"] == {"state": "unknown", "last_heartbeat": None}

    beat = heartbeat_record(source="worker")
    assert Client().get("/healthz").json()["worker"]["state"] == "ok"

    Heartbeat.objects.filter(pk=beat.pk).update(at=timezone.now() - timedelta(minutes=10))
    worker = Client().get("/healthz").json()["worker"]
    assert worker["state"] == "stale"
    assert worker["age_s"] >= 600


@pytest.mark.django_db
def test_it_shows_the_training_worker_apart_from_the_cpu_worker() -> None:
    from training.models import RetrainBatch, RunStatus, TrainingRun
    from webapp.celery import BEAT_SCHEDULE

    # Beat sends a heartbeat through the `train` queue too: only a training worker takes it.
    assert BEAT_SCHEDULE["heartbeat-train"]["options"]["queue"] == "train"
    heartbeat_record(source="worker")  # the CPU worker is alive; no training worker ever answered
    body = Client().get("/healthz").json()
    assert body["worker"]["state"] == "ok"
    assert body["train_worker"] == {"state": "unknown", "last_heartbeat": None}

    beat = heartbeat_record(source="train-worker")
    assert Client().get("/healthz").json()["train_worker"]["state"] == "ok"
    Heartbeat.objects.filter(pk=beat.pk).update(at=timezone.now() - timedelta(minutes=10))
    assert Client().get("/healthz").json()["train_worker"]["state"] == "stale"  # killed

    # Busy training (its heartbeats wait in its queue): the run's lease, renewed by it, shows it alive.
    batch = RetrainBatch.objects.create(content_sha256="0" * 64)
    TrainingRun.objects.create(
        batch=batch, recipe_name="tiny", base_model="b", status=RunStatus.RUNNING, heartbeat=timezone.now()
    )
    assert Client().get("/healthz").json()["train_worker"]["state"] == "ok"


@pytest.mark.django_db
def test_it_serves_the_login_page() -> None:
    response = Client().get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
