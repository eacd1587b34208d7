"""Browser tests: Playwright for Python driving Debian's chromium (``apt-get install chromium``).

Run: ``.venv/bin/python -m pytest tests/e2e``. Without /usr/bin/chromium the tests are skipped, except
when ``CI=true``, where a missing browser is a failure. Never ``playwright install``: the system chromium
is the one CI has.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import tiny_base  # noqa: F401 - a fixture: the cached tiny base, for runs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 5_000
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: `apt-get install -y chromium` to run the browser tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread while it is started; Django
    # refuses ORM calls from a thread with a running loop unless told it is safe (it is: the loop only
    # talks to the browser). Set only while the browser runs (package scope): left in os.environ it
    # would leak into later tests and their subprocesses (``check --deploy`` fails on async.E001).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield launched
            finally:
                launched.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


# Runs in every page and frame before the page's own scripts: each CSP violation the browser reports
# (a blocked inline script or style, eval, a resource from another origin) goes to the test.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation([
    event.effectiveDirective, event.blockedURI, event.sourceFile + ":" + event.lineNumber, event.sample,
  ].join(" | "));
});
"""


class CspWatch:
    """The CSP violations of every browser context a test opens; the ``browser`` fixture fails on any."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def watch(self, context: Any) -> Any:
        context.expose_function("reportCspViolation", self._report)
        context.add_init_script(CSP_LISTENER)
        context.on("console", self._console)
        return context

    def _report(self, violation: str) -> None:
        self.violations.append(violation)

    def _console(self, message: Any) -> None:
        # Chromium also logs each refusal ("Refused to … because it violates the following Content
        # Security Policy directive …"), including those raised before a listener could run.
        if message.type == "error" and "Content Security Policy" in message.text:
            self.violations.append(f"console: {message.text}")


class WatchedBrowser:
    """The package's chromium, whose every new context reports CSP violations to the test."""

    def __init__(self, chromium: Any, watch: CspWatch) -> None:
        self._chromium, self._watch = chromium, watch

    def new_context(self, **kwargs: Any) -> Any:
        return self._watch.watch(self._chromium.new_context(**kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chromium, name)


@pytest.fixture
def csp_watch() -> CspWatch:
    return CspWatch()


@pytest.fixture
def browser(chromium: Any, csp_watch: CspWatch) -> Iterator[Any]:
    """The browser for one test: any Content-Security-Policy violation in any of its pages fails it."""
    yield WatchedBrowser(chromium, csp_watch)
    assert not csp_watch.violations, f"Content-Security-Policy violations: {csp_watch.violations}"


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the live server; JS errors and CSP violations fail the test."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def login_as(live_server: Any) -> Any:
    """Log a browser context in as ``user`` with a session cookie (the login form has its own test)."""
    from django.conf import settings
    from django.test import Client

    def login(context: Any, user: Any) -> None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])

    return login
