"""Read a catalogue file (JSONL or CSV) into numbered, curated product rows (pure Python, no Django).

The file is read as bytes, one physical line at a time, and each line is decoded on its own: one bad
UTF-8 line is reported with its number instead of failing the whole file, and memory does not grow
with the file. Everything that is wrong with a row becomes a ``RowError(line, reason)``; only
file-level problems (unknown format, a CSV header without a required column) raise
``CatalogueFormatError``.

Fields: ``id``, ``title``, ``text`` (or ``description``), ``category`` are required; ``price`` and
``source`` are optional; every other field is kept in ``extra``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from annotation.catalogue.curation import PriceError, curate_text, curate_title, parse_price, truncate
from training.engine.split import in_holdout

Format = Literal["jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv")
REQUIRED_FIELDS = ("id", "title", "text", "category")
TEXT_ALIASES = ("text", "description")
KNOWN_FIELDS = frozenset({"id", "title", "text", "description", "category", "price", "source"})
# Column sizes of annotation.models.Product: checked here so that a too-long value is a reported row,
# not a database error that fails its whole chunk.
MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 500
MAX_CATEGORY_CHARS = 200
MAX_SOURCE_CHARS = 200
_EXTENSIONS: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
_BOM = b"\xef\xbb\xbf"


class CatalogueFormatError(Exception):
    """The file as a whole cannot be imported; the message names the problem and the fix."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(slots=True)
class ProductRow:
    """One valid, curated row, ready to be written."""

    line: int
    external_id: str
    title: str
    text: str
    category: str
    price: Decimal | None
    price_flag: str
    split: str
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path, fmt: str | None = None) -> Format:
    """The format named by ``fmt``, or else by the file's extension."""
    if fmt:
        if fmt not in FORMATS:
            raise CatalogueFormatError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt  # type: ignore[return-value]
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise CatalogueFormatError(
            f"cannot tell the format of {path.name!r} from its extension: pass --format jsonl or --format csv"
        ) from None


def split_for(external_id: str, test_fraction: float) -> str:
    """``test`` or ``pool``, from the id alone: the same id lands in the same split on every machine.

    The one rule of the engine's ``in_holdout`` (salted: see ``SPLIT_SALT`` there for why).
    """
    return "test" if in_holdout(external_id, test_fraction) else "pool"


def _decoded_lines(stream: BinaryIO, bad_lines: dict[int, str]) -> Iterator[str]:
    """Each physical line decoded on its own; an undecodable one is recorded in ``bad_lines``."""
    for number, raw in enumerate(stream, start=1):
        line = _decode(number, raw)
        if isinstance(line, RowError):
            bad_lines[number] = line.reason
            yield raw.decode("utf-8", errors="replace")
        else:
            yield line


def _decode(number: int, raw: bytes) -> str | RowError:
    if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(
            number,
            f"bad encoding: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8",
        )


# orjson parses a line about four times faster than json, but it does not read everything the same way:
# integers beyond 64 bits become floats, and it refuses NaN/Infinity, lone surrogates and a BOM. Lines
# it refuses, and lines with a float beyond 2**63 (it may have been a big integer), take the json path
# below, so every line parses exactly as json.loads parses it.
_INT64_LIMIT = 2.0**63


def _may_be_big_integer(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return not -_INT64_LIMIT < value < _INT64_LIMIT
    if kind is dict:
        return any(_may_be_big_integer(item) for item in value.values())
    if kind is list:
        return any(_may_be_big_integer(item) for item in value)
    return False


def parse_jsonl_line(number: int, raw: bytes) -> tuple[int, dict[str, Any]] | RowError | None:
    """One JSONL line: ``(line, object)``, a ``RowError``, or ``None`` for a blank line."""
    try:
        obj = orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError
        return _parse_jsonl_line_json(number, raw)
    # orjson refuses lone surrogates, so a "\\ud…" escape it took is a valid pair, read as json does.
    if type(obj) is not dict or b"\\u0000" in raw:
        return _parse_jsonl_line_json(number, raw)
    for value in obj.values():
        if type(value) is not str and _may_be_big_integer(value):
            return _parse_jsonl_line_json(number, raw)
    return number, obj


def _parse_jsonl_line_json(number: int, raw: bytes) -> tuple[int, dict[str, Any]] | RowError | None:
    """``parse_jsonl_line`` with the json module: the reference for every line orjson does not take."""
    line = _decode(number, raw)
    if isinstance(line, RowError):
        return line
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return RowError(number, f"malformed JSON: {exc}")
    if not isinstance(obj, dict):
        return RowError(number, f"expected a JSON object, got {type(obj).__name__}")
    # Cheap guard first: only lines with a NUL or a surrogate escape need the second look.
    if ("\\u0000" in line or "\\ud" in line or "\\uD" in line) and (reason := _unstorable_escape(line)):
        return RowError(number, reason)
    return number, obj


def read_jsonl(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]] | RowError]:
    """``(line, object)`` per non-blank line, or a ``RowError`` for a line that is not a JSON object."""
    for number, raw in enumerate(stream, start=1):
        item = parse_jsonl_line(number, raw)
        if item is not None:
            yield item


def _unstorable_escape(line: str) -> str | None:
    """JSON can escape characters that PostgreSQL text cannot hold: NUL and lone surrogates."""
    if "\\u0000" in line:
        return "contains a NUL character (\\u0000), which cannot be stored: remove it"
    try:
        json.loads(line, object_hook=_check_strings)
    except UnicodeEncodeError:
        return "contains an invalid \\u escape (a lone UTF-16 surrogate): fix the text"
    return None


def _check_strings(obj: dict[str, Any]) -> dict[str, Any]:
    for key, value in obj.items():
        key.encode("utf-8")
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    item.encode("utf-8")
    return obj


def read_csv(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]] | RowError]:
    """``(line, row)`` per CSV record (line = where the record starts; the header is line 1).

    Raises ``CatalogueFormatError`` when the header lacks a required column.
    """
    bad_lines: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(stream, bad_lines))
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueFormatError("the CSV file is empty: it needs a header row") from None
    except csv.Error as exc:
        raise CatalogueFormatError(f"the CSV header cannot be read: {exc}") from None
    if bad_lines:
        raise CatalogueFormatError(f"the CSV header (line 1) cannot be read: {bad_lines[1]}")
    columns = [name.strip().lower() for name in header]
    _check_header(columns)
    width = len(columns)
    previous_end = reader.line_num
    while True:
        start = previous_end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous_end = reader.line_num
            _forget(bad_lines, previous_end)
            yield RowError(start, f"malformed CSV: {exc}")
            continue
        previous_end = reader.line_num
        if bad_lines:
            # The record spans physical lines start..previous_end; report the first undecodable one.
            bad = [number for number in bad_lines if start <= number <= previous_end]
            if bad:
                yield RowError(bad[0], bad_lines[bad[0]])
                _forget(bad_lines, previous_end)
                continue
        if not record:
            continue  # a blank line
        if any("\x00" in value for value in record):
            yield RowError(start, "contains a NUL character, which cannot be stored: remove it")
            continue
        if len(record) != width:
            missing = columns[len(record) :]
            detail = f": missing {', '.join(missing)}" if missing else ""
            yield RowError(start, f"row has {len(record)} fields but the header has {width}{detail}")
            continue
        yield start, dict(zip(columns, record, strict=True))


def _forget(bad_lines: dict[int, str], up_to: int) -> None:
    for number in [n for n in bad_lines if n <= up_to]:
        del bad_lines[number]


def _check_header(columns: list[str]) -> None:
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise CatalogueFormatError(
            f"the CSV header repeats column(s) {', '.join(duplicated)}: give every column a unique name"
        )
    for name in REQUIRED_FIELDS:
        present = any(alias in columns for alias in TEXT_ALIASES) if name == "text" else name in columns
        if not present:
            wanted = "'text' (or 'description')" if name == "text" else f"'{name}'"
            raise CatalogueFormatError(
                f"the CSV header has no {wanted} column (found: {', '.join(columns) or 'none'}). "
                f"Add a {wanted} column to the first line; required columns: id, title, text or "
                "description, category; optional: price, source; any other column is kept as extra data."
            )


def read_raw_rows(stream: BinaryIO, fmt: Format) -> Iterator[tuple[int, dict[str, Any]] | RowError]:
    return read_jsonl(stream) if fmt == "jsonl" else read_csv(stream)


def _string(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if name in TEXT_ALIASES and isinstance(value, list) and all(isinstance(part, str) for part in value):
        return "\n".join(value)  # the reference data keeps descriptions as a list of paragraphs
    raise ValueError(f"field '{name}' must be text, got {type(value).__name__}")


def curate_row(
    line: int,
    raw: dict[str, Any],
    *,
    test_fraction: float,
    max_text_chars: int,
    default_source: str,
    from_csv: bool,
) -> ProductRow | RowError:
    """Validate and curate one raw row; a ``RowError`` says what is wrong with it."""
    # Runs once per imported row: plain str values (nearly all) skip the ``_string`` call, and a row
    # with every required field (nearly all) skips the loop that names the first missing one.
    if not ("id" in raw and "title" in raw and "category" in raw and ("text" in raw or "description" in raw)):
        for name in REQUIRED_FIELDS:
            if name == "text":
                if "text" not in raw and "description" not in raw:
                    return RowError(line, "missing field 'text' (or 'description')")
            elif name not in raw:
                return RowError(line, f"missing field '{name}'")
    text_key = "text" if "text" in raw else "description"
    external_id, raw_title, raw_text, category = raw["id"], raw["title"], raw[text_key], raw["category"]
    source = raw.get("source") or default_source
    try:
        if type(external_id) is not str:
            external_id = _string(external_id, "id")
        if type(raw_title) is not str:
            raw_title = _string(raw_title, "title")
        if type(raw_text) is not str:
            raw_text = _string(raw_text, text_key)
        if type(category) is not str:
            category = _string(category, "category")
        if type(source) is not str:
            source = _string(source, "source")
    except ValueError as exc:
        return RowError(line, str(exc))
    external_id, category, source = external_id.strip(), category.strip(), source.strip()
    if not external_id:
        return RowError(line, "field 'id' is empty")
    if len(external_id) > MAX_ID_CHARS:
        return RowError(line, f"id is longer than {MAX_ID_CHARS} characters")
    if len(category) > MAX_CATEGORY_CHARS:
        return RowError(line, f"category is longer than {MAX_CATEGORY_CHARS} characters")
    if len(source) > MAX_SOURCE_CHARS:
        return RowError(line, f"source is longer than {MAX_SOURCE_CHARS} characters")
    title = truncate(curate_title(raw_title), MAX_TITLE_CHARS)
    if not title:
        return RowError(line, "field 'title' is empty")
    text = curate_text(raw_title, raw_text, max_chars=max_text_chars, curated_title=title)
    if text == title:
        return RowError(line, f"field '{text_key}' is empty (after removing boilerplate)")
    try:
        price = parse_price(raw.get("price"))
    except PriceError as exc:
        return RowError(line, str(exc))
    if from_csv:
        extra = {key: value for key, value in raw.items() if key not in KNOWN_FIELDS and value != ""}
    else:
        extra = {key: value for key, value in raw.items() if key not in KNOWN_FIELDS}
    if text_key == "text" and "description" in raw:
        extra["description"] = raw["description"]
    if not all(type(value) is str for value in extra.values()):
        try:
            json.dumps(extra, allow_nan=False)
        except ValueError:
            return RowError(line, "extra fields contain NaN or Infinity, which JSON storage cannot hold")
    # Positional: ProductRow's field order (line, external_id, title, text, category, price, price_flag,
    # split, source, extra).
    split = split_for(external_id, test_fraction)
    return ProductRow(line, external_id, title, text, category, price.value, price.flag, split, source, extra)


@dataclass(frozen=True, slots=True)
class CurationSettings:
    test_fraction: float
    max_text_chars: int
    default_source: str = ""


def curate_items(
    items: Iterable[tuple[int, dict[str, Any]] | RowError], options: CurationSettings, from_csv: bool
) -> list[ProductRow | RowError]:
    fraction, max_chars, source = options.test_fraction, options.max_text_chars, options.default_source
    return [
        item
        if isinstance(item, RowError)
        else curate_row(
            item[0],
            item[1],
            test_fraction=fraction,
            max_text_chars=max_chars,
            default_source=source,
            from_csv=from_csv,
        )
        for item in items
    ]


def curate_jsonl_batch(
    first_line: int, lines: list[bytes], options: CurationSettings
) -> list[ProductRow | RowError]:
    """Parse and curate consecutive JSONL lines (``first_line`` is the number of ``lines[0]``)."""
    parsed = (parse_jsonl_line(number, raw) for number, raw in enumerate(lines, start=first_line))
    return curate_items((item for item in parsed if item is not None), options, from_csv=False)


def read_products(
    stream: BinaryIO,
    fmt: Format,
    *,
    test_fraction: float,
    max_text_chars: int,
    default_source: str = "",
) -> Iterator[ProductRow | RowError]:
    """Every row of the file, in order, as a curated ``ProductRow`` or a ``RowError``."""
    options = CurationSettings(test_fraction, max_text_chars, default_source)
    for item in read_raw_rows(stream, fmt):
        yield from curate_items([item], options, from_csv=fmt == "csv")
