"""Built-in baselines: the training mean and TF-IDF ridge on log price."""

from __future__ import annotations

import random

import pytest

from training.engine.baselines import mean_baseline, tfidf_ridge
from training.engine.evaluator import evaluate

# Each kind of product has its own price level; the words of the text say which kind it is.
KINDS = {
    "usb cable": 8.0,
    "desk lamp": 35.0,
    "office chair": 180.0,
    "laptop stand": 60.0,
    "espresso machine": 650.0,
}
FILLER = ["black", "white", "steel", "compact", "durable", "premium", "new", "2-pack", "classic", "modern"]


def _catalogue(n: int, seed: int) -> tuple[list[str], list[float]]:
    rng = random.Random(seed)
    texts, prices = [], []
    for _ in range(n):
        kind, level = rng.choice(sorted(KINDS.items()))
        texts.append(" ".join([*rng.sample(FILLER, 3), kind, *rng.sample(FILLER, 2)]))
        prices.append(round(level * rng.uniform(0.8, 1.25), 2))
    return texts, prices


def test_it_predicts_the_training_mean_for_every_text() -> None:
    baseline = mean_baseline([10.0, 20.0, 60.0])

    assert baseline.name == "Training mean"
    assert baseline.predict(["anything", "else"]) == [30.0, 30.0]
    assert baseline(["x"]) == [30.0]  # also usable as a plain predict function


def test_it_beats_the_mean_with_tfidf_ridge_when_words_carry_the_price() -> None:
    train_texts, train_prices = _catalogue(400, seed=0)
    test_texts, test_prices = _catalogue(100, seed=1)

    mean = mean_baseline(train_prices)
    ridge = tfidf_ridge(train_texts, train_prices)
    mean_mae = evaluate(test_prices, mean.predict(test_texts), n_boot=10).mae
    ridge_mae = evaluate(test_prices, ridge.predict(test_texts), n_boot=10).mae

    assert ridge.name == "TF-IDF ridge"
    assert ridge_mae < mean_mae / 3
    # Deterministic: a second fit predicts exactly the same prices.
    assert tfidf_ridge(train_texts, train_prices).predict(test_texts) == ridge.predict(test_texts)


def test_it_clips_ridge_predictions_to_the_curated_range() -> None:
    texts = ["gold yacht"] * 5 + ["paper clip"] * 5
    ridge = tfidf_ridge(texts, [5000.0] * 5 + [0.01] * 5, alpha=0.01)

    low, high = ridge.predict(["paper clip", "gold yacht"])

    assert low == pytest.approx(0.5)
    assert high == pytest.approx(999.49)
    assert ridge.predict([]) == []


def test_it_refuses_bad_training_prices() -> None:
    with pytest.raises(ValueError, match="at least one"):
        mean_baseline([])
    with pytest.raises(ValueError, match="not negative"):
        tfidf_ridge(["a", "b"], [1.0, -2.0])
    with pytest.raises(ValueError, match="2 texts but 1 prices"):
        tfidf_ridge(["a", "b"], [1.0])
