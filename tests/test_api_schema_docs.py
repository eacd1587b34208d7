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
