"""The Content-Security-Policy in a real browser: every main page works under it with zero violations,
and the watch that fails the other browser tests on a violation does see one.

Run: ``.venv/bin/python -m pytest tests/e2e/test_csp.py`` (needs /usr/bin/chromium; see conftest.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from annotation import services
from annotation.models import Product
from tests.e2e.conftest import CspWatch
from training import pipeline
from training.services import batches as batch_services

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _plain_queue(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_OVERLAP = 1
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


def _labelled_batch_with_run(annotator: User, reviewer: User) -> tuple[int, int]:
    """Three labelled items in a batch, approved: the batch page's histogram and the run page's curve."""
    products = [
        Product.objects.create(external_id=f"csp-{i}", title=f"Lamp {i}", text="A desk lamp.")
        for i in range(6)
    ]
    services.guesses_record_bulk(
        rows=[{"product_id": p.id, "price": 20 + i} for i, p in enumerate(products)], source="baseline:mean"
    )
    services.tasks_create_for_products(products=products[:3])
    while (assignment := services.lease_next_task(annotator=annotator)) is not None:
        services.annotation_submit(
            annotator=annotator,
            assignment_id=assignment.id,
            verdict="correct",
            corrected_price="25",
            seconds_spent=3,
            confirm_price=True,
        )
    batch = batch_services.batch_create_from_resolved(min_size=1)
    run = batch_services.batch_approve(
        reviewer=reviewer, batch_id=batch.pk, recipe=None, override_reason="a browser test's tiny batch"
    )
    services.tasks_create_for_products(products=products[3:])  # the annotator page shows an item
    return batch.pk, run.pk


def test_it_shows_every_main_page_without_a_csp_violation(
    page: Any, csp_watch: CspWatch, login_as: Any, annotator: User, reviewer: User
) -> None:
    batch_id, run_id = _labelled_batch_with_run(annotator, reviewer)
    services.codebook_publish(author=reviewer, markdown="# Codebook\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n")

    # Every response carries the policy: nothing inline, nothing eval'd.
    response = page.goto("/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe" not in policy

    # The annotator page: acknowledge the codebook and accept an item, both through htmx swaps.
    login_as(page.context, annotator)
    page.goto("/annotate/")
    page.wait_for_load_state("load")
    page.keyboard.press("Enter")  # acknowledge the new codebook
    expect(page.locator("#item-title")).to_have_text(re.compile(r"^Lamp \d$"))
    first = page.locator("#item-title").inner_text()
    page.keyboard.press("a")
    expect(page.locator("#item-title")).not_to_have_text(first)

    # Every reviewer page reachable from the reviewer menu, then a batch (histogram) and a run (curve).
    page.context.clear_cookies()
    login_as(page.context, reviewer)
    page.goto("/review/")
    menu = page.get_by_role("navigation", name="Reviewer pages")
    names = menu.get_by_role("link").all_inner_texts()
    assert len(names) >= 8
    for name in names:
        menu.get_by_role("link", name=name, exact=True).click()
        expect(menu.locator('[aria-current="page"]')).to_have_text(name)
        page.wait_for_load_state("load")
    page.goto(f"/review/batches/{batch_id}/")
    expect(page.locator("h1")).to_be_visible()
    page.goto(f"/review/runs/{run_id}/")
    expect(page.locator("h1")).to_be_visible()

    # The API docs: Swagger UI renders the operations under the page's own, slightly wider, policy.
    response = page.goto("/api/docs/")
    assert "unsafe" not in response.headers["content-security-policy"]
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    expect(page.get_by_text("/api/v1/versions/champion").first).to_be_visible()
    page.wait_for_load_state("networkidle")

    # Django's admin (a superuser's list and change pages).
    root = User.objects.create_superuser("root", "root@example.com", "a long admin password 1")
    page.context.clear_cookies()
    login_as(page.context, root)
    for path in ("/admin/", "/admin/auth/user/", f"/admin/auth/user/{root.pk}/change/"):
        page.goto(path)
        expect(page.locator("#content h1, #content h2").first).to_be_visible()
        page.wait_for_load_state("networkidle")

    assert csp_watch.violations == []


def test_the_watch_reports_an_inline_script_the_policy_blocks(chromium: Any, live_server: Any) -> None:
    """The check the other browser tests rely on: a page with an inline script is a recorded violation."""
    watch = CspWatch()
    context = watch.watch(chromium.new_context(base_url=live_server.url))
    try:
        tab = context.new_page()
        # The live server's real CSP header, on a page that (wrongly) carries an inline script and style.
        real = tab.request.get("/login/")
        policy = real.headers["content-security-policy"]
        tab.route(
            "**/inline-test",
            lambda route: route.fulfill(
                status=200,
                headers={"Content-Type": "text/html", "Content-Security-Policy": policy},
                body='<p style="color:red">x</p><script>window.__ran = true</script>',
            ),
        )
        tab.goto("/inline-test")
        tab.wait_for_timeout(300)  # the reports are delivered asynchronously
        assert tab.evaluate("window.__ran === undefined")  # the inline script did not run
    finally:
        context.close()
    assert any("script-src" in v for v in watch.violations), watch.violations
    assert any("style-src" in v for v in watch.violations), watch.violations
