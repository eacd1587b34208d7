"""The reference Tester: hand-computed metrics, colour boundaries, paired tests, the gate, charts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from training.engine.charts import podium_chart, scatter_chart
from training.engine.evaluator import (
    GateTest,
    Metrics,
    colour,
    compare_paired,
    evaluate,
    gate_decide,
)

# A fixed set, worked out by hand:
#   truth  guess  error  rule                                   colour
#   100    130     30    30 < 40                                green
#   200    150     50    50 ≥ 40, 50/200 = 0.25 ≥ 0.2; 50 < 80  orange
#    50    150    100    100 ≥ 80, 100/50 = 2.0 ≥ 0.4           red
#    10     12      2    2 < 40                                 green
#   400    200    200    200 ≥ 80, 200/400 = 0.5 ≥ 0.4          red
TRUTHS = [100.0, 200.0, 50.0, 10.0, 400.0]
GUESSES = [130.0, 150.0, 150.0, 12.0, 200.0]


def test_it_computes_tester_metrics_equal_to_hand_values() -> None:
    m = evaluate(TRUTHS, GUESSES)

    assert m.n == 5
    # (30 + 50 + 100 + 2 + 200) / 5 = 382 / 5
    assert m.mae == pytest.approx(76.4, abs=1e-12)
    assert m.counts == {"green": 2, "orange": 1, "red": 2}
    assert m.hit_rate == pytest.approx(0.4)
    # sqrt(mean(ln(131/101)², ln(151/201)², ln(151/51)², ln(13/11)², ln(201/401)²))
    #   squares: 0.0676399, 0.0818103, 1.1782108, 0.0279071, 0.4770064 → mean 0.3655149 → sqrt
    assert m.rmsle == pytest.approx(0.6054047589, abs=1e-9)
    low, high = m.mae_ci95
    assert 2.0 <= low <= m.mae <= high <= 200.0


def test_it_gives_a_zero_width_interval_when_every_error_is_the_same() -> None:
    m = evaluate([100.0, 200.0, 300.0], [110.0, 190.0, 310.0])

    assert m.mae == 10.0
    assert m.mae_ci95 == (10.0, 10.0)


def test_it_reproduces_the_interval_with_the_same_seed() -> None:
    rng = np.random.default_rng(1)
    truths = rng.uniform(1, 900, 300).tolist()
    guesses = (np.array(truths) * rng.uniform(0.5, 1.5, 300)).tolist()

    a = evaluate(truths, guesses, n_boot=500, seed=7)
    b = evaluate(truths, guesses, n_boot=500, seed=7)

    assert a.mae_ci95 == b.mae_ci95
    assert a.mae_ci95[0] < a.mae < a.mae_ci95[1]
    assert Metrics.from_dict(json.loads(json.dumps(a.to_dict()))) == a


@pytest.mark.parametrize(
    ("guess", "truth", "expected"),
    [
        (139.99, 100.0, "green"),  # error 39.99 < 40
        (140.0, 100.0, "orange"),  # error exactly 40, 40/100 = 0.4: neither green rule holds
        (60.0, 100.0, "orange"),  # the same below the truth
        (340.0, 300.0, "green"),  # error 40 but 40/300 ≈ 0.13 < 0.2
        (1199.0, 1000.0, "green"),  # error 199 ≥ 40 but 0.199 < 0.2
        (1200.0, 1000.0, "orange"),  # error 200 = exactly 20% of the truth
        (179.99, 100.0, "orange"),  # error 79.99 < 80
        (180.0, 100.0, "red"),  # error exactly 80, 0.8 ≥ 0.4
        (1399.0, 1000.0, "orange"),  # error 399 ≥ 80 but 0.399 < 0.4
        (1400.0, 1000.0, "red"),  # error 400 = exactly 40% of the truth
        (5.0, 0.0, "green"),  # a zero truth falls back on the absolute rule instead of dividing by zero
    ],
)
def test_it_colours_boundaries_exactly_as_the_tester(guess: float, truth: float, expected: str) -> None:
    assert colour(guess, truth) == expected


def test_it_refuses_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="3 truths but 2 guesses"):
        evaluate([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no items"):
        evaluate([], [])
    with pytest.raises(ValueError, match="finite"):
        evaluate([1.0], [math.nan])


def test_it_computes_a_paired_comparison_by_hand() -> None:
    truths = [100.0, 100.0, 100.0, 100.0]
    candidate = [110.0, 95.0, 100.0, 120.0]  # errors 10, 5, 0, 20 → MAE 8.75, all green
    champion = [130.0, 80.0, 100.0, 150.0]  # errors 30, 20, 0, 50 → MAE 25, 50 is orange

    c = compare_paired(truths, candidate, champion, n_boot=4000, seed=0)

    assert c.mae_candidate == 8.75
    assert c.mae_champion == 25.0
    assert c.mae_delta == 16.25
    assert c.hit_rate_candidate == 1.0
    assert c.hit_rate_champion == 0.75
    # Wilcoxon drops the zero difference; the 3 others all favour the candidate: exact p = 1/2³.
    assert c.p_wilcoxon == pytest.approx(0.125)
    # A resample shows no improvement only if it draws the tied item 4 times: (1/4)⁴ = 1/256 ≈ 0.0039.
    assert 0.0 < c.p_bootstrap < 0.01


def _synthetic(n: int = 200, seed: int = 0) -> tuple[list[float], list[float], list[float]]:
    rng = np.random.default_rng(seed)
    truths = rng.uniform(5, 900, n)
    good = truths + rng.normal(0, 10, n)
    bad = truths + rng.normal(0, 60, n)
    return truths.tolist(), np.abs(good).tolist(), np.abs(bad).tolist()


def test_it_finds_a_clearly_better_candidate_significant() -> None:
    truths, good, bad = _synthetic()

    c = compare_paired(truths, good, bad, n_boot=2000, seed=0)

    assert c.mae_delta > 20
    assert c.ci95[0] > 0
    assert c.p_bootstrap < 0.01
    assert c.p_wilcoxon < 0.01


def test_it_finds_no_evidence_for_an_identical_candidate() -> None:
    truths, good, _ = _synthetic()

    c = compare_paired(truths, good, list(good))

    assert c.mae_delta == 0.0
    assert c.p_bootstrap >= 0.5
    assert c.p_wilcoxon >= 0.5


def test_it_promotes_a_clearly_better_candidate() -> None:
    truths, good, bad = _synthetic()

    d = gate_decide(compare_paired(truths, good, bad), min_delta=1.0, alpha=0.05)

    assert d.promote is True
    assert d.numbers["checks"] == {"mae": True, "significant": True, "hit_rate": True}
    assert all(r.startswith("ok") for r in d.reasons)
    json.dumps(d.to_dict())  # stored as JSON by the Django side


def test_it_never_shows_a_bootstrap_p_of_zero() -> None:
    # Not one of the 1,000 resampled mean differences is ≤ 0: the reviewer reads "p < 0.001", not "p = 0".
    truths, good, bad = _synthetic()

    c = compare_paired(truths, good, bad, n_boot=1000, seed=0)
    d = gate_decide(c, min_delta=1.0, alpha=0.05)

    assert c.p_bootstrap == 0.0
    assert "ok: bootstrap p < 0.001 (< alpha 0.05)" in d.reasons
    assert d.numbers["p_value"] == 0.0  # the stored figure stays the raw share of resamples


@pytest.mark.parametrize("test", ["bootstrap", "wilcoxon"])
def test_it_rejects_a_worse_candidate(test: GateTest) -> None:
    truths, good, bad = _synthetic()

    d = gate_decide(compare_paired(truths, bad, good), min_delta=0.0, alpha=0.05, test=test)

    assert d.promote is False
    assert d.numbers["checks"]["mae"] is False
    assert d.numbers["checks"]["significant"] is False


def test_it_rejects_an_insignificant_improvement() -> None:
    truths = [100.0] * 40
    champion = [110.0] * 40  # error 10 everywhere
    candidate = [105.0] + [110.0] * 39  # one item better by $5: MAE lower by 0.125, but 1 of 40 items

    d = gate_decide(compare_paired(truths, candidate, champion), min_delta=0.0, alpha=0.05)

    assert d.promote is False
    assert d.numbers["checks"] == {"mae": True, "significant": False, "hit_rate": True}


def test_it_rejects_an_improvement_smaller_than_min_delta() -> None:
    truths, good, bad = _synthetic()

    c = compare_paired(truths, good, bad)
    d = gate_decide(c, min_delta=c.mae_delta + 1, alpha=0.05)

    assert d.promote is False
    assert d.numbers["checks"]["mae"] is False


def test_it_rejects_a_lower_mae_with_a_lower_hit_rate() -> None:
    truths = [100.0] * 100
    champion = [139.0] * 100  # error 39 everywhere: MAE 39, every item green
    candidate = [100.0] * 90 + [145.0] * 10  # MAE 4.5, but 10 items orange (error 45)

    d = gate_decide(compare_paired(truths, candidate, champion), min_delta=1.0, alpha=0.05)

    assert d.numbers["checks"] == {"mae": True, "significant": True, "hit_rate": False}
    assert d.promote is False
    assert any("hit rate 90.0% vs champion 100.0%" in r for r in d.reasons)


def test_it_refuses_nonsense_gate_settings() -> None:
    c = compare_paired([100.0, 200.0], [100.0, 200.0], [110.0, 210.0])
    with pytest.raises(ValueError, match="alpha"):
        gate_decide(c, min_delta=1.0, alpha=5)
    with pytest.raises(ValueError, match="min_delta"):
        gate_decide(c, min_delta=-1.0, alpha=0.05)


def test_it_draws_scatter_and_podium_pngs(tmp_path: Path) -> None:
    scatter = scatter_chart(TRUTHS, GUESSES, tmp_path / "charts" / "scatter.png", title="v3")
    podium = podium_chart(
        [
            {"name": "v3", "mae": 47.0, "ci_low": 42.0, "ci_high": 52.0, "kind": "champion"},
            {"name": "Training mean", "mae": 146.0, "ci_low": 130.0, "ci_high": 160.0, "kind": "baseline"},
            {"name": "TF-IDF ridge", "mae": 97.0, "kind": "baseline"},
        ],
        tmp_path / "podium.png",
    )

    for path in (scatter, podium):
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5_000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["podium.png", "scatter.png"]
