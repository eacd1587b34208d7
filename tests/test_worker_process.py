from __future__ import annotations

import pytest

from tests.worker_process import celery_worker, wait_for
from webapp.models import Heartbeat
from workers.system import heartbeat


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_task_in_a_real_worker_process_that_writes_to_the_database() -> None:
    with celery_worker(queues="default") as proc:
        heartbeat.delay(source="integration-test")
        beat = wait_for(
            lambda: Heartbeat.objects.filter(source="integration-test").first(),
            timeout=90,
            what="the worker to record a heartbeat",
        )
        assert proc.poll() is None, "the worker process died"
    assert beat.at is not None
