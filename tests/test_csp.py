"""The Content-Security-Policy header: on every kind of response, and strict (nothing inline, no eval).

The browser side (pages work under it, a violation fails a test) is in tests/e2e/test_csp.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import client_for

ROOT = Path(__file__).resolve().parent.parent


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "path"),
    [
        (None, "/login/"),
        (None, "/healthz"),
        ("annotator", "/annotate/"),
        ("reviewer", "/review/"),
        ("reviewer", "/review/batches/"),
        ("reviewer", "/api/v1/versions"),
        ("reviewer", "/no-such-page/"),
    ],
)
def test_it_sends_a_policy_that_blocks_inline_scripts_and_eval(
    request: pytest.FixtureRequest, persona: str | None, path: str
) -> None:
    user: User | None = request.getfixturevalue(persona) if persona else None

    policy = client_for(user).get(path)["Content-Security-Policy"]

    directives = _directives(policy)
    # An inline <script>, an onclick="" or eval() runs only with 'unsafe-inline'/'unsafe-eval' (or a
    # nonce/hash): none is there, so the browser blocks them (tests/e2e/test_csp.py shows it does).
    for directive in ("script-src", "style-src"):
        assert directives[directive] == ["'self'"], policy
    assert directives["default-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in policy


@pytest.mark.django_db
def test_it_widens_the_policy_on_the_api_docs_page_only_for_swagger_uis_data_images(reviewer: User) -> None:
    client = client_for(reviewer)
    page = client.get("/api/docs/")
    script = client.get("/api/docs/?script=")

    directives = _directives(page["Content-Security-Policy"])
    assert directives["img-src"] == ["'self'", "data:"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    html = page.content.decode()
    assert "<style" not in html  # drf-spectacular's inline styles come from a static file here
    assert re.search(r"<script>\s*\S", html) is None  # and its start-up script from ?script=
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE), "an inline <script>"),
    (re.compile(r"<style\b", re.IGNORECASE), "a <style> element"),
    (re.compile(r"\sstyle\s*=", re.IGNORECASE), "a style= attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.IGNORECASE), "an on…= handler attribute"),
    (re.compile(r"\bhx-on", re.IGNORECASE), "an hx-on handler (htmx evaluates it)"),
    (re.compile(r"javascript:", re.IGNORECASE), "a javascript: URL"),
]


def test_no_template_carries_inline_code_or_styles() -> None:
    """What the policy would block, caught before a browser sees it: pages keep code and styles in files."""
    templates = sorted(ROOT.glob("*/templates/**/*.html"))
    assert len(templates) > 20
    found = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in templates
        for pattern, what in INLINE
        if pattern.search(re.sub(r"\{#.*?#\}", "", path.read_text()))  # template comments may say it
    ]
    assert found == []
