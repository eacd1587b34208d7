"""The command line: each subcommand runs alone on files (in-process, on the tiny base)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.engine.cli import build_parser, main, split_items
from training.engine.split import in_holdout


def test_every_recipe_field_is_a_train_flag_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "--train.learning_rate" in out
    assert "--quant.mode" in out
    assert "Peak learning rate" in out


def test_the_holdout_is_stable_by_id() -> None:
    items = [{"id": f"p{n}", "text": "x", "price": 1.0} for n in range(1000)]
    train, test = split_items(items, 0.2)
    assert 150 < len(test) < 250
    assert {i["id"] for i in train}.isdisjoint({i["id"] for i in test})
    assert in_holdout("p1", 0.2) == in_holdout("p1", 0.2)


@pytest.mark.slow
def test_it_builds_a_base_from_a_catalogue_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": n, "text": f"Red mug number {n}", "price": 5 + n}) + "\n" for n in range(30)
        )
    )
    assert main(["build-base", "--items", str(items), "--out", str(tmp_path / "base"), "--steps", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2
    assert (tmp_path / "base" / "model.safetensors").is_file()


@pytest.mark.slow
def test_it_predicts_and_evaluates_from_files(
    tmp_path: Path,
    tiny_base: Path,
    sft_run: Any,
    test_items: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = tmp_path / "test.jsonl"
    items.write_text("".join(json.dumps(i) + "\n" for i in test_items[:6]))
    out = tmp_path / "preds.jsonl"
    args = ["--base", str(tiny_base), "--adapter", str(sft_run.result.adapter_dir)]
    assert main(["predict", *args, "--items", str(items), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [i["id"] for i in test_items[:6]]
    assert all(len(r["topk"]) == 3 for r in rows)

    scored = tmp_path / "scored.jsonl"
    pairs = zip(test_items[:6], rows, strict=True)
    scored.write_text(
        "".join(json.dumps({"truth": i["price"], "price": r["price"]}) + "\n" for i, r in pairs)
    )
    capsys.readouterr()
    assert main(["evaluate", "--predictions", str(scored), "--chart", str(tmp_path / "scatter.png")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 6
    assert (tmp_path / "scatter.png").stat().st_size > 0
