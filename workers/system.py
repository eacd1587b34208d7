"""Housekeeping tasks.

Policy: ``heartbeat`` is idempotent (an upsert) and short, so it is late-acked and may be redelivered.
"""

from __future__ import annotations

from celery import shared_task

from webapp.services import heartbeat_record


@shared_task(
    name="workers.system.heartbeat",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=20,
    time_limit=30,
)
def heartbeat(source: str = "worker") -> str:
    return heartbeat_record(source=source).at.isoformat()
