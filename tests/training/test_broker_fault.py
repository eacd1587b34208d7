"""Redis goes down during an approval: the API answers 503 JSON and keeps the approval; once Redis is
back, the recovery beat sends the run's first step and the run completes, with no human action.

Real parts: PostgreSQL (or SQLite) test database, a redis-server this test starts on a free port of
its own (and stops and starts again), and a Celery worker process with its embedded beat (``-B``).
Runs only where ``redis-server`` is installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import client_for
from tests.training.conftest import FAST, NO_GOLD
from tests.worker_process import celery_worker, wait_for
from training.engine.model_io import folder_manifest_sha256
from training.models import ModelVersion, RetrainBatch, RunStatus, TrainingRun
from webapp.celery import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server (no persistence: a restart loses every message, the harder case)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(_free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def this_process_publishes_to(url: str) -> Iterator[None]:
    """Point this (the web) process's Celery app at ``url``: fresh connection and producer pools.

    ``broker_write_url``: Celery reads ``broker_url`` from the environment first, which the test run sets.
    """

    def reset(to: str | None) -> None:
        app.conf.broker_write_url = to
        app._pool = None  # type: ignore[attr-defined]  # the pools are keyed by connection: new ones
        app.amqp._producer_pool = None

    reset(url)
    try:
        yield
    finally:
        reset(None)


@pytest.mark.django_db(transaction=True)
def test_it_starts_an_approved_run_by_itself_once_redis_is_back(
    labelled_batch: RetrainBatch, reviewer: Any, tmp_path: Path
) -> None:
    env = {
        "BASE_MODEL": settings.BASE_MODEL,
        "RETRAIN_RECIPE": "tiny",
        "RETRAIN_RECIPE_OVERRIDES": json.dumps(FAST),
        "GATE_MIN_DELTA": "0",
        "GATE_ALPHA": "0.2",
        "RUN_RECOVER_EVERY_S": "1",  # the beat looks every second (30 s in production)
        "OMP_NUM_THREADS": "1",
    }
    with redis_server(tmp_path) as redis, this_process_publishes_to(redis.url):
        env["CELERY_BROKER_URL"] = redis.url
        with celery_worker(extra_env=env, beat=True):
            log = settings.DATA_DIR / "test-worker.log"
            # Connected and consuming before the outage, so it has to notice the loss and reconnect.
            wait_for(lambda: " ready." in log.read_text(errors="replace"), timeout=120, what="worker ready")
            redis.stop()
            response = client_for(reviewer).post(
                f"/api/v1/batches/{labelled_batch.pk}/approve", NO_GOLD, format="json"
            )

            assert response.status_code == 503
            error = response.json()["error"]
            assert error["code"] == "broker_unavailable"
            run = TrainingRun.objects.get(batch=labelled_batch)
            message = error["message"]
            assert f"run {run.pk} is recorded, but the task queue (broker) is unreachable" in message
            assert "the run starts by itself once it is back" in message
            assert str(redis.port) not in message  # the driver's text (host, port) stays in the log
            assert run.status == RunStatus.QUEUED
            labelled_batch.refresh_from_db()
            assert labelled_batch.status == "approved"

            time.sleep(3)  # the worker and its beat notice the outage
            redis.start()
            back = time.monotonic()
            wait_for(
                lambda: TrainingRun.objects.filter(pk=run.pk).exclude(status=RunStatus.QUEUED).exists(),
                timeout=120,
                what="the run to start after Redis came back",
            )
            started = time.monotonic() - back
            done = wait_for(
                lambda: TrainingRun.objects.filter(
                    pk=run.pk, status__in=[RunStatus.SUCCEEDED, RunStatus.FAILED]
                ).first(),
                timeout=420,
                what="the run to finish",
            )
            finished = time.monotonic() - back
    print(f"\nRedis back -> run started: {started:.1f} s; -> run {done.status}: {finished:.1f} s")
    assert done.status == RunStatus.SUCCEEDED, done.error
    version = ModelVersion.objects.get(pk=done.candidate_id)
    # Lineage names the local base by its folder name and its files' manifest sha256, never its path.
    base = Path(settings.BASE_MODEL)
    exact = {"model": base.name, "revision": f"sha256:{folder_manifest_sha256(base)}"}
    assert {"model": version.manifest["base_model"], "revision": version.manifest["base_revision"]} == exact
    detail = client_for(reviewer).get(f"/api/v1/versions/{version.number}").json()
    assert detail["lineage"]["base"] == exact
    assert (detail["base_model"], detail["base_revision"]) == (exact["model"], exact["revision"])
    assert str(base.parent) not in json.dumps(detail)
