"""Robust statistics: a $999,999,999 correction changes no mean or error figure shown to reviewers.

Out-of-range prices (outside 0.50–999.49) are left out of every mean, median, alpha and error figure
on the agreement page (overall, per annotator, blind vs shown) and the batch page, and counted apart.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation import selectors, services
from tests.annotation.queue_helpers import make_tasks
from tests.conftest import client_for
from training.services.batches import batch_create_from_resolved

pytestmark = pytest.mark.django_db

TYPO = "999999999"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def _label_all(user: User, price_of: dict[bool, str]) -> None:
    """``user`` corrects every item they are offered: ``price_of[blind]``."""
    while (assignment := services.lease_next_task(annotator=user)) is not None:
        services.annotation_submit(
            annotator=user,
            assignment_id=assignment.id,
            verdict="correct",
            corrected_price=price_of[assignment.task.is_blind],
            seconds_spent=2,
            confirm_price=True,  # confirmed at the page's question: stored, flagged if out of range
        )


def _scenario(alice: User, bob: User) -> None:
    """Shown and blind items priced by two annotators who agree within tolerance (true price $100)."""
    make_tasks(3, overlap=2, blind=False)
    make_tasks(2, overlap=2, blind=True)
    _label_all(alice, {False: "100", True: "120"})
    _label_all(bob, {False: "104", True: "125"})


def _typo(alice: User) -> None:
    make_tasks(1, overlap=1, blind=False)
    _label_all(alice, {False: TYPO, True: TYPO})


def _figures(report: dict[str, Any], anchoring: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "alpha": report["alpha"],
        "within": report["within_tolerance"],
        "anchoring_gap": anchoring["anchoring_gap"],
    }
    for row in report["per_annotator"]:
        figures[f"{row['username']}.alpha"] = row["alpha"]
        figures[f"{row['username']}.within"] = row["within_tolerance"]
    for group in ("shown", "blind"):
        figures[f"{group}.mae"] = anchoring[group]["mean_abs_error"]
        figures[f"{group}.distance"] = anchoring[group]["mean_rel_distance_from_guess"]
        figures[f"{group}.n"] = anchoring[group]["n"]
    return figures


def _batch_figures(stats: dict[str, Any]) -> dict[str, Any]:
    price = stats["price"]
    return {
        "min": price["min"],
        "median": price["median"],
        "mean": price["mean"],
        "max": price["max"],
        "histogram": [b["count"] for b in price["histogram"]],
        "alpha": stats["agreement"]["alpha_log_price"],
        "within": stats["agreement"]["within_tolerance_share"],
    }


def test_a_999999999_correction_changes_no_mean_or_error_figure_shown_to_reviewers(
    annotator: User, annotator2: User, reviewer: User
) -> None:
    _scenario(annotator, annotator2)
    before = _figures(selectors.agreement_report(), selectors.blind_vs_shown_report())
    assert before["shown.mae"] is not None  # the figures exist, so the comparison can fail
    assert before["alpha"] is not None
    clean_batch = batch_create_from_resolved(min_size=1)

    _typo(annotator)
    report, anchoring = selectors.agreement_report(), selectors.blind_vs_shown_report()
    assert _figures(report, anchoring) == before
    assert report["out_of_range"] == 1
    assert {r["username"]: r["out_of_range"] for r in report["per_annotator"]} == {"alice": 1, "bob": 0}
    assert anchoring["shown"]["out_of_range"] == 1

    # The same labels again plus the typo's label: the batch's figures are the clean batch's.
    _scenario(annotator, annotator2)
    batch = batch_create_from_resolved(min_size=1)
    assert batch.size == clean_batch.size + 1
    assert _batch_figures(batch.stats) == _batch_figures(clean_batch.stats)
    assert batch.stats["price"]["out_of_range"] == 1

    # And on the pages themselves: the typo is counted, never averaged.
    client = client_for(reviewer)
    agreement = client.get("/review/agreement/").content.decode()
    assert 'id="out-of-range">1<' in agreement
    assert "999999999" not in agreement
    batch_page = client.get(f"/review/batches/{batch.pk}/").content.decode()
    figures = re.search(r'<p class="muted" id="price-figures">(.*?)</p>', batch_page, re.S)
    assert figures is not None
    assert f"mean ${clean_batch.stats['price']['mean']:.2f}" in figures.group(1)
    assert "999" not in figures.group(1).replace("$999.49", "")
    assert "1 label(s) excluded" in batch_page
    # The item itself stays visible in the sample, marked: reviewers see the typo, not its average.
    assert '$999999999.00 <span class="muted">(not trainable)</span>' in batch_page
