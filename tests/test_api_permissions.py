"""Role × endpoint table for every route under /api/v1/.

The test walks the URL resolver: an endpoint (method + route) missing from ``TABLE`` fails, and so
does a table row whose endpoint no longer exists. Each row declares the status every persona gets on
an empty database (ids in routes are ones that do not exist). ``OK`` means "let through": any status
except 401/403 and never a server error (used where the answer depends on state the row cannot fix).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver

from tests.conftest import client_for

OK = "ok"
DENY = 403
ANON = 401

PERSONAS = ("annotator", "reviewer", "api_client", "outsider", "anonymous")


def row(annotator: Any, reviewer: Any, api_client: Any, outsider: Any = DENY, anonymous: Any = ANON) -> dict:
    return dict(zip(PERSONAS, (annotator, reviewer, api_client, outsider, anonymous), strict=True))


ANNOTATOR_ONLY = row(OK, DENY, DENY)
REVIEWER_ONLY = row(DENY, OK, DENY)
READERS = row(DENY, OK, OK)

TABLE: dict[str, dict[str, Any]] = {
    # annotation (annotation/api.py)
    "POST annotate/next": ANNOTATOR_ONLY,
    "POST annotate/submit": ANNOTATOR_ONLY,
    "POST annotate/skip": ANNOTATOR_ONLY,
    "POST annotate/undo": ANNOTATOR_ONLY,
    "GET annotate/progress": ANNOTATOR_ONLY,
    "GET annotate/annotations": ANNOTATOR_ONLY,
    "POST annotate/annotations/<int:annotation_id>": ANNOTATOR_ONLY,
    "GET annotate/codebook": row(OK, OK, DENY),
    "POST annotate/codebook/ack": ANNOTATOR_ONLY,
    "GET annotate/flag": row(200, DENY, DENY),
    "POST annotate/flag": row(400, DENY, DENY),  # an empty body names its fields
    "GET annotate/flags": row(200, DENY, DENY),
    "GET annotation/codebook/versions": REVIEWER_ONLY,
    "POST annotation/codebook/versions": REVIEWER_ONLY,
    "GET annotation/codebook/diff": row(OK, OK, DENY),
    "GET annotation/adjudications": REVIEWER_ONLY,
    "POST annotation/adjudications/<int:task_id>/resolve": REVIEWER_ONLY,
    "GET annotation/annotators/paused": REVIEWER_ONLY,
    "POST annotation/annotators/<int:user_id>/unpause": REVIEWER_ONLY,
    "GET annotation/quarantine": row(DENY, 200, DENY),
    "POST annotation/annotators/<int:user_id>/quarantine/release": row(DENY, 404, DENY),
    "POST annotation/annotators/<int:user_id>/quarantine/drop": row(DENY, 404, DENY),
    "GET annotation/agreement": REVIEWER_ONLY,
    "GET annotation/blind-vs-shown": REVIEWER_ONLY,
    "GET annotation/queue": REVIEWER_ONLY,
    "GET gold": row(DENY, 200, DENY),
    "POST gold": row(DENY, 400, DENY),  # an empty body is not a gold item
    "GET flags": row(DENY, 200, DENY),
    "POST flags/<int:flag_id>/decide": row(DENY, 400, DENY),  # the action is checked first
    "GET annotations/export": READERS,
    "GET labels/export": row(DENY, 200, 200),
    # model registry (training/api.py): exact statuses on an empty database
    "GET versions": row(DENY, 200, 200),
    "GET versions/champion": row(DENY, 404, 404),
    "GET versions/<int:number>": row(DENY, 404, 404),
    "GET versions/<int:number>/download": row(DENY, 404, 404),
    "POST versions/<int:number>/rollback": row(DENY, 404, DENY),
    "GET runs": row(DENY, 200, 200),
    "GET runs/<int:run_id>": row(DENY, 404, 404),
    "GET runs/<int:run_id>/progress": row(DENY, 404, 404),
    "POST runs/<int:run_id>/cancel": row(DENY, 404, DENY),
    "POST runs/<int:run_id>/retry": row(DENY, 404, DENY),
    "GET runs/<int:run_id>/dataset": row(DENY, 404, 404),
    "GET batches": row(DENY, 200, 200),
    "POST batches/create": row(DENY, 409, DENY),  # no resolved labels to batch
    "GET batches/<int:batch_id>": row(DENY, 404, 404),
    "POST batches/<int:batch_id>/approve": row(DENY, 404, DENY),
    "POST batches/<int:batch_id>/reject": row(DENY, 400, DENY),  # the reason is checked first
    "GET batches/<int:batch_id>/items": row(DENY, 404, DENY),
    "POST batches/<int:batch_id>/exclude": row(DENY, 400, DENY),  # the body is checked first
    "POST batches/<int:batch_id>/restore": row(DENY, 400, DENY),
    "GET batches/<int:batch_id>/export": row(DENY, 404, 404),
    "POST products/import": row(DENY, 400, DENY),  # no file
    "GET audit": row(DENY, 200, DENY),
}


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def endpoints() -> list[str]:
    from webapp import api_urls

    found = []
    for route, callback in _walk(list(api_urls.urlpatterns)):
        view = getattr(callback, "view_class", None)
        methods = [
            m for m in ("get", "post", "put", "patch", "delete") if view is not None and hasattr(view, m)
        ]
        assert methods, f"/api/v1/{route} has no method handlers: is it a function view? classify it anyway"
        found.extend(f"{m.upper()} {route}" for m in methods)
    return found


def test_it_classifies_every_api_endpoint() -> None:
    found = set(endpoints())
    unclassified = sorted(found - set(TABLE))
    stale = sorted(set(TABLE) - found)
    assert not unclassified, f"add these endpoints to TABLE in {__file__}: {unclassified}"
    assert not stale, f"these TABLE rows name endpoints that no longer exist: {stale}"


def _url(route: str) -> str:
    return "/api/v1/" + re.sub(r"<(?:int:)?[^>]+>", "999999", route)


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", sorted(TABLE))
def test_it_gives_each_role_its_declared_status(
    endpoint: str, annotator: Any, reviewer: Any, api_client_user: Any, outsider: Any
) -> None:
    method, route = endpoint.split(" ", 1)
    users = {
        "annotator": annotator,
        "reviewer": reviewer,
        "api_client": api_client_user,
        "outsider": outsider,
        "anonymous": None,
    }
    seen = {}
    for persona, expected in TABLE[endpoint].items():
        client = client_for(users[persona])
        response = getattr(client, method.lower())(_url(route), format="json")
        seen[persona] = response.status_code
        assert response.status_code < 500, f"{endpoint} as {persona}: server error {response.status_code}"
        if expected == OK:
            assert response.status_code not in (401, 403), f"{endpoint} as {persona}: {response.status_code}"
        else:
            assert response.status_code == expected, f"{endpoint} as {persona}: {seen}"
        if response.status_code >= 400 and response.get("Content-Type", "").startswith("application/json"):
            assert "error" in response.json(), f"{endpoint} as {persona}: error body without 'error'"
