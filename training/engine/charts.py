"""PNG charts for the leaderboard: the Tester's scatter (truth vs guess) and the MAE podium.

Uses matplotlib's object API with the Agg canvas directly, never ``pyplot``: no global backend switch,
no GUI, and safe in worker processes and threads. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from training.engine.evaluator import COLOURS, colours_of

# The Tester's palette, slightly darker than pure colours so points stay visible on white.
PALETTE = {"green": "#2ca02c", "orange": "#ff7f0e", "red": "#d62728"}
KIND_COLOURS = {
    "champion": "#1f77b4",
    "candidate": "#9467bd",
    "version": "#7fa7cc",
    "baseline": "#8c8c8c",
}


def _save_png(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` to ``path`` atomically (a half-written PNG must never be served)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def scatter_chart(
    truths: Sequence[float], guesses: Sequence[float], path: str | Path, *, title: str = "Guess vs truth"
) -> Path:
    """Scatter of guess (y) against truth (x), each point coloured green/orange/red as the Tester does,
    with the perfect-guess diagonal. Returns the PNG path."""
    if len(truths) != len(guesses):
        raise ValueError(f"scatter_chart: {len(truths)} truths but {len(guesses)} guesses")
    colours = list(colours_of(truths, guesses))
    top = max([*truths, *guesses, 1.0]) * 1.05

    fig = Figure(figsize=(7, 7))
    ax = fig.add_subplot()
    ax.plot([0, top], [0, top], color="#555555", linewidth=1, linestyle="--", zorder=1)
    ax.scatter(list(truths), list(guesses), s=10, c=[PALETTE[c] for c in colours], zorder=2)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("Ground truth ($)")
    ax.set_ylabel("Model estimate ($)")
    ax.set_title(title)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=PALETTE[c], label=f"{c} ({colours.count(c)})")
        for c in COLOURS
    ]
    ax.legend(handles=handles, loc="upper left")
    return _save_png(fig, path)


def podium_chart(
    entries: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Mean absolute error"
) -> Path:
    """Horizontal bars of MAE (best at the top) with 95% intervals where given.

    Each entry: ``name``, ``mae``, optional ``ci_low``/``ci_high``, ``kind`` (champion, candidate,
    version or baseline; decides the bar colour). Returns the PNG path.
    """
    if not entries:
        raise ValueError("podium_chart: no entries to draw")
    for entry in entries:
        missing = {"name", "mae"} - entry.keys()
        if missing:
            raise ValueError(f"podium_chart: entry {entry!r} lacks {sorted(missing)}")
    # Best (lowest MAE) first; barh draws bottom-up, so reverse for a podium read from the top.
    ordered = sorted(entries, key=lambda e: (float(e["mae"]), str(e["name"])))[::-1]
    names = [str(e["name"]) for e in ordered]
    maes = [float(e["mae"]) for e in ordered]
    colours = [KIND_COLOURS.get(str(e.get("kind", "version")), KIND_COLOURS["version"]) for e in ordered]
    # Error bars are distances from the bar end; an entry without an interval gets zero-length bars.
    # matplotlib refuses negative lengths, which an interval not containing its own MAE would give.
    lows = [
        max(0.0, m - float(e["ci_low"])) if e.get("ci_low") is not None else 0.0
        for m, e in zip(maes, ordered, strict=True)
    ]
    highs = [
        max(0.0, float(e["ci_high"]) - m) if e.get("ci_high") is not None else 0.0
        for m, e in zip(maes, ordered, strict=True)
    ]

    fig = Figure(figsize=(8, max(2.5, 0.5 * len(ordered) + 1.5)))
    ax = fig.add_subplot()
    ax.barh(names, maes, color=colours, xerr=[lows, highs], capsize=4, ecolor="#333333")
    for y, mae in enumerate(maes):
        ax.text(mae, y, f"  ${mae:,.2f}", va="center", ha="left", fontsize=9)
    ax.set_xlim(0, max(m + h for m, h in zip(maes, highs, strict=True)) * 1.2)
    ax.set_xlabel("Mean absolute error ($, lower is better)")
    ax.set_title(title)
    fig.tight_layout()
    return _save_png(fig, path)
