"""A real Celery worker process for integration tests, attached to the test database and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
LOG = "test-worker.log"


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@contextmanager
def celery_worker(
    *,
    queues: str = "default,train",
    extra_env: dict[str, str] | None = None,
    log_name: str = LOG,
    beat: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``celery worker`` on the test database; stop it (and its children) on exit.

    Use with ``pytest.mark.django_db(transaction=True)`` so that the worker sees committed rows. Two
    workers at once need two ``log_name``s (the log lies in the test's data dir; ``wait_for`` shows its
    tail, and every ``test-worker*.log``'s when there are several).
    ``beat=True`` embeds the beat scheduler (``-B``), so the periodic jobs (recovery) run too.
    """
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "webapp.settings_test",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PRICELOOP_DATA_DIR": str(settings.DATA_DIR),
            "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log = open(settings.DATA_DIR / log_name, "wb")  # noqa: SIM115 - closed below
    schedule = settings.DATA_DIR / f"test-beat-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webapp",
            "worker",
            "-Q",
            queues,
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
            *(["-B", "-s", str(schedule)] if beat else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail with the worker log when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    logs = "".join(
        f"\n--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(Path(settings.DATA_DIR).glob("test-worker*.log"))
    )
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; worker log tail:{logs}")
