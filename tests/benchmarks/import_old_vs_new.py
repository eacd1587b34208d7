"""Catalogue curation, old vs new: the same output, and the CPU each needs per row (no database).

Run:
    PYTHONPATH=. .venv/bin/python tests/benchmarks/import_old_vs_new.py --rev 15d0ca9 [--rows 20000]

``--rev`` names the commit whose ``annotation/catalogue/{curation,reader,pipeline}.py`` are "old"; the
working tree is "new". Checks, over synthetic rows, the same rows with debris inserted (whitespace,
punctuation, part numbers, boilerplate, non-ASCII digits and spaces, control characters, odd prices, ids
and extra fields), JSON edge lines and a CSV file:
- every curation step on every title and text line (``curate_line`` and its parts, on raw lines and, for
  the parts that expect them, on collapsed lines), and ``curate_text``;
- the worker's output: each COPY line and each row error (line number and reason).
Then times the worker function (``_curate_jsonl_encoded``, 1,000-line batches) old and new, alternated,
and prints the best and median CPU microseconds per row. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("curation", "reader", "pipeline")
DEBRIS = [
    " ",
    "  ",
    "\t",
    "\u00a0",
    "\u3000",
    ".",
    ",",
    ";",
    ":",
    "!",
    "?",
    " .",
    " ,",
    ", ,",
    ". .",
    ";;",
    ",;",
    ";,",
    "...",
    "?!",
    "[",
    "]",
    "{",
    "}",
    '"',
    "【",
    "】",
    "XR4821B",
    "B07ZPKBL9V",
    "1234567",
    "123456",
    "1500W",
    "2-Pack",
    "é",
    "ü12345",
    "１２３４５６７",
    "٣٤٥٦٧٨٩٠",
    "Batteries Required? Yes",
    "Batteries Included?: No",
    "Is Discontinued By Manufacturer",
    "By Manufacturer",
    "Manufacturer",
    "Item model number",
    "Best Sellers Rank",
    "Date First Available",
    "Weight .45",
    "x .5",
    "\\",
    "\\n",
    "_",
    "-",
    "\x1f",
    "\x0b",
    "\x85",
    "\u2028",
    "\r",
    "𝟘𝟙𝟚",
    "\U0001f600",
    " , . ; :",
    "a,,b",
    "1.2.3.4.5.6.7",
    ": :",
    "! .",
    "? ,",
    "No",
    "Yes",
]
PRICES: list[Any] = [
    None,
    "",
    "  ",
    "$1,299.00",
    "-$3",
    "-1",
    "abc",
    0,
    0.0,
    -0.0,
    5e-324,
    1e300,
    "1e30",
    12,
    12.345,
    999.495,
    0.499,
    True,
    [1],
    {"a": 1},
    10**20,
    10**40,
    "1e3",
    37.99,
]
EDGE_LINES = [
    b"\n",
    b"   \n",
    b"\xff\xfe not UTF-8\n",
    b'{"id": "u0", "title": "a\\u0000", "text": "b", "category": "c"}\n',
    b'{"id": "s1", "title": "a\\ud800", "text": "b", "category": "c"}\n',
    b'{"id": "s2", "title": "a\\ud83d\\ude00 b", "text": "b c", "category": "c"}\n',
    b'{"id": "d", "id": "d2", "title": "t", "text": "x y", "category": "c"}\n',
    b'{"id": "n", "title": "t", "text": "x", "category": "c", "price": NaN}\n',
    b'{"id": "b", "title": "t", "text": "x", "category": "c", "price": 1e400}\n',
    b"[1, 2]\n",
    b'"str"\n',
    b'{"id": "big", "title": "t", "text": "x", "category": "c", "n": 123456789012345678901234567890}\n',
    b"{bad json\n",
]


def load_old(rev: str) -> dict[str, types.ModuleType]:
    """The catalogue modules of ``rev`` as a separate package ``old_catalogue``."""
    package = types.ModuleType("old_catalogue")
    package.__path__ = []
    sys.modules["old_catalogue"] = package
    modules = {}
    for name in MODULES:
        source = subprocess.run(
            ["git", "show", f"{rev}:annotation/catalogue/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.replace("annotation.catalogue.", "old_catalogue.")
        module = types.ModuleType(f"old_catalogue.{name}")
        module.__file__ = f"{rev}:annotation/catalogue/{name}.py"
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own code at rev
        modules[name] = module
    return modules


def fuzz(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(rng.randint(1, 8)):
        words.insert(rng.randint(0, len(words)), rng.choice(DEBRIS))
    return rng.choice([" ", " ", " ", "", "  "]).join(words)


def fuzzed_rows(products: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for product in products:
        row = dict(product, title=fuzz(product["title"], rng))
        row["text"] = fuzz(product["text"], rng) + rng.choice(
            ["", "\n", "\n\n" + fuzz(product["title"], rng)]
        )
        if rng.random() < 0.3:
            row["price"] = rng.choice(PRICES)
        if rng.random() < 0.05:
            del row[rng.choice(["id", "title", "text", "category"])]
        if rng.random() < 0.05:
            row["description"] = row.pop("text", "d")
        if rng.random() < 0.05:
            row["text"] = [fuzz("a b", rng), "c 1234567"]
        if rng.random() < 0.05:
            row["id"] = rng.choice([123, 1.5, "  ", "x" * 130, str(row.get("id", "z")) + " "])
        if rng.random() < 0.05:
            row["more"] = rng.choice([[1, [2, 3]], 10**30, -0.0, {"n": None}, "tab\there", "back\\slash"])
        if rng.random() < 0.03:
            row["title"] = rng.choice(["", "   ", "Item model number", "t" * 600])
        if rng.random() < 0.03:
            row["source"] = rng.choice(["", None, 5, "s" * 201])
        rows.append(row)
    return rows


def compare_lines(old: types.ModuleType, new: types.ModuleType, lines: list[str]) -> int:
    differences = 0
    for name in ("_drop_boilerplate", "_scrub_chars", "_collapse_spaces", "_tidy_punctuation", "curate_line"):
        differences += sum(getattr(old, name)(line) != getattr(new, name)(line) for line in lines)
    # The parts after _collapse_spaces expect collapsed lines, as curate_line hands them over.
    collapsed = [old._collapse_spaces(old._scrub_chars(old._drop_boilerplate(line))) for line in lines]
    differences += sum(old._drop_part_numbers(line) != new._drop_part_numbers(line) for line in collapsed)
    differences += sum(old._needs_tidy(line) != new._needs_tidy(new._classes(line)) for line in collapsed)
    return differences


def worker_output(pipeline: types.ModuleType, reader: types.ModuleType, lines: list[bytes]) -> list[Any]:
    """Per line: the COPY tuple, ``(line, reason)`` of a row error, or ``("crash", line)`` where the code
    raised (before f52c140 a price beyond Decimal's 28 digits did)."""
    options = reader.CurationSettings(0.1, 1500, "s")
    out: list[Any] = []
    for start in range(0, len(lines), 1000):
        try:
            out += pipeline._curate_jsonl_encoded(start + 1, lines[start : start + 1000], options)
        except ArithmeticError:
            for number, line in enumerate(lines[start : start + 1000], start=start + 1):
                try:
                    out += pipeline._curate_jsonl_encoded(number, [line], options)
                except ArithmeticError:
                    out.append(("crash", number))
    return [item if isinstance(item, tuple) else (item.line, item.reason) for item in out]


def csv_output(pipeline: types.ModuleType, reader: types.ModuleType, data: bytes) -> list[Any]:
    items = list(reader.read_csv(io.BytesIO(data)))
    out = pipeline._curate_csv_encoded(items, reader.CurationSettings(0.1, 1500, "s"))
    return [item if isinstance(item, tuple) else (item.line, item.reason) for item in out]


def cpu_per_row(pipeline: types.ModuleType, reader: types.ModuleType, lines: list[bytes]) -> float:
    options = reader.CurationSettings(0.1, 1500, "s")
    started = time.process_time()
    for start in range(0, len(lines), 1000):
        pipeline._curate_jsonl_encoded(start + 1, lines[start : start + 1000], options)
    return (time.process_time() - started) / len(lines) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", required=True, help="the commit whose catalogue modules are the old ones")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=11, help="timing rounds (old and new alternated)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from annotation.catalogue import curation, pipeline, reader
    from training.engine import synthetic

    old = load_old(args.rev)
    rng = random.Random(1)
    products = list(synthetic.generate_products(args.rows, seed=0))
    fuzzed = fuzzed_rows(products, rng)

    texts = [row["title"] for row in products + fuzzed if isinstance(row.get("title"), str)]
    texts += [
        line
        for row in products + fuzzed
        if isinstance(row.get("text"), str)
        for line in row["text"].splitlines()
    ]
    line_differences = compare_lines(old["curation"], curation, texts)
    text_differences = sum(
        old["curation"].curate_text(row["title"], row["text"], max_chars=chars)
        != curation.curate_text(row["title"], row["text"], max_chars=chars)
        for row in products + fuzzed
        if isinstance(row.get("title"), str) and isinstance(row.get("text"), str)
        for chars in (1500, 200, 60)
    )

    jsonl = [json.dumps(row, ensure_ascii=rng.random() < 0.5).encode() + b"\n" for row in products + fuzzed]
    jsonl = [jsonl[0], b"\xef\xbb\xbf" + jsonl[0], *EDGE_LINES, *jsonl[1:]]  # a BOM on line 2 is an error
    old_rows = worker_output(old["pipeline"], old["reader"], jsonl)
    new_rows = worker_output(pipeline, reader, jsonl)
    old_crashes = {row[1] for row in old_rows if row[0] == "crash"}
    old_rows = [row for row in old_rows if row[0] != "crash"]
    new_rows = [row for row in new_rows if row[0] not in old_crashes]
    row_differences = sum(a != b for a, b in zip(old_rows, new_rows, strict=True))

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "title", "text", "category", "price", "source", "details"])
    for product in products[:5000]:
        price = rng.choice(["", "$1,299.00", "12.5", "x", str(product["price"])])
        writer.writerow(
            [
                product["id"],
                fuzz(product["title"], rng),
                fuzz(product["text"], rng),
                product["category"],
                price,
                "",
                product["details"],
            ]
        )
    data = buffer.getvalue().encode()
    old_csv, new_csv = csv_output(old["pipeline"], old["reader"], data), csv_output(pipeline, reader, data)
    csv_differences = sum(a != b for a, b in zip(old_csv, new_csv, strict=True))

    errors = sum(len(row) == 2 for row in new_rows)
    print(
        f"{len(texts):,} lines: {line_differences} differences; {text_differences} in curate_text; "
        f"{len(jsonl):,} JSONL lines ({errors:,} row errors; {len(old_crashes)} that {args.rev} "
        f"could not import left out): {row_differences}; "
        f"{len(new_csv):,} CSV rows: {csv_differences}"
    )

    clean = [json.dumps(row).encode() + b"\n" for row in products]
    timings: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        timings["old"].append(cpu_per_row(old["pipeline"], old["reader"], clean))
        timings["new"].append(cpu_per_row(pipeline, reader, clean))
    for side, values in timings.items():
        values.sort()
        print(
            f"worker function, {side} ({args.rev if side == 'old' else 'working tree'}): "
            f"best {values[0]:.1f}, median {values[len(values) // 2]:.1f} CPU-us per row"
        )
    return 1 if line_differences or text_differences or row_differences or csv_differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
