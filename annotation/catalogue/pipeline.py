"""Parse and curate a large catalogue file in worker processes (pure Python, no Django).

Curation is the import's CPU cost (about as much as the database's work per row). Running it in worker
processes lets it overlap with the database writes of the main process, and spreads it over the
cores. Order is kept (rows come back in file order, so line numbers and "first occurrence wins" stay
right) and memory stays bounded: only a few batches are in flight at any time.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from decimal import Decimal
from itertools import islice
from typing import Any, BinaryIO, NamedTuple

import orjson

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
# Column order of a COPY line made by ``encode_for_copy``.
COPY_COLUMNS = ("external_id", "title", "text", "category", "price", "price_flag", "split", "source", "extra")
_COPY_UNESCAPE_RE = re.compile(r"\\[\\tnr]")
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


class EncodedRow(NamedTuple):
    """A curated row already in PostgreSQL ``COPY`` text format (``COPY_COLUMNS``, tab-separated).

    Workers send these instead of ``ProductRow`` objects, as plain tuples: a tuple of an int, a str and
    bytes crosses the process boundary about thirty times cheaper than a pickled dataclass, and the
    main process only has to write the bytes.
    """

    line: int
    external_id: str
    copy_line: bytes


def _copy_field(value: str) -> str:
    # str.replace per character, not str.translate: translate looks every character up in a dict
    # and cost more than all the curation of a row.
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    return value


def _extra_json(extra: dict[str, Any]) -> str:
    # orjson: several times faster than json. Its text differs only in spacing and number spelling
    # (the jsonb value is the same); what it refuses (integers beyond 64 bits) goes through json.
    try:
        return orjson.dumps(extra).decode("utf-8")
    except TypeError:
        return _JSON(extra)


def encode_for_copy(row: ProductRow) -> EncodedRow:
    return EncodedRow(row.line, row.external_id, _copy_line(row))


def _copy_line(row: ProductRow) -> bytes:
    # The four leading fields are joined and escaped as one str (four scans instead of sixteen): NUL,
    # which curated text never holds (the reader refuses it), stands in for the tab between them.
    head = "\0".join((row.external_id, row.title, row.text, row.category))
    if head.count("\0") == 3:
        head = _copy_field(head).replace("\0", "\t")
    else:
        head = "\t".join(_copy_field(field) for field in (row.external_id, row.title, row.text, row.category))
    price = "\\N" if row.price is None else str(row.price)
    extra = _copy_field(_extra_json(row.extra))
    line = f"{head}\t{price}\t{row.price_flag}\t{row.split}\t{_copy_field(row.source)}\t{extra}\n"
    return line.encode("utf-8")


def decode_copy_line(encoded: EncodedRow) -> ProductRow:
    """The ``ProductRow`` back from its COPY line (for the rare row-by-row retry after a failure)."""
    unescape = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
    fields = [
        _COPY_UNESCAPE_RE.sub(lambda match: unescape[match.group()], field)
        for field in encoded.copy_line.decode("utf-8").rstrip("\n").split("\t")
    ]
    values = dict(zip(COPY_COLUMNS, fields, strict=True))
    return ProductRow(
        line=encoded.line,
        external_id=values["external_id"],
        title=values["title"],
        text=values["text"],
        category=values["category"],
        price=None if values["price"] == "\\N" else Decimal(values["price"]),
        price_flag=values["price_flag"],
        split=values["split"],
        source=values["source"],
        extra=json.loads(values["extra"]),
    )


def _encoded(items: list[ProductRow | RowError]) -> list[tuple[int, str, bytes] | RowError]:
    # Plain tuples, not EncodedRow: a named tuple pickles through a Python-level __new__ per row.
    return [
        item if type(item) is RowError else (item.line, item.external_id, _copy_line(item))  # type: ignore[union-attr, arg-type]
        for item in items
    ]


def _received(batch: list[Any]) -> Iterator[EncodedRow | RowError]:
    new = tuple.__new__
    for item in batch:
        yield new(EncodedRow, item) if type(item) is tuple else item


def _curate_jsonl_encoded(
    first_line: int, lines: list[bytes], options: CurationSettings
) -> list[tuple[int, str, bytes] | RowError]:
    return _encoded(curate_jsonl_batch(first_line, lines, options))


def _curate_csv_encoded(
    items: list[tuple[int, dict[str, Any]] | RowError], options: CurationSettings
) -> list[tuple[int, str, bytes] | RowError]:
    return _encoded(curate_items(items, options, True))


def can_use_workers() -> bool:
    """Worker processes are not allowed everywhere: a daemonic process (a Celery prefork child)
    cannot have children."""
    return not multiprocessing.current_process().daemon


def read_products_parallel(
    stream: BinaryIO,
    fmt: Format,
    options: CurationSettings,
    *,
    workers: int,
    encode: bool = False,
    batch_lines: int = BATCH_LINES,
) -> Iterator[ProductRow | EncodedRow | RowError]:
    """Like ``reader.read_products``, with the parsing and curation done by ``workers`` processes.

    ``encode``: yield ``EncodedRow`` (for the PostgreSQL COPY writer) instead of ``ProductRow``.
    The caller's main module must be import-safe (``if __name__ == "__main__":``), as always with
    the spawn start method.
    """
    # spawn, not fork: the parent holds database connections and threads that a forked child must
    # not inherit.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[list[Any]]] = deque()
    limit = workers * BATCHES_IN_FLIGHT_PER_WORKER
    received = _received if encode else iter
    try:
        for submit_args in _batches(stream, fmt, options, batch_lines, encode):
            pending.append(pool.submit(*submit_args))
            if len(pending) >= limit:
                yield from received(pending.popleft().result())
        while pending:
            yield from received(pending.popleft().result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(
    stream: BinaryIO, fmt: Format, options: CurationSettings, batch_lines: int, encode: bool
) -> Iterator[tuple[Any, ...]]:
    if fmt == "jsonl":
        # Raw bytes go to the workers: decoding and JSON parsing are part of the work to spread.
        first = 1
        while lines := list(islice(stream, batch_lines)):
            if encode:
                yield _curate_jsonl_encoded, first, lines, options
            else:
                yield curate_jsonl_batch, first, lines, options
            first += len(lines)
    else:
        # CSV records may span lines, so the csv module reads them here; curation is spread.
        rows = read_csv(stream)
        while batch := list(islice(rows, batch_lines)):
            if encode:
                yield _curate_csv_encoded, batch, options
            else:
                yield curate_items, batch, options, True
