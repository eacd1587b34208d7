"""The OpenAPI document describes every operation for a reader: its own summary and description, the
errors its permissions answer with, and the headers a client relies on."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_it_gives_every_operation_its_own_summary_and_description() -> None:
    operations = _operations()
    assert len(operations) >= 30
    descriptions = Counter(op.get("description", "") for _, _, op in operations)
    for method, path, op in operations:
        assert op.get("summary"), f"{method} {path} has no summary"
        description = op.get("description", "")
        assert description, f"{method} {path} has no description"
        assert descriptions[description] == 1, f"{method} {path} shares its description: {description!r}"
        assert not description.startswith("Base:"), f"{method} {path} shows a base class's docstring"


def test_it_documents_the_errors_that_permissions_answer_with() -> None:
    for method, path, op in _operations():
        codes = set(op["responses"])
        assert "401" in codes, f"{method} {path}: 401 undocumented"
        assert "403" in codes, f"{method} {path}: 403 undocumented (every operation needs a role)"
        for code in ("400", "401", "403", "404", "409"):
            if code in codes:
                content = op["responses"][code].get("content", {})
                assert "application/json" in content, f"{method} {path} {code}: no error body"


def test_it_documents_the_checksum_header_of_a_download() -> None:
    (op,) = [op for _, path, op in _operations() if path == "/api/v1/versions/{number}/download"]
    headers = op["responses"]["200"]["headers"]
    assert {"X-Checksum-SHA256", "ETag", "Content-Disposition"} <= set(headers)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/versions?page=abc", "page"),
        ("/api/v1/runs?page=0", "page"),
        ("/api/v1/versions?status=best", "status"),
        ("/api/v1/batches?status=done", "status"),
        ("/api/v1/runs/1/progress?after_step=-5", "after_step"),
        ("/api/v1/annotation/codebook/diff?to=x", "to"),
        ("/api/v1/annotations/export?output=xml", "output"),
        ("/api/v1/labels/export?output=xlsx", "output"),
        ("/api/v1/labels/export?created_after=yesterday", "created_after"),
        ("/api/v1/labels/export?batched=maybe", "batched"),
        ("/api/v1/batches/1/export?output=xml", "output"),
        ("/api/v1/runs/1/dataset?output=xml", "output"),
        ("/api/v1/annotation/quarantine?page=-1", "page"),
    ],
)
def test_it_answers_a_bad_query_parameter_with_400_naming_it(reviewer: Any, url: str, field: str) -> None:
    from tests.conftest import client_for

    response = client_for(reviewer).get(url)
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == [field]


def test_it_pages_every_list(reviewer: Any) -> None:
    from tests.conftest import client_for

    client = client_for(reviewer)
    for url in ("/api/v1/annotation/codebook/versions", "/api/v1/annotation/quarantine", "/api/v1/versions"):
        body = client.get(url).json()
        assert set(body) >= {"count", "next", "previous", "results"}, url
    beyond = client.get("/api/v1/versions?page=9")
    assert beyond.status_code == 404  # beyond the last page: no such resource, as DRF answers
    assert beyond.json()["error"]["message"].startswith("page 9 does not exist (")
    assert "?page=last is the last page" in beyond.json()["error"]["message"]
