"""Engine fixtures: one tiny base model and one SFT run per test session (CPU, seconds).

Everything is built from the deterministic synthetic catalogue under ``tmp_path_factory``, so the tests
need no downloads and no shared files.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from training.engine.config import Recipe, load_recipe
from training.engine.datasets import LabelRow, Verdict, build_dpo, build_kto, build_sft
from training.engine.prompts import COMPLETION_RESERVE
from training.engine.synthetic import generate_products

CATALOGUE_SIZE = 160
TEST_SHARE = 40  # the last items play the frozen test split


@pytest.fixture(scope="session")
def one_torch_thread() -> None:
    """The tiny model's matmuls are too small to gain from threads; on a busy 2-core CI box a second
    thread only adds contention (measured: 0.15 s vs 0.6-1.9 s per training step)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def catalogue() -> list[dict[str, Any]]:
    return list(generate_products(CATALOGUE_SIZE, seed=0))


@pytest.fixture(scope="session")
def pool_items(catalogue: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return catalogue[:-TEST_SHARE]


@pytest.fixture(scope="session")
def test_items(catalogue: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return catalogue[-TEST_SHARE:]


@pytest.fixture(scope="session")
def tiny_base(
    tmp_path_factory: pytest.TempPathFactory, pool_items: list[dict[str, Any]], one_torch_thread: None
) -> Path:
    from training.engine.bootstrap import build_base

    return build_base(pool_items, tmp_path_factory.mktemp("base") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_base: Path) -> Any:
    from training.engine.model_io import load_tokenizer

    return load_tokenizer(tiny_base)


@pytest.fixture(scope="session")
def tiny_recipe(tiny_base: Path) -> Recipe:
    # Eight steps: the engine tests check mechanics, not what the model learns.
    return load_recipe("tiny", {"model.base": str(tiny_base), "train.max_steps": 8})


def label_rows(items: list[dict[str, Any]]) -> list[LabelRow]:
    """Accepts, corrections far from the guess (DPO material) and rejects, deterministically."""
    rows = []
    for n, item in enumerate(items):
        price = float(item["price"])
        verdicts: tuple[Verdict, ...] = ("accept", "correct", "reject")
        verdict = verdicts[n % 3]
        guess = price if verdict == "accept" else min(999.0, price * 2.5 + 50)
        rows.append(
            LabelRow(
                product_id=str(item["id"]),
                text=item["text"],
                price=price,
                guess_price=guess,
                verdict=verdict,
                codebook_version=1,
                batch_id=1,
            )
        )
    return rows


@pytest.fixture(scope="session")
def datasets_dir(
    tmp_path_factory: pytest.TempPathFactory,
    pool_items: list[dict[str, Any]],
    test_items: list[dict[str, Any]],
    tokenizer: Any,
    tiny_recipe: Recipe,
) -> Path:
    folder = tmp_path_factory.mktemp("datasets")
    rows = label_rows(pool_items)
    options = {
        "test_ids": {str(i["id"]) for i in test_items},
        "tokenizer": tokenizer,
        "max_prompt_tokens": tiny_recipe.train.max_length - COMPLETION_RESERVE,
    }
    build_sft(rows, folder / "sft.jsonl", **options)
    build_dpo(rows, folder / "dpo.jsonl", **options)
    build_kto(rows, folder / "kto.jsonl", **options)
    return folder


@dataclass
class WeightWatch:
    """A TrainerCallback-compatible probe: snapshots parameters at the start, compares at the end."""

    before: dict[str, Any] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    unchanged: set[str] = field(default_factory=set)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        import torch

        for name, param in model.named_parameters():
            same = torch.equal(self.before[name], param.detach())
            (self.unchanged if same else self.changed).add(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):  # every other Trainer event: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)


@dataclass
class SftRun:
    result: Any
    events: list[Any]
    watch: WeightWatch


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory: pytest.TempPathFactory, tiny_recipe: Recipe, datasets_dir: Path) -> SftRun:
    from training.engine.trainer import train

    events: list[Any] = []
    watch = WeightWatch()
    result = train(
        tiny_recipe,
        datasets_dir / "sft.jsonl",
        tmp_path_factory.mktemp("runs") / "sft",
        progress=events.append,
        callbacks=[watch],
    )
    return SftRun(result=result, events=events, watch=watch)


@dataclass
class HostReads:
    """Tensor reads back to the host (``item``, ``tolist``, ``bool``: on a GPU each waits for the device to
    drain) made while ``counting`` is on, by the file of the code that made them."""

    counting: bool = False
    origins: Counter[str] = field(default_factory=Counter)

    def counted(self, original: Any) -> Any:
        def read(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.origins[Path(traceback.extract_stack(limit=2)[0].filename).name] += 1
            return original(tensor, *args, **kwargs)

        return read


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> HostReads:
    import torch

    reads = HostReads()
    for name in ("item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, reads.counted(getattr(torch.Tensor, name)))
    return reads
