"""Consensus: what a task's annotations resolve to. Pure functions (no database).

Rules (DESIGN.md §3): an accept majority → the guess's price; otherwise the median of the prices given
(an accept gives the guess's price, a correction its own price); prices spread beyond the tolerance, or
a tie between pricing and rejecting → a reviewer adjudicates. A reject majority resolves with no price.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from annotation.conf import AnnotationConfig, within_tolerance
from annotation.models import PriceFlag, ResolutionMethod, TaskStatus, Verdict

PRICE_MIN = Decimal("0.50")
PRICE_MAX = Decimal("999.49")
CENT = Decimal("0.01")


def price_flag(price: Decimal | None) -> str:
    """Prices outside 0.50–999.49 are kept but flagged: they are never trained on token-level."""
    if price is None:
        return PriceFlag.MISSING
    return PriceFlag.OK if PRICE_MIN <= price <= PRICE_MAX else PriceFlag.OUT_OF_RANGE


def price_in_range(price: Decimal | float) -> bool:
    """Inside 0.50–999.49: a price statistics shown to reviewers may use (outside ones are counted apart,
    so that one typo such as $999,999,999 moves no mean, median or error figure)."""
    return PRICE_MIN <= Decimal(str(price)) <= PRICE_MAX


@dataclass(frozen=True)
class Vote:
    verdict: str
    price: Decimal | None  # accept: the guess's price; correct: the corrected price; reject: None


@dataclass(frozen=True)
class Consensus:
    status: str  # TaskStatus.RESOLVED or TaskStatus.NEEDS_ADJUDICATION
    method: str  # a ResolutionMethod ("" when adjudication is needed)
    price: Decimal | None
    spread: Decimal | None
    n_accept: int
    n_correct: int
    n_reject: int


def vote_price(verdict: str, corrected_price: Decimal | None, guess_price: Decimal | None) -> Decimal | None:
    if verdict == Verdict.ACCEPT:
        return guess_price
    if verdict == Verdict.CORRECT:
        return corrected_price
    return None


def consensus_decide(
    votes: Sequence[Vote], *, guess_price: Decimal | None, cfg: AnnotationConfig
) -> Consensus:
    if not votes:
        raise ValueError("consensus needs at least one vote")
    n = len(votes)
    n_accept = sum(v.verdict == Verdict.ACCEPT for v in votes)
    n_correct = sum(v.verdict == Verdict.CORRECT for v in votes)
    n_reject = sum(v.verdict == Verdict.REJECT for v in votes)
    prices = [v.price for v in votes if v.price is not None]
    spread = (max(prices) - min(prices)) if prices else None
    counts = {"n_accept": n_accept, "n_correct": n_correct, "n_reject": n_reject}

    if 2 * n_accept > n and guess_price is not None:
        return Consensus(TaskStatus.RESOLVED, ResolutionMethod.ACCEPT_MAJORITY, guess_price, spread, **counts)
    if 2 * n_reject > n or not prices:
        return Consensus(TaskStatus.RESOLVED, ResolutionMethod.REJECTED, None, spread, **counts)
    if 2 * n_reject == n:
        return Consensus(TaskStatus.NEEDS_ADJUDICATION, "", None, spread, **counts)
    median = Decimal(statistics.median(prices)).quantize(CENT)
    if all(within_tolerance(p, median, cfg) for p in prices):
        return Consensus(TaskStatus.RESOLVED, ResolutionMethod.MEDIAN, median, spread, **counts)
    return Consensus(TaskStatus.NEEDS_ADJUDICATION, "", None, spread, **counts)
