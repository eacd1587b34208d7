"""Exports: rows written as JSON Lines, CSV or Parquet and streamed to the caller. Every export of the
API (annotations, resolved labels, a batch's items, a run's dataset) answers through this module.

    COLUMNS = (Column("task_id", int), Column("price", str), Column("batched", bool))
    query = ExportQuery(data=request.query_params)        # ?output=jsonl|csv|parquet, 400 otherwise
    query.is_valid(raise_exception=True)
    return export_response(rows, COLUMNS, output=query.validated_data["output"], filename="labels")

An export names its columns once, with their types: JSONL writes each row as a JSON object with those
keys in that order; CSV writes a header row, then one line per row (null: an empty cell; booleans:
``true``/``false``; a list: its items joined with ``;``; a text cell that a spreadsheet would run as a
formula gets a leading ``'``, see ``csv_text``); Parquet declares the column types, so a
column that is null on the first rows (or on all of them) keeps its type. Rows are read lazily and
written a chunk at a time (Parquet: one row group), so an export of any size is a
``StreamingHttpResponse`` that holds one chunk in memory, never the whole result.

The format's query parameter is ``output``, not ``format``: DRF reads ``?format=`` itself (it picks a
renderer, and answers 404 for a name it does not know).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.negotiation import DefaultContentNegotiation

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
CHUNK_ROWS = 1000  # rows per streamed chunk of JSONL/CSV
ROW_GROUP_ROWS = 10_000  # rows per Parquet row group (one streamed chunk)


@dataclass(frozen=True)
class Column:
    """One column of an export: its name and the type of its values (``str``, ``int``, ``float``,
    ``bool`` or ``list`` of strings); any value may be None."""

    name: str
    kind: type = str


def output_field(formats: Sequence[str] = FORMATS, *, default: str = "jsonl") -> serializers.ChoiceField:
    """The ``output`` query parameter: a 400 for any other value names the parameter and the choices."""
    accepted = ", ".join(formats)
    return serializers.ChoiceField(
        choices=list(formats),
        default=default,
        help_text=f"the file format: {accepted} (default {default})",
        error_messages={"invalid_choice": f'"{{input}}" is not an export format; use output={accepted}.'},
    )


class ExportQuery(serializers.Serializer):
    class Meta:
        ref_name = "ExportQuery"

    output = output_field()


class ExportNegotiation(DefaultContentNegotiation):
    """A download's format is its ``output`` parameter, not the Accept header: a client asking for
    ``Accept: text/csv`` gets the file (errors are JSON, as everywhere), never a 406."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except exceptions.NotAcceptable:
            return renderers[0], renderers[0].media_type


# --- writers ----------------------------------------------------------------------------------------


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def jsonl_chunks(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> Iterator[bytes]:
    names = [c.name for c in columns]
    for chunk in _chunks(rows, CHUNK_ROWS):
        text = "".join(json.dumps({n: row.get(n) for n in names}, ensure_ascii=False) + "\n" for row in chunk)
        yield text.encode("utf-8")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A decimal number ("-12.50", a price) is a value, not a formula: it is left as it is.
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")


def csv_text(value: str) -> str:
    """A text cell as CSV writes it: one that starts with ``= + - @``, a tab or a carriage return gets
    a leading ``'`` so that a spreadsheet shows it as text instead of running it (a product title
    ``=HYPERLINK(…)`` stays a title), unless it is a plain decimal number. Only CSV does this: JSONL and
    Parquet carry the value as it is, and int/float/bool columns are never touched."""
    if value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv_cell(value: Any, kind: type) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    if kind in (str, list) and isinstance(value, str):
        return csv_text(value)
    return value


def csv_chunks(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> Iterator[bytes]:
    names = [c.name for c in columns]
    kinds = [(c.name, c.kind) for c in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(names)
    for chunk in _chunks(rows, CHUNK_ROWS):
        for row in chunk:
            writer.writerow([_csv_cell(row.get(n), kind) for n, kind in kinds])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # no rows: the header alone
        yield buffer.getvalue().encode("utf-8")


class _Sink:
    """A write-only file for pyarrow's Parquet writer that hands over what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _arrow_schema(columns: Sequence[Column]) -> Any:
    import pyarrow as pa  # a dependency of ``datasets``; imported only by a Parquet export

    types = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
        list: pa.list_(pa.string()),
    }
    return pa.schema([pa.field(c.name, types[c.kind]) for c in columns])


def parquet_chunks(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(columns)
    names = [c.name for c in columns]
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    try:
        for chunk in _chunks(rows, ROW_GROUP_ROWS):
            writer.write_table(
                pa.Table.from_pylist([{n: row.get(n) for n in names} for row in chunk], schema)
            )
            yield sink.take()
    finally:
        writer.close()  # the footer: a Parquet file with no rows still has its schema
    yield sink.take()


WRITERS = {"jsonl": jsonl_chunks, "csv": csv_chunks, "parquet": parquet_chunks}


def export_chunks(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], output: str
) -> Iterator[bytes]:
    return WRITERS[output](rows, columns)


def export_response(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    output: str,
    filename: str,
    headers: Mapping[str, str] | None = None,
) -> StreamingHttpResponse:
    """The rows as a streamed download ``<filename>.<output>``."""
    content_type = MEDIA_TYPES[output] + ("; charset=utf-8" if output == "csv" else "")
    response = StreamingHttpResponse(export_chunks(rows, columns, output), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}.{output}"'
    response["X-Content-Type-Options"] = "nosniff"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- schema -----------------------------------------------------------------------------------------


def export_responses(
    what: str, *, formats: Sequence[str] = FORMATS, error_codes: Mapping[int, Any] | None = None
) -> dict[Any, Any]:
    """The ``responses`` of an export operation for ``extend_schema``: one 200 per media type, the 400
    of a bad query parameter, and the operation's own error codes."""
    from webapp.api import ERROR_SCHEMA

    bodies: dict[Any, Any] = {}
    for output in formats:
        kind = OpenApiTypes.BINARY if output == "parquet" else OpenApiTypes.STR
        bodies[(200, MEDIA_TYPES[output])] = OpenApiResponse(
            kind, description=f"{what} as {output} (output={output})"
        )
    bodies[400] = OpenApiResponse(ERROR_SCHEMA, description="a query parameter is invalid (fields names it)")
    for code, body in (error_codes or {}).items():
        bodies[code] = body
    return bodies


DISPOSITION = OpenApiParameter(
    "Content-Disposition",
    str,
    OpenApiParameter.HEADER,
    response=[200],
    description='attachment; filename="<name>.<output>"',
)
