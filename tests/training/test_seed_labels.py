"""v1's seed set: a file of {"id", "price"} lines, all or nothing, never the test split, never queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotation.models import SeedLabel, Task
from annotation.services import guesses_record_bulk, tasks_create_for_products
from tests.annotation.queue_helpers import make_products
from training.exceptions import RunStateError
from training.services.bootstrap import seed_labels_import

pytestmark = pytest.mark.django_db


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_it_stores_a_seed_set_and_keeps_its_products_out_of_the_queue(tmp_path: Path) -> None:
    seeded, other = make_products(2, price=None)
    info = seed_labels_import(
        path=_write(tmp_path / "seed.jsonl", [{"id": seeded.external_id, "price": 42.5}])
    )
    assert info["name"] == "seed.jsonl"
    assert info["rows"] == 1
    assert len(str(info["sha256"])) == 64
    assert SeedLabel.objects.get(product=seeded).seed_set == "seed.jsonl"

    guesses_record_bulk(
        rows=[{"product_id": p.id, "price": "40.00"} for p in (seeded, other)], source="model"
    )
    assert tasks_create_for_products(products=[seeded, other]) == 1
    assert list(Task.objects.values_list("product_id", flat=True)) == [other.id]  # seeded: labelled already


def test_it_refuses_the_whole_file_naming_each_bad_line(tmp_path: Path) -> None:
    (pool,) = make_products(1, price=None)
    (test,) = make_products(1, price=None, split="test")
    path = _write(
        tmp_path / "seed.jsonl",
        [
            {"id": pool.external_id, "price": 10},
            "not json",
            {"id": pool.external_id, "price": 5000},
            {"id": "nope", "price": 10},
            {"id": test.external_id, "price": 10},
        ],
    )
    with pytest.raises(RunStateError) as refused:
        seed_labels_import(path=path)
    message = str(refused.value)
    assert "seed.jsonl:2: needs" in message
    assert "seed.jsonl:3: price 5000 is outside 0.50-999.49" in message
    assert "1 id(s) are not imported products (import the catalogue first): 'nope'" in message
    assert (
        f"1 id(s) are in the test split, which is never trained on (remove them): {test.external_id!r}"
        in message
    )
    assert not SeedLabel.objects.exists()  # nothing stored


def test_it_names_every_test_split_id_in_one_refusal(tmp_path: Path) -> None:
    # An operator found 20 named and "… and 12 more": three runs to clean the file.
    tests = make_products(32, price=None, split="test")
    (pool,) = make_products(1, price=None)
    path = _write(tmp_path / "seed.jsonl", [{"id": p.external_id, "price": 10} for p in [pool, *tests]])
    with pytest.raises(RunStateError) as refused:
        seed_labels_import(path=path)
    message = str(refused.value)
    assert "32 id(s) are in the test split" in message
    assert all(repr(p.external_id) in message for p in tests)
    assert "more" not in message
