"""Project-level pages: health, home (the dashboard shell)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.models import Heartbeat

logger = logging.getLogger(__name__)

# The worker's heartbeat runs every 60 s (webapp/celery.py): three missed beats and it counts as stale.
WORKER_STALE_AFTER_S = 180


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any failure means "unreachable"; the reason goes to the server log only
        logger.exception("healthz: the database is unreachable")
        return False
    return True


def _broker_ok() -> bool:
    from kombu import Connection

    try:
        url, options = settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS
        with Connection(url, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:  # as above: the client sees the state, the log the error
        logger.exception("healthz: the broker is unreachable")
        return False
    return True


def _last_beat(source: str) -> datetime | None:
    beat = Heartbeat.objects.filter(source=source).first()
    return beat.at if beat else None


def _last_train_sign() -> datetime | None:
    """A training worker runs one task at a time: while it trains, the heartbeats wait in its queue, but
    it renews its run's lease every quarter lease (run_log.lease_kept). Either proves it alive."""
    from training.models import RunStatus, TrainingRun

    lease = TrainingRun.objects.filter(status=RunStatus.RUNNING).aggregate(last=Max("heartbeat"))["last"]
    return max((t for t in (_last_beat("train-worker"), lease) if t is not None), default=None)


def _freshness(at: datetime | None) -> dict[str, object]:
    if at is None:
        return {"state": "unknown", "last_heartbeat": None}
    age_s = round((timezone.now() - at).total_seconds(), 1)
    return {
        "state": "ok" if age_s <= WORKER_STALE_AFTER_S else "stale",
        "last_heartbeat": at.isoformat(),
        "age_s": age_s,
    }


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, 503 otherwise; the worker's last heartbeat is shown.

    Anonymous: each component's state only (``ok``, ``unreachable``; the worker ``ok``, ``stale`` or
    ``unknown``), never error text, hosts or paths; the real errors are in the server log.
    """
    db_ok = _database_ok()
    broker_ok = _broker_ok()
    unknown = {"state": "unknown", "last_heartbeat": None}
    worker = _freshness(_last_beat("worker")) if db_ok else unknown
    train_worker = _freshness(_last_train_sign()) if db_ok else unknown
    healthy = db_ok and broker_ok
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": {"ok": db_ok, "state": "ok" if db_ok else "unreachable", "vendor": connection.vendor},
        "broker": {
            "ok": broker_ok,
            "state": "ok" if broker_ok else "unreachable",
            "url_scheme": settings.CELERY_BROKER_URL.split(":")[0],
        },
        "worker": worker,  # takes the `default` queue (imports, batches, datasets, housekeeping)
        "train_worker": train_worker,  # takes the `train` queue (training, evaluation, guessing)
    }
    return JsonResponse(body, status=200 if healthy else 503)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "webapp/home.html")
