"""A run's log lines and its failure: the one place a run is marked failed, with its cause.

Clients see one line (``run.error``: what failed and, where the user can act, the fix); the full
trace goes to the server log. Every step (dataset, train, evaluate, the recovery job) fails a run here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from training.models import RUN_FINAL_STATES, AuditAction, AuditEvent, RunStatus, TrainingRun

logger = logging.getLogger("training.runs")

_LOG_LIMIT = 20_000  # characters of log kept on a run
_ERROR_LIMIT = 1000  # characters of the one-line cause shown to clients


def append_log(run_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    run = TrainingRun.objects.only("logs").get(pk=run_id)
    logs = (run.logs + f"[{stamp}] {line}\n")[-_LOG_LIMIT:]
    TrainingRun.objects.filter(pk=run_id).update(logs=logs)


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, whitespace collapsed, capped for clients."""
    for line in (text or "").splitlines():
        if line.strip():
            return " ".join(line.split())[:_ERROR_LIMIT]
    return ""


def run_fail(*, run_id: int, error: str, exc_info: BaseException | None = None) -> bool:
    """Mark a run failed unless it already ended; returns whether this call ended it.

    ``error`` is the cause in one line (kept on the run, in its log and on the audit row); with
    ``exc_info`` the full traceback goes to the server log.
    """
    cause = one_line(error)
    with transaction.atomic():
        ended = (
            TrainingRun.objects.filter(pk=run_id)
            .exclude(status__in=RUN_FINAL_STATES)
            .update(status=RunStatus.FAILED, error=cause, finished=timezone.now())
        )
        if ended:
            AuditEvent.objects.create(action=AuditAction.RUN_FAIL, run_id=run_id, message=cause)
    if ended:
        append_log(run_id, f"failed: {cause}")
        logger.error("run %s failed: %s", run_id, cause, exc_info=exc_info)
    return bool(ended)


def failure_cause(exc: BaseException) -> str:
    """One line naming what failed, with the fix where the user has one."""
    from training.engine.model_io import BaseModelError

    if isinstance(exc, BaseModelError):
        return str(exc)
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "out of memory" in text.lower():
        first = text.splitlines()[0] if text else name
        return f"out of memory ({first}); lower train.batch_size or max_length, or quantize to 4 bits."
    if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
        return f"disk full ({exc}); free space under ARTIFACT_ROOT."
    if name == "SoftTimeLimitExceeded":
        limit = settings.TRAIN_TIME_LIMIT_S
        return f"time limit reached (TRAIN_TIME_LIMIT_S={limit} s); raise it or train fewer steps."
    return f"{name}: {text}"


@contextmanager
def lease_kept(run_id: int, *, every_s: float | None = None) -> Iterator[None]:
    """Renew the run's lease (``heartbeat``) from a background thread while a step runs.

    Progress events renew it too, but loading a base, building a dataset or scoring the test split can
    go minutes without one. With this, a lease older than ``RETRAIN_RUN_LEASE_S`` means the worker is
    gone (killed, its host down), so recovery and a reviewer's retry may act on it without racing a
    live worker. The thread uses its own database connection and closes it when the step ends.
    """
    every = every_s if every_s is not None else max(1.0, float(settings.RETRAIN_RUN_LEASE_S) / 4)
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(every):
                try:
                    TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
                        heartbeat=timezone.now()
                    )
                except Exception:  # a missed renewal is retried; the step goes on
                    logger.warning("run %s: could not renew its lease", run_id, exc_info=True)
        finally:
            connections.close_all()  # this thread's connections only (they are per thread)

    thread = threading.Thread(target=renew, name=f"run-{run_id}-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 5)
