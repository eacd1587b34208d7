"""Safe rollback: a version's files pass the download's checks before it becomes champion, and a version
the gate rejected becomes champion only with a written override that the audit trail keeps."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.conftest import client_for
from tests.training.factories import make_version
from training.models import AuditEvent, ModelVersion, VersionStatus


@pytest.fixture
def versions(settings: Any, tmp_path: Path) -> dict[str, ModelVersion]:
    """v1 an earlier champion (archived), v2 rejected by the gate, v3 the champion."""
    settings.ARTIFACT_ROOT = tmp_path
    return {
        "v1": make_version(tmp_path, 1, mae=90.0),
        "v2": make_version(tmp_path, 2, status=VersionStatus.REJECTED, mae=95.0),
        "v3": make_version(tmp_path, 3, status=VersionStatus.CHAMPION, mae=70.0),
    }


def _champion() -> str:
    return ModelVersion.objects.get(status=VersionStatus.CHAMPION).name


def _rollback(user: Any, number: int, body: dict[str, Any]) -> Any:
    return client_for(user).post(f"/api/v1/versions/{number}/rollback", body, format="json")


@pytest.mark.django_db
def test_it_refuses_a_version_with_a_pickle_added_and_keeps_the_champion(
    versions: dict[str, ModelVersion], reviewer: Any, tmp_path: Path
) -> None:
    (tmp_path / "versions" / "v1" / "adapter_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))
    response = _rollback(reviewer, 1, {"reason": "v3 drifts"})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "version_files_invalid"
    assert "v1" in error["message"]
    assert "adapter_model.bin" in error["message"]
    assert _champion() == "v3"
    versions["v1"].refresh_from_db()
    assert versions["v1"].status == VersionStatus.ARCHIVED
    assert not AuditEvent.objects.filter(action="rollback").exists()


@pytest.mark.django_db
def test_it_refuses_a_version_whose_weights_changed_by_one_byte(
    versions: dict[str, ModelVersion], reviewer: Any, tmp_path: Path
) -> None:
    weights = tmp_path / "versions" / "v1" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # inside the tensor data: the header still parses, the sha256 no longer matches
    weights.write_bytes(bytes(data))
    response = _rollback(reviewer, 1, {})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_files_invalid"
    assert "sha256" in response.json()["error"]["message"]
    assert _champion() == "v3"


@pytest.mark.django_db
def test_a_tampered_rejected_version_stays_refused_even_with_an_override(
    versions: dict[str, ModelVersion], reviewer: Any, tmp_path: Path
) -> None:
    (tmp_path / "versions" / "v2" / "adapter_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))
    response = _rollback(reviewer, 2, {"override_reason": "the test split was stale"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_files_invalid"
    assert _champion() == "v3"
    versions["v2"].refresh_from_db()
    assert versions["v2"].status == VersionStatus.REJECTED


@pytest.mark.django_db
def test_a_rejected_version_needs_a_written_override_which_the_audit_trail_keeps(
    versions: dict[str, ModelVersion], reviewer: Any
) -> None:
    for body in ({}, {"reason": "try it"}, {"override_reason": "   "}):
        refused = _rollback(reviewer, 2, body)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "rollback_needs_override"
        assert "override_reason" in refused.json()["error"]["message"]
    assert _champion() == "v3"
    assert not AuditEvent.objects.filter(action="rollback").exists()

    accepted = _rollback(reviewer, 2, {"override_reason": "the gate's test split predates the new catalogue"})
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "champion"
    assert _champion() == "v2"
    event = AuditEvent.objects.get(action="rollback")
    assert event.actor == reviewer
    assert event.version == versions["v2"]
    assert event.previous_champion == versions["v3"]
    assert event.numbers["gate_override"] == {
        "version": "v2",
        "status": "rejected",
        "reason": "the gate's test split predates the new catalogue",
    }
    assert "override of the gate's rejection" in event.message

    # Once superseded it is archived, yet still known as gate-rejected: going back needs a reason again.
    assert _rollback(reviewer, 3, {}).status_code == 200
    again = _rollback(reviewer, 2, {})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "rollback_needs_override"

    page = Client()
    page.force_login(reviewer)
    html = page.get("/review/versions/").content.decode()
    assert "gate overridden" in html
    assert 'name="override_reason"' in html


@pytest.mark.django_db
def test_a_rollback_to_an_earlier_good_champion_still_works(
    versions: dict[str, ModelVersion], reviewer: Any
) -> None:
    response = _rollback(reviewer, 1, {"reason": "v3 drifts"})
    assert response.status_code == 200
    assert _champion() == "v1"
    versions["v3"].refresh_from_db()
    assert versions["v3"].status == VersionStatus.ARCHIVED
    event = AuditEvent.objects.get(action="rollback")
    assert event.message == "v3 drifts"
    assert "gate_override" not in event.numbers


@pytest.mark.django_db
def test_the_page_overrides_a_rejection_only_with_a_reason_and_a_confirmation(
    versions: dict[str, ModelVersion], reviewer: Any
) -> None:
    page = Client()
    page.force_login(reviewer)
    url = "/review/versions/2/rollback/"
    no_reason = page.post(url, {"confirm": "yes"}, follow=True).content.decode()
    assert "override reason" in no_reason
    no_confirm = page.post(url, {"override_reason": "stale split"}, follow=True).content.decode()
    assert "Tick the confirmation" in no_confirm
    assert _champion() == "v3"
    page.post(url, {"override_reason": "stale split", "confirm": "yes"})
    assert _champion() == "v2"
    assert AuditEvent.objects.get(action="rollback").numbers["gate_override"]["reason"] == "stale split"
