"""Parse and curate a large catalogue file in worker processes (pure Python, no Django).

Curation is the import's CPU cost (about as much as the database's work per row). Running it in worker
processes lets it overlap with the database writes of the main process, and spreads it over the
cores. Order is kept (rows come back in file order, so line numbers and "first occurrence wins" stay
right) and memory stays bounded: only a few batches are in flight at any time.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any, BinaryIO

from annotation.catalogue.reader import (
    CurationSettings,
    Format,
    ProductRow,
    RowError,
    curate_items,
    curate_jsonl_batch,
    read_csv,
)

BATCH_LINES = 1_000
BATCHES_IN_FLIGHT_PER_WORKER = 3


def read_products_parallel(
    stream: BinaryIO, fmt: Format, options: CurationSettings, *, workers: int, batch_lines: int = BATCH_LINES
) -> Iterator[ProductRow | RowError]:
    """Like ``reader.read_products``, with the parsing and curation done by ``workers`` processes."""
    # spawn, not fork: the parent holds database connections and threads that a forked child must
    # not inherit.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[list[ProductRow | RowError]]] = deque()
    limit = workers * BATCHES_IN_FLIGHT_PER_WORKER
    try:
        for submit_args in _batches(stream, fmt, options, batch_lines):
            pending.append(pool.submit(*submit_args))
            if len(pending) >= limit:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(
    stream: BinaryIO, fmt: Format, options: CurationSettings, batch_lines: int
) -> Iterator[tuple[Any, ...]]:
    if fmt == "jsonl":
        # Raw bytes go to the workers: decoding and JSON parsing are part of the work to spread.
        first = 1
        while lines := list(islice(stream, batch_lines)):
            yield curate_jsonl_batch, first, lines, options
            first += len(lines)
    else:
        # CSV records may span lines, so the csv module reads them here; curation is spread.
        rows = read_csv(stream)
        while batch := list(islice(rows, batch_lines)):
            yield curate_items, batch, options, True
