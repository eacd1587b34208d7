"""Queues by resource: every task that loads a model goes to the GPU queue, the rest to the CPU queue."""

from __future__ import annotations

import pytest

from webapp.celery import app


def _queue(task_name: str) -> str:
    route = app.amqp.router.route({}, task_name)
    return str(route["queue"].name)


@pytest.mark.parametrize(
    "task_name",
    [
        "workers.training.train_run",
        "workers.pipeline.evaluate_run",
        "workers.pipeline.guess_products",
        "workers.pipeline.guess_new_products",
    ],
)
def test_it_sends_what_loads_a_model_to_the_gpu_queue(task_name: str) -> None:
    assert _queue(task_name) == "train"


@pytest.mark.parametrize(
    "task_name",
    ["workers.pipeline.build_dataset", "workers.pipeline.batch_resolved_labels", "workers.system.heartbeat"],
)
def test_it_keeps_cpu_work_on_the_default_queue(task_name: str) -> None:
    assert _queue(task_name) == "default"


def test_the_two_queues_do_not_share_a_routing_key() -> None:
    keys = {q.name: q.routing_key for q in app.conf.task_queues}
    assert keys == {"default": "default", "train": "train"}
