"""Codebook text (reason codes, sanitized rendering, diff), agreement and anchoring reports, beat task."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from annotation import selectors, services
from annotation.codebook import markdown_render, reason_codes_parse
from annotation.models import Assignment, AssignmentStatus, Task
from tests.annotation.queue_helpers import lease, make_tasks, submit
from webapp.roles import Role
from webapp.services import user_create_with_role
from workers.annotation import annotation_leases_expire

CODEBOOK = """# Pricing codebook

Accept when the guess is within 10%.

## Reject reasons
- `not-a-product`: the text describes no sellable item
- bundle — several items, no single price
* used: second-hand or refurbished

## Examples
- `ignored`: not a reason, another section
"""


@pytest.fixture(autouse=True)
def _no_gold_no_blind(settings) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0


def test_it_reads_reason_codes_from_the_reasons_section() -> None:
    assert reason_codes_parse(CODEBOOK) == [
        {"code": "not-a-product", "label": "the text describes no sellable item"},
        {"code": "bundle", "label": "several items, no single price"},
        {"code": "used", "label": "second-hand or refurbished"},
    ]


def test_it_renders_the_codebook_without_scripts_or_handlers() -> None:
    html = markdown_render(
        "# Rules\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[link](javascript:alert(3)) **bold**\n"
    )
    assert "<script" not in html
    assert "onerror" not in html
    assert "javascript:" not in html
    assert "<strong>bold</strong>" in html
    assert "<h1>Rules</h1>" in html


@pytest.mark.django_db
def test_it_publishes_numbered_versions_and_diffs_them(reviewer: User) -> None:
    v1 = services.codebook_publish(author=reviewer, markdown="# Rules\n\nAccept close guesses.\n")
    v2 = services.codebook_publish(author=reviewer, markdown=CODEBOOK, change_note="reject reasons")
    assert (v1.number, v2.number) == (1, 2)
    assert [c["code"] for c in v2.reason_codes] == ["not-a-product", "bundle", "used"]
    assert selectors.codebook_current() == v2
    diff = selectors.codebook_diff(v1, v2)
    assert "-Accept close guesses." in diff
    assert "+## Reject reasons" in diff
    html = selectors.codebook_diff(v1, v2, html=True)
    assert '<span class="diff-add">+## Reject reasons</span>' in html
    with pytest.raises(Exception, match="cannot be empty"):
        services.codebook_publish(author=reviewer, markdown="   ")


@pytest.mark.django_db
def test_it_reports_krippendorff_alpha_and_tolerance_per_annotator() -> None:
    tasks = make_tasks(6, overlap=3, guess="100.00")
    users = [user_create_with_role(username=f"r{i}", role=Role.ANNOTATOR)[0] for i in range(3)]
    truth = [20, 40, 80, 160, 320, 640]
    for _ in tasks:
        for k, user in enumerate(users):
            a = lease(user)
            base = truth[[t.id for t in tasks].index(a.task_id)]
            # r0 and r1 agree closely; r2 answers at random-ish prices.
            price = base * (1.02 if k == 0 else 0.99) if k < 2 else 500 - base / 2
            submit(user, a, "correct", f"{price:.2f}")
    reviewer = user_create_with_role(username="rev", role=Role.REVIEWER)[0]
    for task in selectors.adjudication_queue():
        services.adjudication_resolve(reviewer=reviewer, task_id=task.id, price=truth[tasks.index(task)])
    report = selectors.agreement_report()
    assert report["annotations"] == 18
    assert report["items_with_two_or_more_prices"] == 6
    assert report["alpha"] is not None
    per = {row["username"]: row for row in report["per_annotator"]}
    assert per["r0"]["accept_rate"] == 0.0
    assert per["r0"]["within_tolerance"] == 1.0
    assert per["r2"]["within_tolerance"] < 0.5

    close = [[t * 1.02 for t in truth], [t * 0.99 for t in truth]]
    import math

    from annotation.selectors import _alpha

    assert _alpha([[math.log(v) for v in row] for row in close]) > 0.99
    assert report["alpha"] < 0.99


@pytest.mark.django_db
def test_it_claims_no_agreement_on_items_priced_by_one_annotator_only() -> None:
    # Overlap 1 (the default): each label is its one annotator's own price, so nobody was compared.
    make_tasks(3, overlap=1, guess="100.00")
    user = user_create_with_role(username="solo", role=Role.ANNOTATOR)[0]
    for price in ("20.00", "400.00", "90.00"):
        submit(user, lease(user), "correct", price)

    report = selectors.agreement_report()

    assert report["annotations"] == 3
    assert report["items_with_two_or_more_prices"] == 0
    assert report["within_tolerance"] is None  # was 1.0: "100% within tolerance" of themselves
    (row,) = report["per_annotator"]
    assert row["within_tolerance"] is None
    assert row["alpha"] is None


@pytest.mark.django_db
def test_it_reports_the_alpha_computed_by_hand_on_log_prices() -> None:
    """Two annotators, four tasks, guess $32; prices are powers of two so the logs are easy.

    With x = log2(price), ln(price) = x·ln2; alpha is a ratio of squared differences, so scaling every
    value by ln2 leaves it unchanged and it can be computed on x.
      task 0: r0 corrects to $4, r1 to $8      -> x = 2, 3
      task 1: both accept the $32 guess        -> x = 5, 5
      task 2: r0 corrects to $128, r1 to $256  -> x = 7, 8
      task 3: r0 rejects, r1 corrects to $16   -> one price only: not pairable, left out
    Pairable values: 2, 3, 5, 5, 7, 8 (n = 6), every unit holds m = 2 of them.
      D_o = 1/n · Σ_units 1/(m-1) · Σ_ordered pairs (a-b)² = 1/6 · (2·1² + 0 + 2·1²) = 2/3
      D_e = 1/(n(n-1)) · Σ_ordered pairs of all values (a-b)²; over unordered pairs
            Σ(a-b)² = n·Σx² - (Σx)² = 6·176 - 30² = 156, ordered 312, so D_e = 312/30 = 10.4
      alpha = 1 - D_o/D_e = 1 - (2/3)/10.4 = 1 - 5/78 = 73/78 ≈ 0.93590
    (On raw prices it would be ≈ 0.7198; with task 3's reject counted as the $32 guess, ≈ 0.9023.)
    """
    tasks = make_tasks(4, overlap=2, guess="32.00")
    r0, r1 = (user_create_with_role(username=f"r{i}", role=Role.ANNOTATOR)[0] for i in range(2))
    answers = {
        r0: [("correct", "4"), ("accept", None), ("correct", "128"), ("reject", None)],
        r1: [("correct", "8"), ("accept", None), ("correct", "256"), ("correct", "16")],
    }
    order = [t.id for t in tasks]
    for user, theirs in answers.items():
        for _ in tasks:
            a = lease(user)
            verdict, price = theirs[order.index(a.task_id)]
            submit(user, a, verdict, price, reason_code="not-a-product" if verdict == "reject" else "")

    report = selectors.agreement_report()
    assert report["annotations"] == 8
    assert report["items_with_two_or_more_prices"] == 3
    assert report["alpha"] == pytest.approx(73 / 78, abs=5e-5)
    per = {row["username"]: row for row in report["per_annotator"]}
    # With two annotators each one's items are everyone's items: the same alpha.
    assert per["r0"]["shared_items"] == per["r1"]["shared_items"] == 3
    assert per["r0"]["alpha"] == per["r1"]["alpha"] == pytest.approx(73 / 78, abs=5e-5)
    assert per["r0"]["accept_rate"] == 0.25


@pytest.mark.django_db
def test_it_compares_blind_and_shown_items(annotator: User) -> None:
    shown = make_tasks(2, guess="100.00")
    blind = make_tasks(2, guess="100.00", blind=True)
    for _ in shown + blind:
        a = lease(annotator)
        submit(
            annotator,
            a,
            "accept" if not a.task.is_blind else "correct",
            None if not a.task.is_blind else "60",
        )
    report = selectors.blind_vs_shown_report()
    assert report["shown"]["n"] == 2
    assert report["blind"]["n"] == 2
    assert report["shown"]["mean_rel_distance_from_guess"] == 0.0
    assert report["blind"]["mean_rel_distance_from_guess"] == 0.4
    assert report["anchoring_gap"] == 0.4


@pytest.mark.django_db
def test_it_reports_the_queue(annotator: User) -> None:
    make_tasks(3)
    submit(annotator, lease(annotator))
    lease(annotator)
    stats = selectors.queue_stats()
    assert stats["tasks"] == {
        "total": 3,
        "open": 2,
        "available": 1,
        "claimed": 1,
        "needs_adjudication": 0,
        "resolved": 1,
        "flagged": 0,
        "dropped": 0,
        "gold": 0,
    }
    assert stats["leases"] == {"live": 1, "overdue": 0}
    progress = selectors.annotator_progress(annotator=annotator)
    assert (progress["done_today"], progress["remaining"]) == (1, 1)


@pytest.mark.django_db
def test_it_counts_the_remaining_items_up_to_a_cap_and_says_so_on_the_page(
    annotator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tasks(5)
    submit(annotator, lease(annotator))
    progress = selectors.annotator_progress(annotator=annotator)
    assert (progress["remaining"], progress["remaining_capped"]) == (4, False)

    monkeypatch.setattr(selectors, "REMAINING_CAP", 3)
    progress = selectors.annotator_progress(annotator=annotator)
    assert (progress["remaining"], progress["remaining_capped"]) == (3, True)

    # The page leases the next item and the one after it (pre-fetch): 2 fresh items are left, more
    # than a cap of 1, plus the one leased ahead, which is still to do.
    monkeypatch.setattr(selectors, "REMAINING_CAP", 1)
    client = Client()
    client.force_login(annotator)
    assert '<dd id="remaining">2+</dd>' in client.get("/annotate/").content.decode()
    api = client.get("/api/v1/annotate/progress").json()
    assert (api["remaining"], api["remaining_capped"]) == (2, True)

    monkeypatch.setattr(selectors, "REMAINING_CAP", 10)
    assert '<dd id="remaining">3</dd>' in client.get("/annotate/").content.decode()


@pytest.mark.django_db
def test_it_returns_expired_leases_from_the_beat_task(annotator: User) -> None:
    (task,) = make_tasks(1)
    a = lease(annotator)
    Assignment.objects.filter(id=a.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert annotation_leases_expire.apply().get() == 1
    assert annotation_leases_expire.apply().get() == 0
    assert Assignment.objects.get(id=a.id).status == AssignmentStatus.EXPIRED
    assert Task.objects.get(id=task.id).claimed_count == 0
