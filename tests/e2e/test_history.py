"""The annotator's history page in a real browser: change an answer before its item resolves."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from annotation.models import Annotation
from tests.e2e.test_annotate import _codebook, _queue

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any) -> None:
    settings.ANNOTATION_PREFETCH = False
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 2  # an answered item stays open: the history may change it


def test_it_changes_an_answer_from_the_history(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)
    (kettle,) = _queue(["Kettle"])  # guess $10
    login_as(page.context, annotator)
    page.goto("/annotate/")
    page.wait_for_load_state("load")
    expect(page.locator("#item-title")).to_have_text("Kettle")
    page.keyboard.press("a")
    expect(page.locator("#done-today")).to_have_text("1")

    page.locator("#history-link").click()
    expect(page).to_have_url(re.compile(r"/annotate/history/$"))
    row = page.locator("#history tbody tr").first
    expect(row.locator(".title")).to_have_text("Kettle")
    expect(row.locator(".verdict")).to_have_text("accept")
    expect(row.locator(".guess")).to_have_text("$10.00")

    # A price 10x the guess asks for a confirmation first; nothing changes until it is given.
    row.locator("select[name=verdict]").select_option("correct")
    row.locator("input[name=corrected_price]").fill("100")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Not changed")
    assert Annotation.objects.get(task__product=kettle).verdict == "accept"
    row = page.locator("#history tbody tr").first
    row.locator("select[name=verdict]").select_option("correct")
    row.locator("input[name=corrected_price]").fill("12.50")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Changed:")
    expect(page.locator("#history tbody tr").first.locator(".price")).to_have_text("$12.50")
    stored = Annotation.objects.get(task__product=kettle)
    assert (stored.verdict, stored.corrected_price) == ("correct", Decimal("12.50"))
