"""Flags in a real browser: an annotator flags an item from the keyboard (pre-fetch on: the next item
shows at once), a reviewer finds it on the Flagged items page and returns it to the queue."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from annotation.models import Annotation, AssignmentStatus, ItemFlag, Task, TaskStatus
from tests.e2e.test_annotate import _codebook, _queue

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _prefetch_on(settings: Any) -> None:
    settings.ANNOTATION_PREFETCH = True
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 1


def test_an_annotator_flags_from_the_keyboard_and_a_reviewer_returns_it(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)  # no "Flag reasons" section: the default reasons
    garbled, _, _ = _queue(["Garbled kettle", "Lamp", "Chair"])
    login_as(page.context, annotator)
    page.goto("/annotate/")
    page.wait_for_load_state("load")
    title = page.locator("#item-title")
    expect(title).to_have_text("Garbled kettle")
    expect(page.locator("#workspace template#ahead")).to_have_count(1)

    page.keyboard.press("f")
    expect(page.locator("#flag-form")).to_have_class(re.compile("armed"))
    expect(page.locator("#flag-panel")).to_have_attribute("open", "")
    page.keyboard.press("1")  # broken-text; the note box takes the keys
    expect(page.locator("#flag-note")).to_be_focused()
    page.keyboard.type("stops mid-sentence")
    page.keyboard.press("Enter")
    expect(title).to_have_text("Lamp")  # the item ahead, at once
    expect(page.locator("#workspace > p.flash")).to_contain_text("Flagged (broken-text)")
    expect(page.locator("#sync-error")).to_be_hidden()

    flag = ItemFlag.objects.get()
    assert (flag.annotator, flag.reason_code, flag.note) == (annotator, "broken-text", "stops mid-sentence")
    assert flag.task.product == garbled
    assert flag.task.status == TaskStatus.FLAGGED
    assert not Annotation.objects.exists()
    live = annotator.assignments.get(status=AssignmentStatus.LIVE)
    assert live.task.product.title == "Lamp"  # what the page shows is the live lease

    page.context.clear_cookies()
    login_as(page.context, reviewer)
    page.goto("/review/")
    page.get_by_role("navigation", name="Reviewer pages").get_by_role("link", name="Flagged items").click()
    card = page.locator(f"#flag-{flag.id}")
    expect(card.locator(".item-title")).to_have_text("Garbled kettle")
    expect(card.locator(".flag-reason")).to_contain_text("broken-text")
    expect(card.locator(".flag-note")).to_have_text("stops mid-sentence")
    expect(card.locator(".flag-annotator")).to_contain_text(annotator.username)
    card.get_by_role("button", name="Return to queue").click()
    expect(page.locator(".messages")).to_contain_text("“Garbled kettle” is back in the queue")
    expect(page.locator("#flags-empty")).to_be_visible()
    expect(page.locator("#flags-decided")).to_contain_text("returned to the queue")
    assert Task.objects.get(product=garbled).status == TaskStatus.OPEN
