"""Project-level pages: health, home (the dashboard shell)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.models import Heartbeat


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; the reason is reported
        return False, f"{type(exc).__name__}: {exc}"
    return True, "ok"


def _broker_ok() -> tuple[bool, str]:
    from kombu import Connection

    try:
        url, options = settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS
        with Connection(url, transport_options=options) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    return True, "ok"


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, 503 otherwise; the last worker heartbeat is shown."""
    db_ok, db_detail = _database_ok()
    broker_ok, broker_detail = _broker_ok()
    worker: dict[str, object] = {"last_heartbeat": None}
    if db_ok:
        beat = Heartbeat.objects.filter(source="worker").first()
        if beat is not None:
            worker = {
                "last_heartbeat": beat.at.isoformat(),
                "age_s": round((timezone.now() - beat.at).total_seconds(), 1),
            }
    healthy = db_ok and broker_ok
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": {"ok": db_ok, "detail": db_detail, "vendor": connection.vendor},
        "broker": {
            "ok": broker_ok,
            "detail": broker_detail,
            "url_scheme": settings.CELERY_BROKER_URL.split(":")[0],
        },
        "worker": worker,
    }
    return JsonResponse(body, status=200 if healthy else 503)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "webapp/home.html")
