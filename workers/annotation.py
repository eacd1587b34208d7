"""Annotation housekeeping tasks.

Policy: ``annotation_leases_expire`` is idempotent (each lease's ``live → expired`` is a compare-and-set
and concurrent runs take disjoint rows), so it is late-acked and may be redelivered or overlap with
another beat tick harmlessly. Short time limits: it handles at most a few thousand rows per run.
"""

from __future__ import annotations

from celery import shared_task

from annotation.services import leases_expire


@shared_task(
    name="workers.annotation.leases_expire",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=50,
    time_limit=60,
)
def annotation_leases_expire() -> int:
    """Return expired leases to the queue; the number returned."""
    return leases_expire()
