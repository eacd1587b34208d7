"""The soft price loss (``train.price_sigma``): a near miss costs less than a far one, and a recipe that
sets it trains with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.engine.config import Recipe, RecipeError, load_recipe
from training.engine.price_loss import IGNORE_INDEX, price_loss_func
from training.engine.trainer import ProgressEvent, train

pytestmark = pytest.mark.slow


def _batch(tokenizer: Any, guess: int, label: int) -> tuple[Any, Any]:
    """One row: three prompt tokens, then the completion ``label`` "." "00". At the price position the
    logits are a bump around ``guess`` (±10% in price, as an unsure model's are); elsewhere they put all
    their weight on the right token."""
    numbers = torch.tensor([tokenizer.convert_tokens_to_ids(str(n)) for n in range(1000)])
    dot, zeros = tokenizer.convert_tokens_to_ids("."), tokenizer.convert_tokens_to_ids("00")
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, int(numbers[label]), dot, zeros]])
    logits = torch.full((1, 6, len(tokenizer)), -30.0)
    distance = torch.log1p(torch.arange(1000.0)) - torch.log1p(torch.tensor(float(guess)))
    logits[0, 2, numbers] = -(distance**2) / (2 * 0.1**2)  # position 2 predicts the price (token 3)
    logits[0, 3, dot] = 12.0
    logits[0, 4, zeros] = 12.0
    return type("Out", (), {"logits": logits})(), labels


def test_a_near_miss_costs_far_less_than_a_far_one(tokenizer: Any) -> None:
    soft = price_loss_func(tokenizer, sigma=0.3)
    near, far, right = _batch(tokenizer, 128, 129), _batch(tokenizer, 7, 129), _batch(tokenizer, 129, 129)
    assert soft(*right) < soft(*near) < soft(*far) - 1.0


def test_it_prefers_a_spread_around_the_price_to_all_weight_on_one_token(tokenizer: Any) -> None:
    """What plain cross-entropy cannot do: it scores a bet on the exact token best, so a label teaches
    one class of 1,000; the soft target rewards weight on the neighbours too."""
    out, labels = _batch(tokenizer, 129, 129)
    peaked = type("Out", (), {"logits": out.logits.clone()})()
    peaked.logits[0, 2] = -30.0
    peaked.logits[0, 2, int(labels[0, 3])] = 30.0

    def plain(o: Any) -> float:
        return float(torch.nn.functional.cross_entropy(o.logits[0, 2:3], labels[0, 3:4]))

    assert plain(peaked) < plain(out)
    soft = price_loss_func(tokenizer, sigma=0.3)
    assert soft(out, labels) < soft(peaked, labels)


def test_it_refuses_a_width_outside_its_range() -> None:
    with pytest.raises(RecipeError, match=r"train\.price_sigma=-0\.1"):
        load_recipe("tiny", {"train.price_sigma": -0.1})
    with pytest.raises(RecipeError, match=r"train\.price_sigma=5"):
        load_recipe("tiny", {"train.price_sigma": 5})


def _first_loss(recipe: Recipe, dataset: Path, out: Path, sigma: float) -> float:
    events: list[ProgressEvent] = []
    short = load_recipe(
        "tiny",
        {"model.base": recipe.model.base, "train.max_steps": 1, "train.price_sigma": sigma},
    )
    train(short, dataset, out, progress=events.append)
    assert events[0].loss is not None
    return events[0].loss


def test_a_recipe_with_a_width_trains_with_the_soft_term(
    tmp_path: Path, tiny_recipe: Recipe, datasets_dir: Path
) -> None:
    plain = _first_loss(tiny_recipe, datasets_dir / "sft.jsonl", tmp_path / "plain", 0.0)
    soft = _first_loss(tiny_recipe, datasets_dir / "sft.jsonl", tmp_path / "soft", 0.3)
    # Same batch, same weights: the soft term (a cross-entropy, > 0) is added to the plain loss.
    assert soft > plain + 0.1


def test_the_spread_ratio_is_one_for_the_prices_themselves_and_zero_for_one_price() -> None:
    from training.engine.evaluator import iqr_ratio

    truths = [5.0, 20.0, 40.0, 80.0, 150.0, 300.0, 600.0]
    assert iqr_ratio(truths, truths) == pytest.approx(1.0)
    assert iqr_ratio([17.5] * len(truths), truths) == 0.0
    assert iqr_ratio([t / 2 for t in truths], truths) == pytest.approx(0.5)
