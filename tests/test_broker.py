"""The embedded broker (webapp/broker.py) under concurrent processes, the way web, worker and beat use it.

kombu's own filesystem transport fails both tests: a consumer reads messages that are still being
written (JSONDecodeError), and processes binding one exchange at once read an empty table or lose
each other's bindings.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from kombu import Connection, Exchange, Producer, Queue

TRANSPORT = "webapp.broker:Transport"
PRODUCERS = 3
MESSAGES_EACH = 600
BINDERS = 4
BIND_ROUNDS = 40

_fork = multiprocessing.get_context("fork")


def _options(root: Path) -> dict[str, Any]:
    for sub in ("queue", "processed", "control"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "control_folder": str(root / "control"),
        "processed_folder": str(root / "processed"),
        "store_processed": False,
    }


def _connection(root: Path) -> Connection:
    return Connection("filesystem://", transport=TRANSPORT, transport_options=_options(root))


def _produce(root: Path, producer: int, consumer_ready: Any) -> None:
    queue = Queue("default", Exchange("default"), routing_key="default")
    consumer_ready.wait(timeout=60)
    with _connection(root) as conn:
        publish = Producer(conn.default_channel).publish
        for i in range(MESSAGES_EACH):
            body = {"producer": producer, "i": i, "padding": "x" * 2000}
            publish(body, exchange=queue.exchange, routing_key="default", declare=[queue], serializer="json")
            time.sleep(0.001)  # no backlog: the consumer looks at each message as it is being written


def _consume(root: Path, expected: int, ready: Any, results: Any) -> None:
    received, errors = 0, []
    with _connection(root) as conn:
        channel = conn.default_channel
        Queue("default", Exchange("default"), routing_key="default")(channel).declare()
        ready.set()  # polling an empty queue while messages are written: the worker's situation
        for _ in range(expected * 200):  # a bound on empty polls, so that a lost message cannot hang the test
            try:
                message = channel.basic_get("default", no_ack=True)
            except ValueError as exc:  # JSONDecodeError: a file read before it was complete
                errors.append(repr(exc))
                continue
            if message is not None:
                received += 1
                if received == expected:
                    break
    results.put((received, errors))


def test_it_never_hands_the_worker_a_half_written_message(tmp_path: Path) -> None:
    expected = PRODUCERS * MESSAGES_EACH
    results, ready = _fork.Queue(), _fork.Event()
    consumer = _fork.Process(target=_consume, args=(tmp_path, expected, ready, results))
    consumer.start()
    producers = [_fork.Process(target=_produce, args=(tmp_path, n, ready)) for n in range(PRODUCERS)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(timeout=120)
        assert p.exitcode == 0

    received, errors = results.get(timeout=120)
    consumer.join(timeout=10)

    assert errors == []
    assert received == expected


def _bind(root: Path, queue_name: str, barrier: Any, results: Any) -> None:
    try:
        with _connection(root) as conn:
            channel = conn.default_channel
            barrier.wait(timeout=30)
            queue = Queue(queue_name, Exchange("shared"), routing_key=queue_name)
            Producer(channel).publish(
                {"from": queue_name}, exchange=queue.exchange, routing_key=queue_name, declare=[queue]
            )
        results.put(None)
    except Exception as exc:
        results.put(repr(exc))


def test_it_keeps_every_binding_when_processes_bind_one_exchange_at_once(tmp_path: Path) -> None:
    names = [f"q{n}" for n in range(BINDERS)]
    for round_ in range(BIND_ROUNDS):  # each round on a fresh folder, as on a demo's first start
        root = tmp_path / f"round-{round_}"
        barrier, results = _fork.Barrier(BINDERS), _fork.Queue()
        binders = [_fork.Process(target=_bind, args=(root, name, barrier, results)) for name in names]
        for p in binders:
            p.start()
        for p in binders:
            p.join(timeout=60)

        assert [results.get(timeout=10) for _ in binders] == [None] * BINDERS, f"round {round_}"
        with _connection(root) as conn:
            table = conn.default_channel.get_table("shared")
            assert sorted(queue for _, _, queue in table) == names, f"round {round_}"
            assert [conn.default_channel._size(name) for name in names] == [1] * BINDERS, f"round {round_}"
