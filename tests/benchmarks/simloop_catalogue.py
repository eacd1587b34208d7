"""The simulation's catalogue: curated and split as the import does, then seed set, gold set, slices.

Part of tests/benchmarks/simulate_loop.py (see there for how it runs).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotation.catalogue.reader import RowError, read_products  # noqa: E402  (pure Python, no Django)

# Codebook v1 (webapp/demo/codebook_v1.md): accept when the guess is within about 20%, or $40 for cheap
# items — the evaluator's green band (DESIGN.md §5).
GREEN_ABS = 40.0
GREEN_REL = 0.20


# --- the catalogue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str
    text: str  # curated exactly as the import curates it: what annotators and the model see
    price: float | None
    trainable: bool  # a usable price (0.50–999.49): the server scores and trains on these only
    raw: dict[str, Any]


def read_items(path: Path, *, test_fraction: float, max_text_chars: int) -> tuple[list[Item], list[Item]]:
    """(test items, pool items) of a catalogue file, curated and split as the import does."""
    raw: dict[str, dict[str, Any]] = {}
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                obj = json.loads(line)
                raw[str(obj.get("id", "")).strip()] = obj
    test: list[Item] = []
    pool: list[Item] = []
    with path.open("rb") as handle:
        for row in read_products(handle, "jsonl", test_fraction=test_fraction, max_text_chars=max_text_chars):
            if isinstance(row, RowError):
                print(f"skipping {path.name} {row}", file=sys.stderr)
                continue
            price = float(row.price) if row.price is not None else None
            item = Item(row.external_id, row.text, price, price is not None and not row.price_flag,
                        raw[row.external_id])  # fmt: skip
            (test if row.split == "test" else pool).append(item)
    return test, pool


def _order(items: Sequence[Item], seed: int, salt: str) -> list[Item]:
    """A seeded, stable order: the same file and seed give the same seed set, gold set and slices."""
    return sorted(items, key=lambda i: hashlib.sha256(f"{seed}:{salt}:{i.id}".encode()).hexdigest())


@dataclass
class Plan:
    test: list[Item]
    seed: list[Item]
    gold: list[Item]
    slices: list[list[Item]]

    @property
    def by_id(self) -> dict[str, Item]:
        items = self.test + self.seed + self.gold + [i for s in self.slices for i in s]
        return {i.id: i for i in items}


def plan_catalogue(test: list[Item], pool: list[Item], cfg: Any) -> Plan:
    """Seed set, gold set, and one slice of unlabelled pool items per round (``cfg``: the simulation's
    ``Config``)."""
    priced = _order([i for i in pool if i.trainable], cfg.seed, "seed")
    seed = priced[: cfg.seed_size]
    rest = [i for i in _order(pool, cfg.seed, "pool") if i not in seed]
    # Gold from the dearer items: below $200 the codebook's $40 allowance makes the green band wide
    # enough for random prices to pass a gold item too often to catch a spammer.
    gold_pool = [i for i in rest if i.trainable and (i.price or 0) >= cfg.gold_min_price]
    if len(gold_pool) < cfg.gold_size:
        gold_pool = sorted((i for i in rest if i.trainable), key=lambda i: -(i.price or 0))
    gold = gold_pool[: cfg.gold_size]
    gold_ids = {i.id for i in gold}
    stream = [i for i in rest if i.id not in gold_ids]
    need = cfg.rounds * cfg.labels_per_round
    if len(stream) < need:
        raise SystemExit(
            f"--items {cfg.items.name}: the pool holds {len(stream)} items after the seed ({len(seed)}) and "
            f"gold ({len(gold)}) sets, fewer than --rounds x --labels-per-round = {need}; "
            "lower one of them or use a bigger file."
        )
    n = cfg.labels_per_round
    slices = [stream[r * n : (r + 1) * n] for r in range(cfg.rounds)]
    return Plan(test=test, seed=seed, gold=gold, slices=slices)


def jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def import_row(item: Item, *, with_price: bool) -> dict[str, Any]:
    row = {k: v for k, v in item.raw.items() if k != "price"}
    if with_price and item.price is not None:
        row["price"] = item.raw.get("price")
    return row


def gold_tolerance(price: float) -> float:
    """The codebook's green band at this price, as a share of it (what a careful annotator accepts)."""
    return round(max(GREEN_REL, GREEN_ABS / price), 4)
