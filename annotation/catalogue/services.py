"""Catalogue import: a JSONL/CSV file of products → ``Product`` rows.

Contract (DESIGN.md §3, §9):
- idempotent upsert by ``external_id``: importing the same file twice leaves the same rows (the second
  run reports them ``unchanged`` and does not touch them);
- the split is decided from the id's hash the first time a product is stored and never changes after,
  even if ``TEST_SPLIT_FRACTION`` does (``split`` is not among the updated columns);
- every bad row is reported with its line number and reason, the good rows are stored, and a bad row
  never reaches the database, so nothing already stored is changed by it;
- the file is streamed in chunks, so memory stays flat at any size. Duplicate ids across chunks are
  found through a temporary table, not an in-memory set that would grow with the file.

On PostgreSQL each chunk's new ids are ``COPY``'d straight into the table and its stored ids go through
``COPY`` into a temporary table and one ``INSERT … ON CONFLICT`` (several times faster than
``bulk_create``); other databases use ``bulk_create(update_conflicts=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, reset_queries, transaction

from annotation.catalogue.pipeline import (
    COPY_COLUMNS,
    EncodedRow,
    can_use_workers,
    decode_copy_line,
    encode_for_copy,
    read_products_parallel,
)
from annotation.catalogue.reader import (
    CurationSettings,
    Format,
    ProductRow,
    RowError,
    detect_format,
    read_products,
)
from annotation.models import Product

Method = Literal["auto", "copy", "orm"]
# Columns an import may overwrite. Not ``split`` (fixed once assigned), not ``created``.
UPDATE_FIELDS = ["title", "text", "category", "price", "price_flag", "source", "extra", "updated"]
COMPARED_FIELDS = ("title", "text", "category", "price", "price_flag", "source", "extra")
ORM_CHUNK_SIZE = 2_000
COPY_CHUNK_SIZE = 10_000
MAX_ERRORS_KEPT = 10_000
# Below this size, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 8 * 1024 * 1024


@dataclass
class ImportResult:
    """What an import did. ``errors`` holds the first ``MAX_ERRORS_KEPT`` bad rows; ``bad`` counts all."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def ok(self) -> bool:
        return self.bad == 0

    @property
    def summary(self) -> str:
        return (
            f"{self.imported} imported ({self.created} new, {self.updated} updated, "
            f"{self.unchanged} unchanged), {self.bad} bad"
        )


def products_import(
    *,
    path: Path,
    fmt: str | None = None,
    test_fraction: float | None = None,
    max_text_chars: int | None = None,
    source: str | None = None,
    method: Method = "auto",
    chunk_size: int | None = None,
    on_error: Callable[[RowError], None] | None = None,
    workers: int = 1,
) -> ImportResult:
    """Import the products of the file at ``path`` (format from ``fmt`` or the file extension).

    ``workers``: processes that parse and curate (``default_workers(path)`` suggests a number); more
    than one needs an import-safe main module, as always with multiprocessing's spawn.

    Raises ``CatalogueFormatError`` when the file as a whole cannot be read (unknown format, a CSV
    header without a required column); row problems are in the result and go to ``on_error`` as they
    are found, in line order.
    """
    file_format = detect_format(path, fmt)
    with path.open("rb") as stream:
        return products_import_stream(
            stream=stream,
            fmt=file_format,
            test_fraction=test_fraction,
            max_text_chars=max_text_chars,
            source=path.name if source is None else source,
            method=method,
            chunk_size=chunk_size,
            on_error=on_error,
            workers=workers,
        )


def default_workers(path: Path) -> int:
    """Worker processes worth starting for this file: one per CPU (up to 4) for big files."""
    return min(os.cpu_count() or 1, 4) if path.stat().st_size >= PARALLEL_MIN_BYTES else 1


def products_import_stream(
    *,
    stream: BinaryIO,
    fmt: Format,
    test_fraction: float | None = None,
    max_text_chars: int | None = None,
    source: str = "",
    method: Method = "auto",
    chunk_size: int | None = None,
    on_error: Callable[[RowError], None] | None = None,
    workers: int = 1,
) -> ImportResult:
    """Import products from a binary stream (a file, an upload). See ``products_import``."""
    fraction = settings.TEST_SPLIT_FRACTION if test_fraction is None else test_fraction
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"test fraction must be between 0 and 1, got {fraction}")
    if method == "auto":
        method = "copy" if connection.vendor == "postgresql" else "orm"
    if method == "copy" and connection.vendor != "postgresql":
        raise ValueError("the COPY import needs PostgreSQL; use method='orm'")
    options = CurationSettings(
        test_fraction=fraction,
        max_text_chars=max_text_chars or settings.CATALOGUE_MAX_TEXT_CHARS,
        default_source=source,
    )
    items: Iterable[ProductRow | EncodedRow | RowError]
    if workers > 1 and can_use_workers():
        items = read_products_parallel(stream, fmt, options, workers=workers, encode=method == "copy")
    else:
        items = read_products(
            stream,
            fmt,
            test_fraction=options.test_fraction,
            max_text_chars=options.max_text_chars,
            default_source=options.default_source,
        )
    writer: _Writer = _CopyWriter() if method == "copy" else _OrmWriter()
    size = chunk_size or (COPY_CHUNK_SIZE if method == "copy" else ORM_CHUNK_SIZE)
    return _Importer(writer=writer, chunk_size=size, on_error=on_error).run(items)


class _Importer:
    def __init__(
        self, *, writer: _Writer, chunk_size: int, on_error: Callable[[RowError], None] | None
    ) -> None:
        self.writer = writer
        self.chunk_size = chunk_size
        self.on_error = on_error
        self.result = ImportResult()
        self.seen = _SeenIds()

    def run(self, items: Iterable[ProductRow | EncodedRow | RowError]) -> ImportResult:
        self.seen.open()
        self.writer.open()
        try:
            chunk: dict[str, ProductRow | EncodedRow] = {}
            errors: list[RowError] = []
            for item in items:
                if isinstance(item, RowError):
                    errors.append(item)
                elif (first := chunk.get(item.external_id)) is not None:
                    errors.append(_duplicate(item, first.line))
                else:
                    chunk[item.external_id] = item
                # Bad rows count towards the chunk too: a file of nothing but bad rows stays bounded.
                if len(chunk) + len(errors) >= self.chunk_size:
                    self._flush(list(chunk.values()), errors)
                    chunk, errors = {}, []
            self._flush(list(chunk.values()), errors)
        finally:
            self.writer.close()
            self.seen.close()
        return self.result

    def _flush(self, rows: list[ProductRow | EncodedRow], errors: list[RowError]) -> None:
        rows, duplicates = self.seen.claim(rows)
        errors.extend(duplicates)
        if rows:
            try:
                with transaction.atomic():
                    created, updated = self.writer.write(rows)
                self.result.created += created
                self.result.updated += updated
                self.result.unchanged += len(rows) - created - updated
            except DatabaseError:
                # Validation should have caught everything the database refuses; if it did not, find
                # the culprit row by row rather than lose the whole chunk.
                errors.extend(self._write_one_by_one(rows))
        for error in sorted(errors, key=lambda error: error.line):
            self.result.bad += 1
            if len(self.result.errors) < MAX_ERRORS_KEPT:
                self.result.errors.append(error)
            if self.on_error is not None:
                self.on_error(error)
        if settings.DEBUG:
            reset_queries()  # DEBUG keeps every SQL string; a million-row import would hold them all

    def _write_one_by_one(self, rows: list[ProductRow | EncodedRow]) -> list[RowError]:
        errors = []
        orm = _OrmWriter()
        for row in rows:
            try:
                with transaction.atomic():
                    created, updated = orm.write([row])
            except DatabaseError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                errors.append(RowError(row.line, f"the database refused the row: {first_line}"))
                continue
            self.result.created += created
            self.result.updated += updated
            self.result.unchanged += 1 - created - updated
        return errors


def _duplicate(row: ProductRow | EncodedRow, first_line: int) -> RowError:
    return RowError(row.line, f"duplicate id {row.external_id!r} (first seen on line {first_line}); skipped")


def _drop_temporary_table(name: str) -> None:
    """Tidy up after an import. Best effort: the table dies with the session anyway, and an error here
    must not hide the one that may have ended the import."""
    if connection.needs_rollback:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
    except DatabaseError:
        pass


class _SeenIds:
    """The ids this import has taken so far, with their lines, in a temporary table.

    A temporary table lives in the database session, costs the import process no memory and
    disappears with the connection even if the import is killed.
    """

    table = "priceloop_import_seen"

    def open(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self.table} "
                "(external_id varchar(128) PRIMARY KEY, line integer NOT NULL)"
            )

    def close(self) -> None:
        _drop_temporary_table(self.table)

    def claim(
        self, rows: list[ProductRow | EncodedRow]
    ) -> tuple[list[ProductRow | EncodedRow], list[RowError]]:
        """The rows whose id no earlier chunk took (now taken), and an error for each of the others."""
        if not rows:
            return rows, []
        ids = [row.external_id for row in rows]
        earlier: dict[str, int] = {}
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Ids travel as one JSON array (orjson): psycopg adapts a Python list to a PostgreSQL
                # array element by element, which cost more than everything else the import process did.
                cursor.execute(
                    f"SELECT external_id, line FROM {self.table} "  # noqa: S608
                    "WHERE external_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))",
                    [orjson.dumps(ids).decode("utf-8")],
                )
                earlier.update(cursor.fetchall())
            else:
                for start in range(0, len(ids), 500):
                    batch = ids[start : start + 500]
                    marks = ", ".join(["%s"] * len(batch))
                    cursor.execute(
                        f"SELECT external_id, line FROM {self.table} WHERE external_id IN ({marks})",  # noqa: S608
                        batch,
                    )
                    earlier.update(cursor.fetchall())
            fresh = [row for row in rows if row.external_id not in earlier]
            errors = [_duplicate(row, earlier[row.external_id]) for row in rows if row.external_id in earlier]
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {self.table} (external_id, line) "  # noqa: S608
                    "SELECT external_id, line::int FROM ROWS FROM (jsonb_array_elements_text(%s::jsonb), "
                    "jsonb_array_elements_text(%s::jsonb)) AS t(external_id, line)",
                    [
                        orjson.dumps([row.external_id for row in fresh]).decode("utf-8"),
                        orjson.dumps([row.line for row in fresh]).decode("utf-8"),
                    ],
                )
            else:
                cursor.executemany(
                    f"INSERT INTO {self.table} (external_id, line) VALUES (%s, %s)",  # noqa: S608
                    [(row.external_id, row.line) for row in fresh],
                )
        return fresh, errors


class _Writer:
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, rows: list[ProductRow | EncodedRow]) -> tuple[int, int]:
        """Upsert ``rows`` (distinct ids); return (created, updated). Runs inside a transaction."""
        raise NotImplementedError


class _OrmWriter(_Writer):
    """Any database: read the chunk's existing rows, then one ``bulk_create`` for new and changed ones."""

    def write(self, rows: list[ProductRow | EncodedRow]) -> tuple[int, int]:
        # EncodedRow only arrives here in the row-by-row retry of a failed COPY chunk.
        rows_ = [decode_copy_line(row) if isinstance(row, EncodedRow) else row for row in rows]
        existing: dict[str, tuple[Any, ...]] = {
            values[0]: values[1:]
            for values in Product.objects.filter(
                external_id__in=[row.external_id for row in rows_]
            ).values_list("external_id", *COMPARED_FIELDS)
        }
        created = updated = 0
        changed: list[Product] = []
        for row in rows_:
            old = existing.get(row.external_id)
            if old is None:
                created += 1
            elif old == (row.title, row.text, row.category, row.price, row.price_flag, row.source, row.extra):
                continue  # unchanged: not written, so its `updated` timestamp stays
            else:
                updated += 1
            changed.append(
                Product(
                    external_id=row.external_id,
                    title=row.title,
                    text=row.text,
                    category=row.category,
                    price=row.price,
                    price_flag=row.price_flag,
                    split=row.split,
                    source=row.source,
                    extra=row.extra,
                )
            )
        if changed:
            # update_conflicts also covers an id another import inserted since the read above.
            Product.objects.bulk_create(
                changed,
                batch_size=500,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=UPDATE_FIELDS,
            )
        return created, updated


class _CopyWriter(_Writer):
    """PostgreSQL: new ids are ``COPY``'d straight into the table; ids already stored go through a
    temporary stage table and one ``INSERT … ON CONFLICT``.

    A straight COPY costs the server about half of the staged upsert per row (one pass, no speculative
    insertion), and nearly every row of a first import is new. The upsert's ``WHERE … IS DISTINCT FROM``
    leaves unchanged rows alone (no new row version, no new ``updated``), and ``xmax = 0`` tells the rows
    it inserted from the ones it updated.

    While the chunks hold new ids only (a first import), a chunk is COPY'd without looking up its ids
    first: a stored id makes the COPY fail with a unique violation, the COPY is undone (a savepoint) and
    the chunk is looked up and split; from then on, chunks are looked up first until one holds no stored id.

    An id that another import stores between the look-up and the COPY makes the COPY fail the same way:
    the whole chunk then takes the upsert path, so no row is lost and the chunk ends as the upsert alone
    would have left it.
    """

    stage = "priceloop_import_stage"
    columns = COPY_COLUMNS

    def __init__(self) -> None:
        # Whether the last chunk held new ids only; the look-up (about an eighth of the server's work
        # for a new row) is skipped while it did.
        self.expect_new = True

    def open(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.stage}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self.stage} (external_id text, title text, text text, "
                "category text, price numeric, price_flag text, split text, source text, extra jsonb)"
            )

    def close(self) -> None:
        _drop_temporary_table(self.stage)

    def write(self, rows: list[ProductRow | EncodedRow]) -> tuple[int, int]:
        lines = [
            row.copy_line if isinstance(row, EncodedRow) else encode_for_copy(row).copy_line for row in rows
        ]
        table = Product._meta.db_table
        if self.expect_new:
            try:
                with transaction.atomic():
                    self._copy_new(lines, self._now())
                return len(lines), 0
            except IntegrityError:
                pass  # some ids are stored (or were just stored by another import): look them up
        with connection.cursor() as cursor:
            # One JSON array, not a list parameter: see _SeenIds.claim. now() is the transaction's start,
            # the same timestamp the upsert below gives its rows.
            cursor.execute(
                f"SELECT now(), ARRAY(SELECT external_id FROM {table} "  # noqa: S608
                "WHERE external_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))))",
                [orjson.dumps([row.external_id for row in rows]).decode("utf-8")],
            )
            now, stored = cursor.fetchone()
        self.expect_new = not stored
        if not stored:
            new_lines, old_lines = lines, []
        else:
            known = set(stored)
            new_lines = [line for row, line in zip(rows, lines, strict=True) if row.external_id not in known]
            old_lines = [line for row, line in zip(rows, lines, strict=True) if row.external_id in known]
        if new_lines:
            try:
                with transaction.atomic():
                    self._copy_new(new_lines, now)
            except IntegrityError:
                # Another import stored some of these ids since the check: upsert them all instead.
                return self._upsert(lines)
        created, updated = self._upsert(old_lines) if old_lines else (0, 0)
        return len(new_lines) + created, updated

    def _now(self) -> datetime:
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            now: datetime = cursor.fetchone()[0]
        return now

    def _copy_new(self, lines: list[bytes], now: datetime) -> None:
        # COPY fills no column defaults that Django keeps (auto_now_add/auto_now): the timestamps travel
        # on each line, added in one pass over the payload (its only raw newlines end the lines: COPY
        # text format escapes those in values).
        stamps = f"\t{now.isoformat()}\t{now.isoformat()}\n".encode()
        payload = b"".join(lines).replace(b"\n", stamps)
        names = ", ".join(self.columns)
        # cursor.copy is psycopg's own: wrap_database_errors turns its errors into Django's, which the
        # callers catch (IntegrityError just above, DatabaseError in _Importer._flush).
        sql = f"COPY {Product._meta.db_table} ({names}, created, updated) FROM STDIN"
        with connection.cursor() as cursor, connection.wrap_database_errors, cursor.copy(sql) as copy:
            copy.write(payload)

    def _upsert(self, lines: list[bytes]) -> tuple[int, int]:
        table = Product._meta.db_table
        names = ", ".join(self.columns)
        compared = ", ".join(COMPARED_FIELDS)
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in UPDATE_FIELDS if name != "updated")
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {self.stage}")
            with (
                connection.wrap_database_errors,
                cursor.copy(f"COPY {self.stage} ({names}) FROM STDIN") as copy,
            ):
                copy.write(b"".join(lines))
            cursor.execute(
                f"""
                WITH upserted AS (
                    INSERT INTO {table} AS p ({names}, created, updated)
                    SELECT {names}, now(), now() FROM {self.stage}
                    ON CONFLICT (external_id) DO UPDATE SET {updates}, updated = EXCLUDED.updated
                    WHERE (p.{compared.replace(", ", ", p.")}) IS DISTINCT FROM
                          (EXCLUDED.{compared.replace(", ", ", EXCLUDED.")})
                    RETURNING (xmax = 0) AS inserted
                )
                SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
                """  # noqa: S608 - table and column names are ours, values go through COPY
            )
            created, updated = cursor.fetchone()
        return int(created), int(updated)
