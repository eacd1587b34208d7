"""Catalogue import through ``manage.py import_products`` and the service, checked in the database."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from annotation.catalogue.reader import CatalogueFormatError, RowError
from annotation.catalogue.services import ImportResult, products_import
from annotation.models import PriceFlag, Product, Split
from training.engine import synthetic

pytestmark = pytest.mark.django_db

# Every writer this database supports: the ORM everywhere, COPY on PostgreSQL.
METHODS = ["orm", "copy"] if connection.vendor == "postgresql" else ["orm"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_command(path: Path, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_products", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def product(external_id: str) -> Product:
    return Product.objects.get(external_id=external_id)


def test_it_rejects_bad_csv_rows_by_line_and_leaves_stored_products_alone(tmp_path: Path) -> None:
    run_command(
        write_jsonl(
            tmp_path / "first.jsonl",
            [
                {"id": "p2", "title": "Old kettle", "text": "Boils.", "category": "Appliances", "price": 20},
                {"id": "p4", "title": "Old lamp", "text": "Shines.", "category": "Office", "price": 30},
            ],
        )
    )
    before = {p.external_id: (p.title, p.price, p.updated) for p in Product.objects.all()}
    bad_csv = tmp_path / "catalogue.csv"
    bad_csv.write_bytes(
        b"id,title,text,category,price\n"
        b"p1,Good mixer,Mixes well.,Appliances,10\n"  # line 2: fine
        b"p2,New kettle,Boils faster.,Appliances,-5\n"  # line 3: negative price
        b"p3,Drill,Drills.,Tools,twelve\n"  # line 4: not a number
        b"p1,Good mixer v2,Mixes better.,Appliances,12\n"  # line 5: duplicate id
        b"p4,Caf\xe9 lamp,Latin-1 bytes.,Office,3\n"  # line 6: bad UTF-8
        b"p5,Saw,Saws.,Tools\n"  # line 7: the price column is missing
        b'p6,Piano,"Grand, black.",Music,"$1,299.00"\n'  # line 8: fine, flagged out of range
    )

    err = StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("import_products", str(bad_csv), stdout=StringIO(), stderr=err)

    assert str(failure.value) == (
        f"{bad_csv}: 2 imported (2 new, 0 updated, 0 unchanged), 5 bad; the bad rows were skipped (see above)"
    )
    assert err.getvalue().splitlines() == [
        f"{bad_csv}:3: price '-5' is negative",
        f"{bad_csv}:4: price 'twelve' is not a number (expected e.g. 12.50 or $1,299.00)",
        f"{bad_csv}:5: duplicate id 'p1' (first seen on line 2); skipped",
        f"{bad_csv}:6: bad encoding: not valid UTF-8 (byte 0xe9 at column 7); save the file as UTF-8",
        f"{bad_csv}:7: row has 4 fields but the header has 5: missing price",
    ]
    # good rows are in; the first occurrence of a duplicate wins
    assert (product("p1").title, product("p1").price) == ("Good mixer", Decimal("10.00"))
    assert (product("p6").price, product("p6").price_flag) == (Decimal("1299.00"), PriceFlag.OUT_OF_RANGE)
    assert not Product.objects.filter(external_id__in=["p3", "p5"]).exists()
    # products stored earlier are untouched by their failed rows
    after = {
        p.external_id: (p.title, p.price, p.updated) for p in Product.objects.filter(external_id__in=before)
    }
    assert after == before


@pytest.mark.parametrize("method", METHODS)
def test_it_reimports_idempotently(tmp_path: Path, method: str) -> None:
    path = synthetic.write_jsonl(tmp_path / "catalogue.jsonl", 120, seed=5)

    started = timezone.now()
    first = products_import(path=path, method=method, chunk_size=50)  # type: ignore[arg-type]
    stored = {p.external_id: (p.text, p.price, p.split, p.updated) for p in Product.objects.all()}
    stamps = set(Product.objects.values_list("created", "updated"))
    assert all(started <= created <= updated <= timezone.now() for created, updated in stamps)
    second = products_import(path=path, method=method, chunk_size=50)  # type: ignore[arg-type]

    assert (first.created, first.updated, first.unchanged, first.bad) == (120, 0, 0, 0)
    assert (second.created, second.updated, second.unchanged, second.bad) == (0, 0, 120, 0)
    assert {p.external_id: (p.text, p.price, p.split, p.updated) for p in Product.objects.all()} == stored


@pytest.mark.parametrize("method", METHODS)
def test_it_updates_changed_products_but_never_their_split(tmp_path: Path, method: str) -> None:
    rows = list(synthetic.generate_products(60, seed=2))
    path = write_jsonl(tmp_path / "catalogue.jsonl", rows)
    products_import(path=path, test_fraction=0.5, method=method)  # type: ignore[arg-type]
    splits = dict(Product.objects.values_list("external_id", "split"))
    assert set(splits.values()) == {Split.POOL, Split.TEST}

    rows[0]["title"] = "Renamed " + rows[0]["title"]
    rows[1]["price"] = 1234.5
    write_jsonl(path, rows)
    result = products_import(path=path, test_fraction=1.0, method=method)  # type: ignore[arg-type]

    assert (result.created, result.updated, result.unchanged) == (0, 2, 58)
    assert dict(Product.objects.values_list("external_id", "split")) == splits
    assert product(rows[0]["id"]).title.startswith("Renamed")
    assert (product(rows[1]["id"]).price, product(rows[1]["id"]).price_flag) == (
        Decimal("1234.50"),
        PriceFlag.OUT_OF_RANGE,
    )


def test_it_splits_new_products_by_id_hash(tmp_path: Path) -> None:
    path = synthetic.write_jsonl(tmp_path / "catalogue.jsonl", 500, seed=1)
    run_command(path, "--test-fraction", "0.3")
    first = dict(Product.objects.values_list("external_id", "split"))
    Product.objects.all().delete()
    run_command(path, "--test-fraction", "0.3")
    assert dict(Product.objects.values_list("external_id", "split")) == first
    assert 0.22 < list(first.values()).count(Split.TEST) / 500 < 0.38


def test_it_flags_out_of_range_and_missing_prices(tmp_path: Path) -> None:
    base: dict[str, Any] = {"title": "Thing", "text": "A thing.", "category": "Misc"}
    rows: list[dict[str, Any]] = [
        {**base, "id": "cheap", "price": 0.2},
        {**base, "id": "low-edge", "price": 0.5},
        {**base, "id": "high-edge", "price": "999.49"},
        {**base, "id": "dear", "price": 1000},
        {**base, "id": "none"},
        {**base, "id": "empty", "price": ""},
    ]
    products_import(path=write_jsonl(tmp_path / "prices.jsonl", rows))
    flags = dict(Product.objects.values_list("external_id", "price_flag"))
    assert flags == {
        "cheap": PriceFlag.OUT_OF_RANGE,
        "low-edge": PriceFlag.OK,
        "high-edge": PriceFlag.OK,
        "dear": PriceFlag.OUT_OF_RANGE,
        "none": PriceFlag.MISSING,
        "empty": PriceFlag.MISSING,
    }
    assert product("cheap").price == Decimal("0.20")
    assert product("none").price is None


def test_it_names_a_missing_required_column_and_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "no-title.csv"
    path.write_text("id,text,category,price\na,Some text,Toys,5\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"no 'title' column \(found: id, text, category, price\)\. Add"):
        run_command(path)
    path.write_text("id,title,category\na,Thing,Toys\n", encoding="utf-8")
    with pytest.raises(CatalogueFormatError, match=r"no 'text' \(or 'description'\) column"):
        products_import(path=path)
    assert not Product.objects.exists()


def test_it_reports_malformed_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.jsonl"
    path.write_bytes(
        b'{"id": "a", "title": "Ok", "text": "Fine.", "category": "Toys", "price": 3}\n'
        b'{"id": "b", "title": "Broken", \n'
        b"\n"
        b'["not", "an", "object"]\n'
        b'{"id": "c", "text": "No title.", "category": "Toys"}\n'
        b'{"id": "d", "title": "Bad \xff", "text": "x", "category": "Toys"}\n'
        b'{"id": "e", "title": "Nul", "text": "a\\u0000b", "category": "Toys"}\n'
        b'{"id": "f", "title": "Also ok", "description": ["Para one.", "Para two."], "category": "Toys"}\n'
    )
    errors: list[RowError] = []
    result = products_import(path=path, on_error=errors.append)

    assert [error.line for error in errors] == [2, 4, 5, 6, 7]
    assert errors[0].reason.startswith("malformed JSON")
    assert errors[1].reason == "expected a JSON object, got list"
    assert errors[2].reason == "missing field 'title'"
    assert errors[3].reason.startswith("bad encoding")
    assert "NUL" in errors[4].reason
    assert result.errors == errors
    assert (result.created, result.bad) == (2, 5)
    assert product("f").text == "Also ok\nPara one.\nPara two."


def test_it_keeps_extra_fields(tmp_path: Path) -> None:
    jsonl = write_jsonl(
        tmp_path / "extra.jsonl",
        [
            {
                "id": "x1",
                "title": "Amp",
                "text": "Loud.",
                "category": "Music",
                "details": {"Brand": "Corvex", "Watts": 50},
                "rating": 4.5,
            }
        ],
    )
    csv_path = tmp_path / "extra.csv"
    csv_path.write_text(
        "ID,Title,Description,Category,Color,Note\nx2,Pen,Writes.,Office,Blue,\n", encoding="utf-8"
    )
    products_import(path=jsonl)
    products_import(path=csv_path)
    assert product("x1").extra == {"details": {"Brand": "Corvex", "Watts": 50}, "rating": 4.5}
    assert product("x2").extra == {"color": "Blue"}  # empty cells are not kept
    assert product("x2").text == "Pen\nWrites."
    assert product("x2").source == "extra.csv"


def test_it_stores_curated_text_cut_to_the_configured_length(tmp_path: Path, settings: Any) -> None:
    settings.CATALOGUE_MAX_TEXT_CHARS = 60
    path = write_jsonl(
        tmp_path / "raw.jsonl",
        [
            {
                "id": "k1",
                "title": "Kessler Espresso Machine XR4821B",
                "text": 'Pulls   shots. "Batteries Required?": "No" Item model number KS90210Z. '
                + "crema " * 30,
                "category": "Appliances",
                "price": "$349.00",
            }
        ],
    )
    run_command(path)
    stored = product("k1")
    assert stored.title == "Kessler Espresso Machine"
    assert stored.text.startswith("Kessler Espresso Machine\nPulls shots. crema crema")
    assert len(stored.text) <= 60
    assert "Batteries" not in stored.text
    assert "KS90210Z" not in stored.text


def test_it_reports_duplicates_across_chunks_with_the_first_line(tmp_path: Path) -> None:
    rows = list(synthetic.generate_products(10, seed=4))
    rows.append(dict(rows[1], title="Second copy"))  # line 11 repeats line 2's id, chunks later
    result = products_import(path=write_jsonl(tmp_path / "dups.jsonl", rows), chunk_size=3)
    assert result.errors == [RowError(11, f"duplicate id {rows[1]['id']!r} (first seen on line 2); skipped")]
    assert product(rows[1]["id"]).title != "Second copy"
    assert Product.objects.count() == 10


def test_it_imports_in_worker_processes_like_inline(tmp_path: Path) -> None:
    rows = list(synthetic.generate_products(300, seed=9))
    rows[10]["price"] = "free"
    path = write_jsonl(tmp_path / "catalogue.jsonl", rows)
    parallel = products_import(path=path, workers=2, chunk_size=70)
    stored = sorted(Product.objects.values_list("external_id", "title", "text", "price", "split"))
    Product.objects.all().delete()
    inline = products_import(path=path, workers=1, chunk_size=70)

    assert sorted(Product.objects.values_list("external_id", "title", "text", "price", "split")) == stored
    assert _counts(parallel) == _counts(inline) == (299, 0, 0, 1)
    assert (
        parallel.errors
        == inline.errors
        == [RowError(11, "price 'free' is not a number (expected e.g. 12.50 or $1,299.00)")]
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the COPY writer is PostgreSQL's")
@pytest.mark.parametrize("looked_up", [False, True], ids=["copied-at-once", "looked-up-first"])
@pytest.mark.django_db(transaction=True)
def test_it_loses_no_row_when_another_import_stores_one_of_its_new_ids_meanwhile(
    tmp_path: Path, looked_up: bool
) -> None:
    import psycopg

    rows = list(synthetic.generate_products(40, seed=6))
    path = write_jsonl(tmp_path / "catalogue.jsonl", rows)
    params = connection.get_connection_params()
    insert = (
        "INSERT INTO annotation_product (external_id, title, text, category, price_flag, split, source, "
        "extra, created, updated) VALUES (%s, 'Other import', 'Other text', 'Other', '', 'pool', 'other', "
        "'{}', now(), now())"
    )
    if looked_up:
        # A stored id in the first chunk: the second chunk's ids are then looked up before its COPY.
        with psycopg.connect(**params, autocommit=True) as setup:
            setup.execute(insert, [rows[0]["id"]])
    # Another import stores rows[25]'s id and has not committed yet: this import cannot see it, so it
    # sends that id with the new ones, and its COPY waits for the other transaction.
    other = psycopg.connect(**params)
    other.execute(insert, [rows[25]["id"]])
    outcome: dict[str, ImportResult] = {}

    def run_import() -> None:
        try:
            outcome["result"] = products_import(path=path, method="copy", chunk_size=20)
        finally:
            connection.close()  # this thread's own connection

    importer = threading.Thread(target=run_import)
    importer.start()
    with psycopg.connect(**params, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the import never waited for the other transaction"
            time.sleep(0.05)
    other.commit()
    other.close()
    importer.join(timeout=30)

    result = outcome["result"]
    stored_before = 2 if looked_up else 1
    assert (result.created, result.updated, result.unchanged, result.bad) == (
        40 - stored_before,
        stored_before,
        0,
        0,
    )
    assert Product.objects.count() == 40
    for row in (rows[0], rows[25]):  # the later write wins, as with the upsert
        assert (product(row["id"]).title, product(row["id"]).source) == (row["title"], row["source"])


def _counts(result: ImportResult) -> tuple[int, int, int, int]:
    return result.created, result.updated, result.unchanged, result.bad


def test_it_prints_a_summary_and_succeeds_on_a_clean_file(tmp_path: Path) -> None:
    path = synthetic.write_jsonl(tmp_path / "clean.jsonl", 30)
    out, err = run_command(path)
    assert out.strip() == f"{path}: 30 imported (30 new, 0 updated, 0 unchanged), 0 bad"
    assert err == ""


def test_it_refuses_a_missing_file_and_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        run_command(tmp_path / "absent.jsonl")
    odd = tmp_path / "catalogue.txt"
    odd.write_text("id\n", encoding="utf-8")
    with pytest.raises(CommandError, match="pass --format jsonl or --format csv"):
        run_command(odd)
