"""The embedded broker: kombu's filesystem transport, with every file written whole or not at all.

Settings select it (``CELERY_BROKER_TRANSPORT``) whenever ``CELERY_BROKER_URL`` is ``filesystem://``.

Why not kombu's own class as it is (kombu 5.7.0, the latest): its writers open the final file name
first and fill it afterwards, and its readers do not wait for them.

- A message: ``_put`` creates ``<stamp>_<uuid>.<queue>.msg`` empty, then locks and writes it. The
  worker's ``_get`` lists the folder, renames the file away and reads it without taking the lock, so
  it can read a message that is still empty or half written. ``json.loads`` then raises
  ``JSONDecodeError`` inside the worker's consumer, which Celery reports as "Unrecoverable error" and
  the worker exits (the message is lost too). This is what stopped the demo: the worker polls the
  folder every second while beat, the web process and the demo command publish.
- An exchange table (``control/<exchange>.exchange``): the first ``_queue_bind`` creates the file
  empty and only then locks and writes it, so another process that binds or publishes at that moment
  (the worker declaring its queues while beat or the demo command publishes, on a fresh data dir)
  reads an empty table, with the same ``JSONDecodeError``.

Here each file is written under a temporary name that no reader matches (a leading dot, a ``.tmp``
suffix), flushed to disk, and renamed into place: a rename is atomic on one filesystem, so a reader
sees the whole file or no file. Exchange-table updates (read, change, write) are serialized with a lock
on a separate ``.lock`` file that is never replaced, since a lock on the table file itself would be
lost when the file is renamed over. Reading a table needs no lock any more. Production runs Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from training.engine.files import write_atomically


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic message and exchange-table writes (see the module doc)."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name is kombu's own: readers match "<stamp>_<uuid>.<queue>.msg" and take the oldest stamp.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        path = Path(self.data_folder_out) / name
        try:
            write_atomically(path, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {str(path)!r} to directory") from exc

    @contextmanager
    def _table_update(self, exchange: str) -> Iterator[Path]:
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        try:
            lock_file = open(file.with_name(file.name + ".lock"), "ab")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        try:
            filesystem.lock(lock_file, filesystem.LOCK_EX)
            yield file
        finally:
            filesystem.unlock(lock_file)
            lock_file.close()

    def _write_table(self, file: Path, table: list[filesystem.exchange_queue_t]) -> None:
        try:
            write_atomically(file, str_to_bytes(dumps(table)))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_update(exchange) as file:
            table = self.get_table(exchange)
            if binding not in table:
                self._write_table(file, [binding, *table])

    def _delete(
        self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any
    ) -> None:
        # kombu's virtual channel purges the queue; its filesystem channel then rewrites the table in
        # place, which this class replaces with a locked, atomic rewrite.
        super(filesystem.Channel, self)._delete(queue, exchange, routing_key, pattern, *args, **kwargs)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_update(exchange) as file:
            table = self.get_table(exchange)
            if binding in table:
                self._write_table(file, [entry for entry in table if entry != binding])


class Transport(filesystem.Transport):
    Channel = Channel
