"""The reference "Tester" (DESIGN.md §5): per-item colours, metrics, paired comparison and the gate.

Pure numpy/scipy; no Django. Every result is a plain dataclass with ``to_dict()`` so that the Django
side can store it as JSON unchanged.

    from training.engine.evaluator import evaluate, compare_paired, gate_decide
    metrics = evaluate(truths, guesses)
    cmp = compare_paired(truths, candidate_guesses, champion_guesses)
    decision = gate_decide(cmp, min_delta=1.0, alpha=0.05)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Colour = Literal["green", "orange", "red"]
COLOURS: tuple[Colour, ...] = ("green", "orange", "red")
GateTest = Literal["bootstrap", "wilcoxon"]

# The Tester's thresholds: green if error < $40 or < 20% of truth, orange if < $80 or < 40%.
GREEN_ABS = 40.0
GREEN_REL = 0.2
ORANGE_ABS = 80.0
ORANGE_REL = 0.4

# Bootstrap index matrices are drawn in blocks of at most this many cells, so that a large test split
# with many resamples does not allocate gigabytes at once.
_BOOT_BLOCK_CELLS = 2_000_000


def _relative_error(error: float, truth: float) -> float:
    # A truth of 0 cannot come from the curated catalogue (prices start at 0.50), but a division by zero
    # must not crash an evaluation: treat the relative error as infinite so only the absolute rule counts.
    return error / truth if truth > 0 else math.inf


def colour(guess: float, truth: float) -> Colour:
    """Colour of one prediction, exactly as the reference Tester: the boundaries are strict (``<``)."""
    error = abs(guess - truth)
    relative = _relative_error(error, truth)
    if error < GREEN_ABS or relative < GREEN_REL:
        return "green"
    if error < ORANGE_ABS or relative < ORANGE_REL:
        return "orange"
    return "red"


def is_green(guess: float, truth: float) -> bool:
    """Whether ``guess`` is within the green tolerance of ``truth`` (the dataset builders' DPO rule)."""
    return colour(guess, truth) == "green"


def _as_pair(truths: Sequence[float], guesses: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truths, dtype=np.float64)
    g = np.asarray(guesses, dtype=np.float64)
    if t.ndim != 1 or g.ndim != 1:
        raise ValueError(f"{what}: truths and guesses must be flat lists of numbers")
    if t.shape != g.shape:
        raise ValueError(f"{what}: {len(t)} truths but {len(g)} guesses; pass one guess per test item")
    if len(t) == 0:
        raise ValueError(f"{what}: no items; the test split is empty")
    if not (np.isfinite(t).all() and np.isfinite(g).all()):
        raise ValueError(f"{what}: truths and guesses must be finite numbers (found NaN or infinity)")
    if (t < 0).any() or (g < 0).any():
        raise ValueError(f"{what}: prices must not be negative (RMSLE takes log1p of them)")
    return t, g


def _bootstrap_means(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``; the same seed gives the same means."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = len(values)
    per_block = max(1, _BOOT_BLOCK_CELLS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_block):
        stop = min(n_boot, start + per_block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Metrics:
    """Tester metrics on one prediction set. ``mae`` is the headline "error"."""

    n: int
    mae: float
    rmsle: float
    hit_rate: float
    counts: dict[str, int]
    mae_ci95: tuple[float, float]
    n_boot: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mae_ci95"] = list(self.mae_ci95)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        """Inverse of ``to_dict`` (for metrics read back from JSON storage)."""
        return cls(**{**data, "mae_ci95": tuple(data["mae_ci95"]), "counts": dict(data["counts"])})


def evaluate(
    truths: Sequence[float], guesses: Sequence[float], *, n_boot: int = 1000, seed: int = 0
) -> Metrics:
    """Score ``guesses`` against ``truths`` (same order): MAE, RMSLE, hit rate, colour counts, 95% CI.

    The interval is a percentile bootstrap of the MAE over items, seeded so that it is reproducible.
    """
    t, g = _as_pair(truths, guesses, "evaluate")
    errors = np.abs(g - t)
    colours = [colour(float(gi), float(ti)) for gi, ti in zip(g, t, strict=True)]
    counts: dict[str, int] = {c: colours.count(c) for c in COLOURS}
    rmsle = float(np.sqrt(np.mean((np.log1p(g) - np.log1p(t)) ** 2)))
    ci = _percentile_interval(_bootstrap_means(errors, n_boot=n_boot, seed=seed), 0.95)
    return Metrics(
        n=len(t),
        mae=float(errors.mean()),
        rmsle=rmsle,
        hit_rate=counts["green"] / len(t),
        counts=counts,
        mae_ci95=ci,
        n_boot=n_boot,
        seed=seed,
    )


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs champion on the same items.

    ``mae_delta`` = champion MAE − candidate MAE (positive: the candidate is better); ``ci95`` is its
    paired bootstrap interval.
    """

    n: int
    mae_candidate: float
    mae_champion: float
    mae_delta: float
    ci95: tuple[float, float]
    p_bootstrap: float
    p_wilcoxon: float
    hit_rate_candidate: float
    hit_rate_champion: float
    n_boot: int = 2000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def _wilcoxon_less(candidate_errors: np.ndarray, champion_errors: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value for "candidate errors are smaller"."""
    from scipy.stats import wilcoxon  # scipy.stats is slow to import; only the gate needs it

    if not np.any(candidate_errors != champion_errors):
        # No item differs: there is no evidence either way (scipy would raise on all-zero differences).
        return 1.0
    result = wilcoxon(candidate_errors, champion_errors, alternative="less")
    return float(result.pvalue)


def compare_paired(
    truths: Sequence[float],
    candidate: Sequence[float],
    champion: Sequence[float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of two prediction sets on the same test items (the gate's evidence).

    ``p_bootstrap`` is one-sided: the share of item resamples in which the candidate is not better
    (delta ≤ 0); its resolution is ``1 / n_boot``. ``p_wilcoxon`` is the signed-rank test on the
    per-item absolute errors with the alternative that the candidate's are smaller.
    """
    t, cand = _as_pair(truths, candidate, "compare_paired (candidate)")
    _, champ = _as_pair(truths, champion, "compare_paired (champion)")
    cand_err = np.abs(cand - t)
    champ_err = np.abs(champ - t)
    # Resampling the per-item differences keeps the pairing: both models are scored on the same items.
    diffs = champ_err - cand_err
    boot = _bootstrap_means(diffs, n_boot=n_boot, seed=seed)
    return PairedComparison(
        n=len(t),
        mae_candidate=float(cand_err.mean()),
        mae_champion=float(champ_err.mean()),
        mae_delta=float(diffs.mean()),
        ci95=_percentile_interval(boot, 0.95),
        p_bootstrap=float(np.mean(boot <= 0.0)),
        p_wilcoxon=_wilcoxon_less(cand_err, champ_err),
        hit_rate_candidate=_hit_rate(t, cand),
        hit_rate_champion=_hit_rate(t, champ),
        n_boot=n_boot,
        seed=seed,
    )


def _hit_rate(t: np.ndarray, g: np.ndarray) -> float:
    return sum(is_green(float(gi), float(ti)) for gi, ti in zip(g, t, strict=True)) / len(t)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the promotion gate: ``promote`` plus one reason per criterion and the numbers used."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_decide(
    comparison: PairedComparison, *, min_delta: float, alpha: float, test: GateTest = "bootstrap"
) -> GateDecision:
    """DESIGN.md §5: promote iff the candidate's MAE is lower by at least ``min_delta`` (and lower at
    all), the chosen paired test is significant (p < ``alpha``), and its hit rate is not lower.

    Every criterion is checked and reported, so a rejected version shows all the reasons it failed.
    """
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be ≥ 0 dollars, got {min_delta}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    if test not in ("bootstrap", "wilcoxon"):
        raise ValueError(f"test must be 'bootstrap' or 'wilcoxon', got {test!r}")
    c = comparison
    p_value = c.p_bootstrap if test == "bootstrap" else c.p_wilcoxon

    # "Lower by at least min_delta" with min_delta = 0 must still mean strictly lower.
    mae_ok = c.mae_delta > 0 and c.mae_delta >= min_delta
    significant = p_value < alpha
    hit_ok = c.hit_rate_candidate >= c.hit_rate_champion

    # No resample at or below zero means p < 1/n_boot, not p = 0: say so on the reviewer's screen.
    p_text = f"< {1 / c.n_boot:g}" if test == "bootstrap" and p_value == 0 else f"= {p_value:.4g}"
    reasons = [
        f"{'ok' if mae_ok else 'fail'}: MAE ${c.mae_candidate:.2f} vs champion ${c.mae_champion:.2f} "
        f"(improvement ${c.mae_delta:.2f}, required ≥ ${min_delta:.2f})",
        f"{'ok' if significant else 'fail'}: {test} p {p_text} "
        f"({'<' if significant else '≥'} alpha {alpha:g})",
        f"{'ok' if hit_ok else 'fail'}: hit rate {c.hit_rate_candidate:.1%} vs champion "
        f"{c.hit_rate_champion:.1%} ({'not lower' if hit_ok else 'lower'})",
    ]
    numbers: dict[str, Any] = {
        "mae_candidate": c.mae_candidate,
        "mae_champion": c.mae_champion,
        "mae_delta": c.mae_delta,
        "mae_delta_ci95": list(c.ci95),
        "min_delta": min_delta,
        "test": test,
        "p_value": p_value,
        "p_bootstrap": c.p_bootstrap,
        "p_wilcoxon": c.p_wilcoxon,
        "alpha": alpha,
        "hit_rate_candidate": c.hit_rate_candidate,
        "hit_rate_champion": c.hit_rate_champion,
        "n": c.n,
        "checks": {"mae": mae_ok, "significant": significant, "hit_rate": hit_ok},
    }
    return GateDecision(promote=mae_ok and significant and hit_ok, reasons=reasons, numbers=numbers)


def iqr_ratio(guesses: Sequence[float], truths: Sequence[float]) -> float:
    """Spread of the guesses: their interquartile range over the true prices' (1.0: as spread out as the
    prices; near 0: one price for everything)."""
    g, t = statistics.quantiles(guesses, n=4), statistics.quantiles(truths, n=4)
    return (g[2] - g[0]) / (t[2] - t[0])


def colours_of(truths: Sequence[float], guesses: Sequence[float]) -> Iterator[Colour]:
    """Colour of each (guess, truth) pair, in order (used by the scatter chart)."""
    for g, t in zip(guesses, truths, strict=True):
        yield colour(float(g), float(t))
