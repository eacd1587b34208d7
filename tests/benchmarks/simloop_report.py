"""The simulation's numbers and report: metrics with intervals, the summary, JSON, markdown and chart.

Part of tests/benchmarks/simulate_loop.py (see there for how it runs).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simloop_catalogue import GREEN_ABS, GREEN_REL

KINDS = ("careful", "sloppy", "spammer")


# --- metrics -------------------------------------------------------------------------------------------


def wilson(hits: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def scored(truths: Sequence[float], guesses: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Tester metrics with 95% percentile-bootstrap intervals for MAE, RMSLE and hit rate."""
    import numpy as np

    from training.engine.evaluator import evaluate

    metrics = evaluate(truths, guesses, seed=seed).to_dict()
    t, g = np.asarray(truths, dtype=float), np.asarray(guesses, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(1000, len(t)))
    sq = (np.log1p(g) - np.log1p(t)) ** 2
    err = np.abs(g - t)
    green = (err < GREEN_ABS) | (err < GREEN_REL * t)
    metrics["rmsle_ci95"] = [float(x) for x in np.percentile(np.sqrt(sq[idx].mean(axis=1)), [2.5, 97.5])]
    metrics["hit_rate_ci95"] = [float(x) for x in np.percentile(green[idx].mean(axis=1), [2.5, 97.5])]
    return metrics


def api_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A version's test-split metrics as the versions API gives them, plus the hit rate's Wilson interval."""
    out = dict(metrics)
    if metrics.get("n"):
        out["hit_rate_ci95"] = wilson(int(metrics.get("counts", {}).get("green", 0)), int(metrics["n"]))
    return out


def base_size(base_model: str) -> str:
    """The bootstrap size of an offline base (its ``bootstrap.json``), else the base's name."""
    try:
        return str(json.loads((Path(base_model) / "bootstrap.json").read_text())["size"])
    except (OSError, ValueError, KeyError):
        return Path(base_model).name or base_model


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """What a reader checks first: did the champion improve, was anything worse promoted, the spammer."""
    start = result["start"]["champion"]["test"].get("mae")
    rounds = result["rounds"]
    champions = [r["champion"]["test"].get("mae") for r in rounds]
    final = champions[-1] if champions else start
    worse_promoted = [
        r["round"]
        for r in rounds
        if r["promoted"]
        and r.get("candidate", {}).get("test", {}).get("mae", math.inf)
        > r["champion_before"]["test"].get("mae", 0)
    ]
    maes = [start, *champions]
    spammers = [a for a in result.get("annotators", []) if a["kind"] == "spammer"]
    in_approved = sum(
        n
        for r in rounds
        if r["batch"].get("decision") == "approved"
        for name, n in (r["batch"].get("annotators") or {}).items()
        if name.startswith("sim-spammer")
    )
    ridge = rounds[-1]["baselines"]["ridge"]["test"]["mae"] if rounds else None
    return {
        "v1_mae": start,
        "final_mae": final,
        "improvement": (start - final) / start if start and final is not None else None,
        "promotions": sum(1 for r in rounds if r["promoted"]),
        "champion_mae_never_raised": all(b <= a + 1e-9 for a, b in itertools.pairwise(maes)),
        "worse_candidates_promoted": worse_promoted,
        "spammers_paused": all(a["paused_round"] is not None for a in spammers) if spammers else None,
        "spammer_labels_in_approved_batches": in_approved,
        "final_ridge_mae": ridge,
        "final_vs_ridge": (final - ridge) if final is not None and ridge is not None else None,
        # The versions API's test MAE against this script's own scoring of the same items: the same
        # predictor settings should give the same figure (up to batching noise on a GPU).
        "mae_api_vs_local_max_diff": max(
            (
                abs(m["test"]["mae"] - m["test_local"]["mae"])
                for m in _measured(result)
                if m["test"].get("mae") is not None and "test_local" in m
            ),
            default=None,
        ),
    }


def _measured(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = [result["start"]["champion"]]
    for r in result["rounds"]:
        out += [r["champion"], *([r["candidate"]] if r.get("candidate") else [])]
    return out


def _local(measured: dict[str, Any]) -> dict[str, Any]:
    """Test-split metrics with an RMSLE interval: this script's own scoring where it has one."""
    return measured.get("test_local") or measured["test"]


# --- outputs ---------------------------------------------------------------------------------------------


def _fmt(metrics: dict[str, Any] | None, key: str = "mae") -> str:
    if not metrics or metrics.get(key) is None:
        return "–"
    ci = metrics.get(f"{key}_ci95")
    if key == "hit_rate":
        text = f"{metrics[key]:.1%}"
        return text + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
    if key == "rmsle":
        return f"{metrics[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return f"${metrics[key]:.2f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "")


def write_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [result["start"], *result["rounds"]]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [r["champion"]["test"].get("mae") for r in rounds], "o-", label="champion (test split)")
    cand = [
        (r["round"], r["candidate"]["test"].get("mae"), r["promoted"]) for r in rounds if r.get("candidate")
    ]
    for promoted, marker, colour, label in ((True, "^", "tab:green", "candidate promoted"),
                                            (False, "x", "tab:red", "candidate rejected")):  # fmt: skip
        points = [(c[0], c[1]) for c in cand if c[2] is promoted]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, s=70, color=colour, label=label, zorder=3)
    ax.plot(
        xs,
        [r["baselines"]["ridge"]["test"]["mae"] for r in rounds],
        "s--",
        label="TF-IDF ridge on the labels",
    )
    ax.plot(
        xs, [r["baselines"]["mean"]["test"]["mae"] for r in rounds], ":", color="grey", label="training mean"
    )
    if all("extra" in r["champion"] for r in rounds):
        ax.plot(xs, [r["champion"]["extra"]["mae"] for r in rounds], "o-.", label="champion (--score-extra)")
    ax.set_xlabel("round (0 = v1)")
    ax.set_ylabel("mean absolute error ($)")
    ax.set_xticks(xs)
    ax.set_title(f"PriceLoop learning loop: {result['items']}, base {result['base']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    s = result["settings"]
    lines = [
        f"# Learning loop: {result['items']} (base {result['base']})",
        "",
        f"`{result['command']}`",
        "",
        f"{s['rounds']} rounds of {s['labels_per_round']} labels; annotators {s['annotators']}; "
        f"seed {s['seed']}; test split {s['test_items']} items ({s['test_fraction']:.0%} by id hash); "
        f"seed set {s['seed_size']}; gold {s['gold_size']}; recipe {s['recipe']}.",
        "",
        "![error per round](error-per-round.png)",
        "",
        "| round | labels (careful/sloppy/spammer) | batch | train s | candidate MAE | gate | champion MAE "
        "| champion RMSLE | champion hits | ridge MAE | mean MAE | champion extra MAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    start = result["start"]
    lines.append(
        f"| 0 (v1) | seed {s['seed_size']} | – | – | – | – | {_fmt(start['champion']['test'])} "
        f"| {_fmt(_local(start['champion']), 'rmsle')} | {_fmt(start['champion']['test'], 'hit_rate')} "
        f"| {_fmt(start['baselines']['ridge']['test'])} | {_fmt(start['baselines']['mean']['test'])} "
        f"| {_fmt(start['champion'].get('extra'))} |"
    )
    for r in result["rounds"]:
        kinds = "/".join(str(r["labels_by_kind"].get(k, 0)) for k in KINDS)
        batch = r["batch"]
        batch_text = (
            f"#{batch['id']} ({batch['size']}) {batch['decision']}" if batch.get("id") else batch["decision"]
        )
        gate = "promoted" if r["promoted"] else ("rejected" if r.get("gate") else "–")
        train = f"{r['training_seconds']:.0f}" if r.get("training_seconds") is not None else "–"
        lines.append(
            f"| {r['round']} | {kinds} | {batch_text} | {train} | {_fmt(r.get('candidate', {}).get('test'))} "
            f"| {gate} | {r['champion']['name']} {_fmt(r['champion']['test'])} "
            f"| {_fmt(_local(r['champion']), 'rmsle')} | {_fmt(r['champion']['test'], 'hit_rate')} "
            f"| {_fmt(r['baselines']['ridge']['test'])} | {_fmt(r['baselines']['mean']['test'])} "
            f"| {_fmt(r['champion'].get('extra'))} |"
        )
    lines += [
        "",
        "MAE in dollars with its 95% bootstrap interval; hits = share green (< $40 or < 20%), Wilson "
        "interval on the test split; RMSLE intervals from this script's scoring of the "
        "same items (test_local). Baselines are fitted on the labels the champion line was trained on.",
        "",
        "## Candidates",
        "",
        "| round | candidate | test MAE | test RMSLE | test hits | extra MAE | extra RMSLE | extra hits "
        "| training s (steps) | run wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rounds"]:
        if not r.get("candidate"):
            continue
        c, run = r["candidate"], r.get("run", {})
        lines.append(
            f"| {r['round']} | {c['name']} {'promoted' if r['promoted'] else 'rejected'} | {_fmt(c['test'])} "
            f"| {_fmt(_local(c), 'rmsle')} | {_fmt(c['test'], 'hit_rate')} | {_fmt(c.get('extra'))} "
            f"| {_fmt(c.get('extra'), 'rmsle')} | {_fmt(c.get('extra'), 'hit_rate')} "
            f"| {run.get('train_seconds') or 0:.0f} ({run.get('steps')}) | {run.get('wall_seconds')} |"
        )
    lines.append("")
    lines.append("## Gate decisions and batches")
    for r in result["rounds"]:
        lines.append(f"- round {r['round']}: batch {r['batch'].get('id', '–')} {r['batch']['decision']}"
                     + (f" ({r['batch']['reason']})" if r["batch"].get("reason") else ""))  # fmt: skip
        for reason in (r.get("gate") or {}).get("reasons", []):
            lines.append(f"  - {reason}")
        for p in r["paused"]:
            lines.append(f"  - paused: {p['username']} ({p['kind']}): {p['reason']}")
    if "summary" in result:
        lines += ["", "## Summary", "", "```json", json.dumps(result["summary"], indent=2), "```"]
    if result.get("notes"):
        lines += ["", "## Notes", *[f"- {n}" for n in result["notes"]]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_outputs(result: dict[str, Any], out: Path) -> None:
    (out / "simulation.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    write_markdown(result, out / "simulation.md")
    write_chart(result, out / "error-per-round.png")
