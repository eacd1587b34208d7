"""Catalogue and label plumbing shared by the offline benchmarks (offline_recipe_search.py,
fp8_agreement.py, base_seed_variance.py): read a catalogue, split it as the platform does, and write
correct labels as the SFT file the engine trains on. Not run by itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_catalogue(
    path: str | Path | None, *, synthetic: int | None = None, seed: int = 7
) -> list[dict[str, Any]]:
    """The catalogue file's records, or ``synthetic`` generated products (the demo's generator)."""
    if path:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    from training.engine.synthetic import generate_products

    return list(generate_products(int(synthetic or 0), seed=seed))


def split(
    items: list[dict[str, Any]], test_share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(test, pool) of the items whose price is trainable, by the platform's stable hash of the id."""
    from training.engine.prompts import price_trainable
    from training.engine.split import in_holdout

    usable = [i for i in items if price_trainable(float(i["price"]))]
    return (
        [i for i in usable if in_holdout(i["id"], test_share)],
        [i for i in usable if not in_holdout(i["id"], test_share)],
    )


def write_sft(
    labelled: list[dict[str, Any]], out: Path, *, test_ids: set[str], tokenizer: Any, max_length: int
) -> None:
    """``labelled`` items' true prices as correct labels, in the engine's SFT format (``build_sft``)."""
    from training.engine.datasets import LabelRow, build_sft
    from training.engine.prompts import COMPLETION_RESERVE

    rows = [
        LabelRow(i["id"], i["text"], float(i["price"]), guess_price=None, verdict="correct") for i in labelled
    ]
    build_sft(
        rows, out, test_ids=test_ids, tokenizer=tokenizer, max_prompt_tokens=max_length - COMPLETION_RESERVE
    )
