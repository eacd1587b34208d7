"""Dataset builders: test-split refusal, SFT/DPO/KTO rules, manifest, determinism, loading, replay."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training.engine.datasets import (
    EmptyDatasetError,
    LabelRow,
    TestSplitLeak,
    build_dpo,
    build_kto,
    build_sft,
    load_dataset_jsonl,
    manifest_path_for,
    mix_replay,
    read_manifest,
    verify_dataset,
)
from training.engine.prompts import build_prompt


def _row(pid: str, price: float, guess: float | None, verdict: str, **kw: object) -> LabelRow:
    return LabelRow(
        product_id=pid,
        text=f"Product {pid}: a sturdy thing",
        price=price,
        guess_price=guess,
        verdict=verdict,  # type: ignore[arg-type]
        codebook_version=kw.get("codebook_version", 1),  # type: ignore[arg-type]
        batch_id=kw.get("batch_id", 10),  # type: ignore[arg-type]
        guess_model_version=kw.get("guess_model_version"),  # type: ignore[arg-type]
    )


ROWS = [
    _row("a", 120.0, 120.0, "accept"),
    _row("b", 300.0, 100.0, "correct", batch_id=11),  # error 200: outside green → DPO pair
    _row("c", 110.0, 100.0, "correct", codebook_version=2),  # error 10: inside green → no DPO pair
    _row("d", 50.0, 400.0, "reject"),  # reject: no human price
    _row("e", 1500.0, 200.0, "correct"),  # human price outside 0.50–999.49
    _row("f", 0.2, 20.0, "correct"),  # below the range
]


def _lines(path: Path, *, meta: bool = False) -> list[dict[str, Any]]:
    """The records of a dataset file; without ``meta`` (lineage, never trained on) unless asked."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows if meta else [{k: v for k, v in row.items() if k != "meta"} for row in rows]


def test_it_refuses_a_test_split_item_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"

    for build in (build_sft, build_dpo, build_kto):
        with pytest.raises(TestSplitLeak, match=r"2 test-split product\(s\).*: b, d") as exc:
            build(ROWS, out, test_ids={"d", "b", "zz"})
        assert exc.value.product_ids == ["b", "d"]

    assert list(tmp_path.iterdir()) == []


def test_it_refuses_a_test_item_whose_id_arrives_as_a_number(tmp_path: Path) -> None:
    with pytest.raises(TestSplitLeak, match="42"):
        build_sft([_row("42", 10.0, 10.0, "accept")], tmp_path / "sft.jsonl", test_ids=[42])  # type: ignore[list-item]


def test_it_writes_sft_from_accepted_and_corrected_rows(tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"

    m = build_sft(ROWS, out, test_ids={"t1"})

    assert _lines(out) == sorted(
        [
            {"prompt": build_prompt("Product a: a sturdy thing"), "completion": "120.00"},
            {"prompt": build_prompt("Product b: a sturdy thing"), "completion": "300.00"},
            {"prompt": build_prompt("Product c: a sturdy thing"), "completion": "110.00"},
        ],
        key=lambda r: r["prompt"],
    )
    assert _lines(out)[0]["prompt"] == (
        "How much does this cost to the nearest dollar?\n\nProduct a: a sturdy thing\n\nPrice is $"
    )
    assert m.kind == "sft"
    assert m.rows == 3
    assert m.input_rows == 6
    assert m.excluded == {"price_out_of_range": 2, "reject_without_price": 1}
    assert m.batch_ids == [10, 11]
    assert m.codebook_versions == [1, 2]
    assert m.rule_set == {"name": "priceloop-labels", "version": 1}


def test_it_writes_dpo_only_outside_the_green_tolerance(tmp_path: Path) -> None:
    rows = [
        *ROWS,
        _row("g", 139.0, 100.0, "correct"),  # error 39 < $40: green, no pair
        _row("h", 140.0, 100.0, "correct"),  # error exactly 40 and 40/140 ≈ 0.29: outside green → pair
        _row("i", 900.0, 750.0, "correct"),  # error 150 but 150/900 ≈ 0.17 < 20%: green, no pair
        _row("j", 90.0, None, "correct"),  # blind item: no guess to reject
    ]
    out = tmp_path / "dpo.jsonl"

    m = build_dpo(rows, out, test_ids=set())

    assert [(r["chosen"], r["rejected"]) for r in _lines(out)] == [("300.00", "100.00"), ("140.00", "100.00")]
    assert set(_lines(out)[0]) == {"prompt", "chosen", "rejected"}
    assert m.rows == 2
    assert m.excluded["within_green_tolerance"] == 3  # c, g, i
    assert m.excluded["no_guess"] == 1
    assert m.excluded["accept_not_a_preference"] == 1
    assert m.excluded["reject_not_a_preference"] == 1


def test_it_labels_kto_rows_by_verdict(tmp_path: Path) -> None:
    rows = [
        _row("a", 120.0, 120.0, "accept"),
        _row("d", 50.0, 400.0, "reject"),
        _row("b", 300.0, 100.0, "correct"),
        _row("k", 100.4, 99.6, "correct"),  # both round to 100.00: one string cannot be both labels
    ]
    out = tmp_path / "kto.jsonl"

    m = build_kto(rows, out, test_ids={"zz"})

    got = {(r["prompt"].split("\n\n")[1].split(":")[0], r["completion"], r["label"]) for r in _lines(out)}
    assert got == {
        ("Product a", "120.00", True),
        ("Product d", "400.00", False),
        ("Product b", "300.00", True),
        ("Product b", "100.00", False),
        ("Product k", "100.00", True),
    }
    assert m.labels == {"true": 3, "false": 2}


def test_it_keeps_the_last_label_per_product(tmp_path: Path) -> None:
    rows = [
        _row("a", 120.0, 120.0, "accept"),
        _row("b", 10.0, 10.0, "accept"),
        _row("a", 150.0, 120.0, "correct"),
    ]
    out = tmp_path / "sft.jsonl"

    m = build_sft(rows, out, test_ids=set())

    assert [r["completion"] for r in _lines(out)] == ["150.00", "10.00"]
    assert m.excluded == {"duplicate_product": 1}


def test_it_keeps_the_last_label_per_prompt(tmp_path: Path) -> None:
    same = "Identical listing text"
    rows = [
        LabelRow("p1", same, 20.0, 20.0, "accept"),
        LabelRow("p2", same, 25.0, 20.0, "correct"),
    ]

    m = build_sft(rows, tmp_path / "sft.jsonl", test_ids=set())

    assert [r["completion"] for r in _lines(tmp_path / "sft.jsonl")] == ["25.00"]
    assert m.excluded == {"duplicate_prompt": 1}


def test_it_writes_a_manifest_whose_sha256_matches_the_file(tmp_path: Path) -> None:
    out = tmp_path / "sft.jsonl"

    m = build_sft(ROWS, out, test_ids=set())

    assert manifest_path_for(out) == tmp_path / "sft.manifest.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft.jsonl", "sft.manifest.json"]
    assert m.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert read_manifest(out) == m
    assert json.loads((tmp_path / "sft.manifest.json").read_text())["sha256"] == m.sha256
    assert verify_dataset(out) == m

    out.write_text(out.read_text() + out.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="does not match its manifest"):
        verify_dataset(out)


def test_it_gives_the_same_sha256_for_the_same_rows_in_any_order(tmp_path: Path) -> None:
    a = build_sft(ROWS, tmp_path / "a.jsonl", test_ids=set())
    b = build_sft(list(reversed(ROWS)), tmp_path / "b.jsonl", test_ids=set())
    c = build_sft(ROWS[:2], tmp_path / "c.jsonl", test_ids=set())

    assert a.sha256 == b.sha256
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert c.sha256 != a.sha256


def test_it_refuses_to_write_an_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match="within_green_tolerance=1"):
        build_dpo([_row("c", 110.0, 100.0, "correct")], tmp_path / "dpo.jsonl", test_ids=set())
    assert list(tmp_path.iterdir()) == []


def test_it_round_trips_through_load_dataset_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "kto.jsonl"
    build_kto(ROWS, out, test_ids=set())

    ds = load_dataset_jsonl(out)

    assert ds.column_names == ["prompt", "completion", "label", "meta"]
    assert ds.to_list() == _lines(out, meta=True)
    assert load_dataset_jsonl(manifest_path_for(out)).to_list() == ds.to_list()


def test_it_mixes_a_seeded_replay_share_before_the_new_rows() -> None:
    new = [f"new{i}" for i in range(30)]
    old = [f"old{i}" for i in range(100)]

    mixed = mix_replay(new, old, share=0.25, seed=3)

    assert mixed[-30:] == new  # new rows last: they win over an old label of the same product
    assert len(mixed) == 40  # 10 old = 25% of 40
    assert all(x.startswith("old") for x in mixed[:10])
    assert mix_replay(new, old, share=0.25, seed=3) == mixed
    assert mix_replay(new, old, share=0.25, seed=4) != mixed
    assert mix_replay(new, old[:3], share=0.5, seed=0)[:3] == old[:3]  # capped by what exists
    assert mix_replay(new, old, share=0.0, seed=0) == new
    with pytest.raises(ValueError, match="share"):
        mix_replay(new, old, share=1.0, seed=0)


def test_each_record_names_its_product_batch_and_the_guess_version_without_changing_the_training_text(
    tmp_path: Path,
) -> None:
    rows = [
        _row("a", 120.0, 120.0, "accept", guess_model_version=3),
        _row("b", 300.0, 100.0, "correct", guess_model_version=4, batch_id=11),
        _row("d", 50.0, 400.0, "reject"),  # a baseline's guess: no version
    ]
    for build in (build_sft, build_dpo, build_kto):
        out = tmp_path / f"{build.__name__}.jsonl"
        build(rows, out, test_ids=set())
        records = _lines(out, meta=True)
        by_product = {r["meta"]["product_id"]: r["meta"] for r in records}
        assert by_product.get("b") == {"product_id": "b", "batch_id": 11, "guess_model_version": 4}
        if "a" in by_product:
            assert by_product["a"]["guess_model_version"] == 3
        if "d" in by_product:
            assert by_product["d"]["guess_model_version"] is None
        # the prompts are the builder's own, as without metadata
        assert all(
            r["prompt"] == build_prompt(f"Product {r['meta']['product_id']}: a sturdy thing") for r in records
        )
