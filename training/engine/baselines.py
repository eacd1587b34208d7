"""Built-in baselines shown next to model versions on the leaderboard (DESIGN.md §5).

- ``mean_baseline``: always guesses the training mean (the reference "constant" baseline, $146 there).
- ``tfidf_ridge``: TF-IDF of the product text, ridge regression on log1p(price), predictions clipped to
  the curated price range.

Both return an object with ``.name``, ``.params`` and ``.predict(texts) -> list[float]``; the object is
also callable, so it can be passed wherever a ``predict`` function is expected. Both are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.engine.prompts import PRICE_MAX, PRICE_MIN


def _check_prices(prices: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(prices, dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{what}: need at least one training price")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{what}: training prices must be finite and not negative")
    return arr


@dataclass(frozen=True)
class MeanBaseline:
    """Predicts the mean training price for every text."""

    mean: float
    name: str = "Training mean"
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, texts: Sequence[str]) -> list[float]:
        """One guess (the training mean) per text."""
        return [self.mean] * len(texts)

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return self.predict(texts)


def mean_baseline(train_prices: Sequence[float]) -> MeanBaseline:
    """Fit the constant baseline on the training prices."""
    arr = _check_prices(train_prices, "mean_baseline")
    return MeanBaseline(mean=float(arr.mean()), params={"n_train": len(arr)})


@dataclass(frozen=True)
class TfidfRidgeBaseline:
    """TF-IDF + ridge regression on log1p(price); see ``tfidf_ridge``."""

    pipeline: Any
    name: str = "TF-IDF ridge"
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, texts: Sequence[str]) -> list[float]:
        """One price per text, clipped to the curated range PRICE_MIN..PRICE_MAX."""
        if len(texts) == 0:
            return []
        log_prices = self.pipeline.predict(list(texts))
        # Clip in log space first: an extreme text must not overflow expm1.
        log_prices = np.clip(log_prices, math.log1p(PRICE_MIN), math.log1p(PRICE_MAX))
        return [float(p) for p in np.clip(np.expm1(log_prices), PRICE_MIN, PRICE_MAX)]

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return self.predict(texts)


def tfidf_ridge(
    train_texts: Sequence[str],
    train_prices: Sequence[float],
    *,
    alpha: float = 1.0,
    max_features: int = 50_000,
    ngram_max: int = 2,
    min_df: int = 1,
) -> TfidfRidgeBaseline:
    """Fit TF-IDF (word 1..``ngram_max``-grams, sublinear tf) + Ridge(``alpha``) on log1p(price).

    Regressing the log price matches how errors are perceived (a $20 miss matters more on a $30 item
    than on a $600 one) and keeps the few expensive items from dominating the fit.
    """
    # scikit-learn costs about a second to import; only callers that fit a baseline pay it.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    prices = _check_prices(train_prices, "tfidf_ridge")
    if len(train_texts) != len(prices):
        raise ValueError(f"tfidf_ridge: {len(train_texts)} texts but {len(prices)} prices")
    params = {
        "alpha": alpha,
        "max_features": max_features,
        "ngram_range": [1, ngram_max],
        "min_df": min_df,
        "target": "log1p(price)",
        "n_train": len(prices),
    }
    pipeline = make_pipeline(
        TfidfVectorizer(
            max_features=max_features, ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True
        ),
        # The solvers chosen for sparse input are deterministic; random_state pins the stochastic ones.
        Ridge(alpha=alpha, random_state=0),
    )
    pipeline.fit(list(train_texts), np.log1p(prices))
    return TfidfRidgeBaseline(pipeline=pipeline, params=params)
