"""The annotator page in a real browser, driven from the keyboard only.

Run: ``.venv/bin/python -m pytest tests/e2e -m e2e`` (needs /usr/bin/chromium; see conftest.py).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from annotation import services
from annotation.models import Annotation, AssignmentStatus, CodebookAck, Product, Task
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CODEBOOK_V1 = """# Pricing codebook

Accept the guess when it is within 10% of the price you would pay.

## Reject reasons
- `not-a-product`: the text describes no sellable item
- `bundle`: several items, no single price
- `unclear`: the text does not say enough to price it
"""

CODEBOOK_V2 = CODEBOOK_V1.replace("within 10%", "within 5%") + "- `duplicate`: the same product twice\n"

XSS_TEXT = '<script>window.__xss=1</script> and <img src=x onerror="window.__xss=2"> inside'


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any) -> None:
    # Every item shows its guess and none is gold, so the order of items is known.
    # These tests drive the page with one round trip per item (pre-fetch off, as with
    # ANNOTATION_PREFETCH=0 or when nothing is ahead); test_prefetch.py drives it with pre-fetch on.
    settings.ANNOTATION_PREFETCH = False
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 1


def _queue(titles: list[str], *, text: str = "A sturdy thing, described plainly.") -> list[Product]:
    """Products with guesses $10, $11, … served in this order (highest entropy first)."""
    products = [
        Product.objects.create(external_id=f"e2e-{i}", title=title, text=text, category="Tools")
        for i, title in enumerate(titles)
    ]
    services.guesses_record_bulk(
        rows=[
            {"product_id": p.id, "price": 10 + i, "entropy": float(len(products) - i)}
            for i, p in enumerate(products)
        ],
        source="baseline:mean",
    )
    assert services.tasks_create_for_products(products=products) == len(products)
    return products


def _codebook(reviewer: User, annotator: User) -> None:
    version = services.codebook_publish(author=reviewer, markdown=CODEBOOK_V1)
    services.codebook_acknowledge(annotator=annotator, version_number=version.number)


def _annotation(annotator: User, product: Product) -> Annotation | None:
    return Annotation.objects.filter(annotator=annotator, task__product=product).first()


def _open(page: Any, login_as: Any, annotator: User) -> None:
    """The annotator, logged in, on the annotate page with its scripts loaded."""
    login_as(page.context, annotator)
    page.goto("/annotate/")
    page.wait_for_load_state("load")


def _screenshot(page: Any, name: str) -> None:
    """Saved only when asked (E2E_SCREENSHOT_DIR), for a person to look at: not an assertion."""
    folder = os.environ.get("E2E_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_it_labels_items_from_the_keyboard(page: Any, annotator: User, reviewer: User) -> None:
    _codebook(reviewer, annotator)
    products = _queue([f"Item {i}" for i in range(5)])
    title, done = page.locator("#item-title"), page.locator("#done-today")

    # Log in with the keyboard: the username field has the focus.
    page.goto("/annotate/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/annotate/$"))
    page.keyboard.type(annotator.username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(title).to_have_text("Item 0")
    expect(page.locator("#guess-price")).to_have_text("$10.00")
    expect(done).to_have_text("0")
    expect(page.locator("#remaining")).to_have_text("4")
    # The login's Enter started a navigation Playwright does not wait for: the item can be on screen
    # before the deferred scripts run, and a key pressed then would be lost, as it would for a person.
    page.wait_for_load_state("load")
    _screenshot(page, "annotate")
    page.evaluate("window.__sameDocument = true")  # survives htmx swaps, not a page load

    page.keyboard.press("a")  # accept
    expect(title).to_have_text("Item 1")
    expect(done).to_have_text("1")

    page.keyboard.press("4")  # a digit starts a correction in the price box
    page.keyboard.press("2")
    expect(page.locator("#id_corrected_price")).to_be_focused()
    expect(page.locator("#id_corrected_price")).to_have_value("42")
    page.keyboard.press("Enter")
    expect(title).to_have_text("Item 2")
    expect(done).to_have_text("2")
    expect(page.locator("#id_corrected_price")).not_to_be_focused()  # keys act on the item again

    page.keyboard.press("r")  # reject, then the reason's number
    expect(page.locator("#reject-form")).to_have_class(re.compile("armed"))
    page.keyboard.press("2")
    expect(title).to_have_text("Item 3")
    expect(done).to_have_text("3")

    page.keyboard.press("s")  # skip: Item 3 goes to the end of my queue
    expect(title).to_have_text("Item 4")
    expect(done).to_have_text("3")

    page.keyboard.press("u")  # undo the last action, the skip: Item 3 is back
    expect(title).to_have_text("Item 3")
    expect(done).to_have_text("3")

    page.keyboard.press("u")  # undo again: the reject, Item 2 is back
    expect(title).to_have_text("Item 2")
    expect(done).to_have_text("2")

    page.keyboard.press("r")
    page.keyboard.press("1")
    expect(title).to_have_text("Item 4")  # both put-back items return, the one put back first first
    expect(done).to_have_text("3")

    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()

    assert page.evaluate("window.__sameDocument") is True, "an action reloaded the whole page"
    accepted, corrected, rejected = (_annotation(annotator, p) for p in products[:3])
    assert accepted is not None
    assert accepted.verdict == "accept"
    assert corrected is not None
    assert corrected.verdict == "correct"
    assert corrected.corrected_price == Decimal("42.00")
    assert rejected is not None
    assert rejected.verdict == "reject"
    assert rejected.reason_code == "not-a-product"  # the undone "bundle" reject left no trace
    assert _annotation(annotator, products[3]) is None  # skipped, then put back by the second undo
    assert Annotation.objects.filter(annotator=annotator).count() == 3
    for annotation in (accepted, corrected, rejected):
        assert annotation.seconds_spent > 0
        assert annotation.client_token
        assert annotation.codebook_version is not None
        assert annotation.codebook_version.number == 1
    live = annotator.assignments.get(status=AssignmentStatus.LIVE)
    assert live.task.product == products[4]


def test_it_asks_for_a_keystroke_before_saving_an_unusual_price(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)
    kettle, lamp, _ = _queue(["Kettle", "Lamp", "Chair"])  # guesses $10, $11, $12
    _open(page, login_as, annotator)
    title, notice = page.locator("#item-title"), page.locator("#price-confirm")
    expect(title).to_have_text("Kettle")
    expect(notice).to_be_hidden()

    page.keyboard.type("999999999")
    page.keyboard.press("Enter")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("$999,999,999.00 is outside the trainable range $0.50–$999.49")
    expect(notice).to_contain_text("Press y to save it anyway")
    page.keyboard.press("Enter")  # a second Enter is not a confirmation
    expect(notice).to_be_visible()
    expect(title).to_have_text("Kettle")
    assert _annotation(annotator, kettle) is None

    page.keyboard.press("y")  # the confirmation keystroke
    expect(title).to_have_text("Lamp")
    expect(page.locator("p.flash")).to_contain_text("flagged: outside $0.50–$999.49, never trained on")
    expect(notice).to_be_hidden()
    saved = _annotation(annotator, kettle)
    assert saved is not None
    assert (saved.corrected_price, saved.price_flag) == (Decimal("999999999.00"), "out_of_range")

    page.keyboard.type("110")  # ten times the $11 guess: a slip of one zero, most likely
    page.keyboard.press("Enter")
    expect(notice).to_contain_text("$110.00 is 10 times the model's guess ($11.00)")
    page.keyboard.press("Backspace")  # editing withdraws the question; the new price is checked anew
    expect(notice).to_be_hidden()
    page.keyboard.press("Enter")
    expect(title).to_have_text("Chair")
    fixed = _annotation(annotator, lamp)
    assert fixed is not None
    assert (fixed.corrected_price, fixed.price_flag) == (Decimal("11.00"), "")


def test_it_names_a_price_it_cannot_read_in_the_page_and_saves_nothing(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)
    kettle, lamp, _ = _queue(["Kettle", "Lamp", "Chair"])  # guesses $10, $11, $12
    _open(page, login_as, annotator)
    title, error, box = (
        page.locator("#item-title"),
        page.locator("#price-error"),
        page.locator("#id_corrected_price"),
    )
    expect(title).to_have_text("Kettle")

    page.keyboard.type("-5")  # from the item view: the minus sign starts the price, it is not dropped
    expect(box).to_have_value("-5")
    page.keyboard.press("Enter")
    expect(error).to_be_visible()
    expect(error).to_have_text(
        "“-5” is not a price: type digits with at most 2 decimals, such as 12 or 12.99."
    )
    for typed, says in (
        ("1e9", "“1e9” is not a price"),
        ("12.345", "“12.345” is not a price"),
        ("0", "not a positive"),
    ):
        box.fill(typed)
        expect(error).to_be_hidden()  # typing withdraws the message
        page.keyboard.press("Enter")
        expect(error).to_contain_text(says)
    expect(title).to_have_text("Kettle")
    assert _annotation(annotator, kettle) is None

    box.fill("$12")  # a dollar sign is fine, as the server reads it
    page.keyboard.press("Enter")
    expect(title).to_have_text("Lamp")
    saved = _annotation(annotator, kettle)
    assert saved is not None
    assert saved.corrected_price == Decimal("12.00")
    assert _annotation(annotator, lamp) is None


def test_it_loads_the_page_without_a_failed_request(page: Any, login_as: Any, annotator: User) -> None:
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    login_as(page.context, annotator)
    page.goto("/annotate/")
    page.wait_for_load_state("networkidle")
    assert failed == []
    # Desktop browsers ask for /favicon.ico unless the page names its icon (headless ones ask for
    # neither): the page names one, and it is there.
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None
    response = page.request.get(icon)
    assert (response.status, response.headers["content-type"]) == (200, "image/svg+xml")


def test_it_clears_a_key_notice_when_the_next_item_comes(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)
    blind, _ = _queue(["Blind kettle", "Lamp"])
    Task.objects.filter(product=blind).update(is_blind=True)
    _open(page, login_as, annotator)
    expect(page.locator("#guess-hidden")).to_be_visible()
    page.keyboard.press("a")  # nothing to accept on a blind item
    expect(page.locator("#key-status")).to_have_text("This item shows no guess: type your price.")
    page.keyboard.type("25")
    page.keyboard.press("Enter")
    expect(page.locator("#item-title")).to_have_text("Lamp")
    expect(page.locator("#guess-price")).to_have_text("$11.00")
    expect(page.locator("#key-status")).to_have_text("")  # the notice was about the blind item


def test_it_keeps_reject_mode_armed_by_a_key_pressed_as_the_item_appears(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    # htmx settles a swap ~20 ms after it (restoring the fragment's classes); an r pressed in between
    # must still arm the reject, as it does for a slower hand (CI once caught exactly that).
    _codebook(reviewer, annotator)
    _queue(["Item 0", "Item 1", "Item 2"])
    _open(page, login_as, annotator)
    page.evaluate(
        """() => document.addEventListener("htmx:afterSwap", () => {
            document.body.dispatchEvent(new KeyboardEvent("keydown", {key: "r", bubbles: true}));
        }, {once: true})"""
    )
    page.keyboard.press("a")
    expect(page.locator("#item-title")).to_have_text("Item 1")
    page.wait_for_timeout(200)  # well past the settle
    expect(page.locator("#reject-form")).to_have_class(re.compile("armed"))
    page.keyboard.press("1")
    expect(page.locator("#item-title")).to_have_text("Item 2")


def test_it_lets_a_keystroke_confirm_a_price_the_server_questioned(
    page: Any, login_as: Any, annotator: User, reviewer: User, settings: Any
) -> None:
    _codebook(reviewer, annotator)
    kettle, _ = _queue(["Kettle", "Lamp"])  # guess $10
    _open(page, login_as, annotator)
    expect(page.locator("#item-title")).to_have_text("Kettle")
    settings.ANNOTATION_CONFIRM_FACTOR = 3  # the rule changed after the page was rendered (factor 10)

    page.keyboard.type("40")
    page.keyboard.press("Enter")  # the page lets it through; the server asks
    flash = page.locator("#workspace > p.flash")
    expect(flash).to_contain_text("$40.00 is 4 times the model's guess ($10.00)")
    expect(page.locator("#item-title")).to_have_text("Kettle")
    expect(page.locator("#id_corrected_price")).to_have_value("40.00")
    expect(page.locator("#price-confirm")).to_contain_text("Press y to save it anyway")
    assert _annotation(annotator, kettle) is None
    page.keyboard.press("y")
    expect(page.locator("#item-title")).to_have_text("Lamp")
    saved = _annotation(annotator, kettle)
    assert saved is not None
    assert saved.corrected_price == Decimal("40.00")


def test_it_requires_acknowledging_a_new_codebook(
    browser: Any, page: Any, login_as: Any, live_server: Any, annotator: User, reviewer: User
) -> None:
    _codebook(reviewer, annotator)
    products = _queue(["First", "Second", "Third"])
    login_as(page.context, annotator)
    page.goto("/annotate/")
    expect(page.locator("#item-title")).to_have_text("First")
    expect(page.locator("#codebook-title")).to_have_text("Codebook v1")

    # A reviewer publishes v2 on the codebook page.
    review_context = browser.new_context(base_url=live_server.url)
    try:
        login_as(review_context, reviewer)
        review = review_context.new_page()
        review.goto("/review/codebook/")
        review.locator("textarea[name=markdown]").fill(CODEBOOK_V2)
        review.get_by_label("Change note").fill("Accept within 5%; a reason for duplicates.")
        review.get_by_role("button", name=re.compile("Publish as v2")).click()
        expect(review.locator(".messages")).to_contain_text("Published codebook v2")
    finally:
        review_context.close()

    page.keyboard.press("a")  # the item on screen is saved; the next one waits for the acknowledgement
    expect(page.locator("#ack")).to_be_visible()
    expect(page.locator("#item")).to_have_count(0)
    expect(page.locator("#ack .diff-add")).to_have_text("Added - `duplicate`: the same product twice")
    expect(page.locator("#ack .diff-change del")).to_have_text("10%")
    expect(page.locator("#ack .diff-change ins")).to_have_text("5%")
    expect(page.locator("#change-notes")).to_have_text("v2: Accept within 5%; a reason for duplicates.")
    expect(page.locator("#codebook-title")).to_have_text("Codebook v2")
    expect(page.locator("#ack-button")).to_be_focused()
    page.keyboard.press("a")  # item keys do nothing until the new version is acknowledged
    expect(page.locator("#ack")).to_be_visible()
    assert not CodebookAck.objects.filter(annotator=annotator, version__number=2).exists()

    page.keyboard.press("Enter")
    expect(page.locator("#item-title")).to_have_text("Second")
    assert CodebookAck.objects.filter(annotator=annotator, version__number=2).exists()
    page.keyboard.press("r")
    page.keyboard.press("4")  # the reason v2 added
    expect(page.locator("#item-title")).to_have_text("Third")
    second = _annotation(annotator, products[1])
    assert second is not None
    assert second.reason_code == "duplicate"
    assert second.codebook_version is not None
    assert second.codebook_version.number == 2


def test_it_renders_product_text_as_inert_text(
    page: Any, login_as: Any, annotator: User, reviewer: User
) -> None:
    services.codebook_publish(
        author=reviewer,
        markdown=CODEBOOK_V1 + '\n<script>window.__xss=3</script><img src=x onerror="window.__xss=4">\n',
    )
    services.codebook_acknowledge(annotator=annotator, version_number=1)
    _queue(["<b>Bold</b> title <script>window.__xss=5</script>", "Second payload"], text=XSS_TEXT)
    login_as(page.context, annotator)

    page.goto("/annotate/")
    page.wait_for_load_state("load")
    expect(page.locator("#item-title")).to_have_text("<b>Bold</b> title <script>window.__xss=5</script>")
    expect(page.locator("#item-text")).to_have_text(XSS_TEXT)
    page.keyboard.press("a")  # the next item arrives through an htmx swap, which runs real scripts
    expect(page.locator("#item-title")).to_have_text("Second payload")
    expect(page.locator("#item-text")).to_have_text(XSS_TEXT)
    page.wait_for_timeout(200)  # time for a (wrongly) live <img onerror> to fire
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#workspace img, #codebook img, #codebook script").count() == 0
