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
from matplotlib.patches import Patch

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
    kinds = [str(e.get("kind", "version")) for e in ordered]
    fig = Figure(figsize=(8, max(2.5, 0.5 * len(ordered) + 1.5)))
    ax = fig.add_subplot()
    # Numeric positions rather than categorical names, so two entries with one name stay two bars.
    positions = list(range(len(ordered)))
    maes = [float(e["mae"]) for e in ordered]
    ax.barh(positions, maes, color=[KIND_COLOURS.get(k, KIND_COLOURS["version"]) for k in kinds])
    right_edge = 0.0
    for y, (mae, entry) in enumerate(zip(maes, ordered, strict=True)):
        label = f"${mae:,.2f}"
        end = mae
        low, high = entry.get("ci_low"), entry.get("ci_high")
        if low is not None and high is not None:
            # matplotlib refuses negative lengths, which an interval not containing its MAE would give.
            xerr = [[max(0.0, mae - float(low))], [max(0.0, float(high) - mae)]]
            ax.errorbar([mae], [y], xerr=xerr, fmt="none", capsize=4, ecolor="#333333")
            label += f"  [{float(low):,.0f}–{float(high):,.0f}]"
            end = max(mae, float(high))
        ax.text(end, y, f"  {label}", va="center", ha="left", fontsize=9)
        right_edge = max(right_edge, end)
    ax.set_yticks(positions, [str(e["name"]) for e in ordered])
    ax.set_xlim(0, right_edge * 1.35 or 1.0)
    ax.set_xlabel("Mean absolute error ($, lower is better; bars: 95% interval)")
    ax.set_title(title)
    present = [k for k in KIND_COLOURS if k in kinds]
    ax.legend(handles=[Patch(color=KIND_COLOURS[k], label=k) for k in present], loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)
