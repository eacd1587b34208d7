"""The audit trail: every decision, made through the API as a reviewer would, leaves one row naming its
actor and its object; ``/api/v1/audit`` filters and pages them (reviewers only); the Audit page pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from annotation import services
from annotation.models import AnnotatorStatus, Task
from tests.annotation.queue_helpers import lease, make_products, make_tasks, submit
from tests.conftest import client_for
from tests.training.factories import make_version
from training import pipeline
from training.models import AuditAction, AuditEvent, RunStage, RunStatus, TrainingRun, VersionStatus
from training.services import batches as batch_services
from training.services.registry import _apply_decision

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings.ARTIFACT_ROOT = tmp_path
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.RETRAIN_RECIPE = "tiny"
    settings.RETRAIN_RECIPE_OVERRIDES = ""
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # no worker here


def _ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.content
    return response.json()


def _every_decision(reviewer: User, annotator: User, annotator2: User, tmp_path: Path) -> dict[str, Any]:
    """Each decision once, through the reviewer's API where one exists; returns the objects by action."""
    api = client_for(reviewer)
    objects: dict[str, Any] = {}

    # codebook publish
    _ok(api.post("/api/v1/annotation/codebook/versions", {"markdown": "# Rules\n"}, format="json"))
    objects["codebook_publish"] = ("codebook", "v1")
    services.codebook_acknowledge(annotator=annotator, version_number=1)
    services.codebook_acknowledge(annotator=annotator2, version_number=1)

    # gold changes
    gold = make_products(1, price="50.00")[0]
    _ok(api.post("/api/v1/gold", {"id": gold.external_id, "price": 50}, format="json"))
    objects["gold_create"] = ("gold", str(Task.objects.get(is_gold=True).pk))

    # adjudication: two annotators far apart on one item
    task = make_tasks(1, overlap=2)[0]
    submit(annotator, lease(annotator), "correct", "10", confirm_price=True)
    submit(annotator2, lease(annotator2), "correct", "900", confirm_price=True)
    _ok(api.post(f"/api/v1/annotation/adjudications/{task.pk}/resolve", {"price": "100"}, format="json"))
    objects["adjudicate"] = ("task", str(task.pk))

    # batch create, exclude, approve; a second batch rejected
    make_tasks(3)
    for _ in range(3):
        submit(annotator, lease(annotator), "accept")
    AnnotatorStatus.objects.filter(user__in=[annotator, annotator2]).update(gold_seen=10, gold_correct=10)
    batch = _ok(api.post("/api/v1/batches/create", {"min_size": 1}, format="json"))
    objects["batch_create"] = ("batch", str(batch["id"]))
    item = _ok(api.get(f"/api/v1/batches/{batch['id']}/items"))["results"][0]
    _ok(
        api.post(
            f"/api/v1/batches/{batch['id']}/exclude", {"item_ids": [item["id"]], "reason": "x"}, format="json"
        )
    )
    objects["batch_exclude"] = ("batch", str(batch["id"]))
    run = _ok(api.post(f"/api/v1/batches/{batch['id']}/approve", {"override_reason": "fine"}, format="json"))
    objects["batch_approve"] = ("batch", str(batch["id"]))
    make_tasks(1)
    submit(annotator, lease(annotator), "accept")
    other = batch_services.batch_create_from_resolved(min_size=1)  # the beat's batch: actor "system"
    _ok(api.post(f"/api/v1/batches/{other.pk}/reject", {"reason": "too small"}, format="json"))
    objects["batch_reject"] = ("batch", str(other.pk))

    # run cancel
    _ok(api.post(f"/api/v1/runs/{run['id']}/cancel"))
    objects["run_cancel"] = ("run", str(run["id"]))
    _ok(api.post(f"/api/v1/runs/{run['id']}/retry"))  # a cancelled run started again (no worker here)
    objects["run_retry"] = ("run", str(run["id"]))

    # promotion (the gate: no person) and rollback
    v1 = make_version(tmp_path, 1, status=VersionStatus.CHAMPION)
    v2 = make_version(tmp_path, 2, status=VersionStatus.CANDIDATE)
    gated = TrainingRun.objects.create(
        recipe_name="tiny",
        base_model="tiny-base",
        candidate=v2,
        status=RunStatus.RUNNING,
        stage=RunStage.EVALUATE,
    )
    assert _apply_decision(
        run_id=gated.pk, candidate=v2, champion=v1, decision={"promote": True, "reasons": ["ok"]}
    )
    objects["promote"] = ("version", "2")
    _ok(api.post("/api/v1/versions/1/rollback", {"reason": "v2 misprices shoes"}, format="json"))
    objects["rollback"] = ("version", "1")

    # pause (by a reviewer), quarantine release, unpause
    make_tasks(1)
    submit(annotator2, lease(annotator2), "accept")  # a label for the pause to quarantine
    services.annotator_pause(annotator=annotator2, reason="copy-paste", reviewer=reviewer)
    objects["annotator_pause"] = ("annotator", str(annotator2.pk))
    _ok(api.post(f"/api/v1/annotation/annotators/{annotator2.pk}/quarantine/release"))
    objects["quarantine_release"] = ("annotator", str(annotator2.pk))
    _ok(api.post(f"/api/v1/annotation/annotators/{annotator2.pk}/unpause"))
    objects["annotator_unpause"] = ("annotator", str(annotator2.pk))
    return objects


def test_every_decision_leaves_one_row_with_its_actor_and_object(
    reviewer: User, annotator: User, annotator2: User, tmp_path: Path
) -> None:
    objects = _every_decision(reviewer, annotator, annotator2, tmp_path)
    api = client_for(reviewer)
    for action, (kind, ident) in objects.items():
        rows = _ok(api.get("/api/v1/audit", {"action": action, "actor": reviewer.username}))["results"]
        if action == "promote":  # the gate decides, not a person
            rows = _ok(api.get("/api/v1/audit", {"action": action, "actor": "system"}))["results"]
        assert len(rows) == 1, (action, rows)
        assert rows[0]["object"]["type"] == kind, (action, rows[0])
        assert rows[0]["object"]["id"] == ident, (action, rows[0])
        expected_actor = None if action == "promote" else reviewer.username
        assert rows[0]["actor"] == expected_actor, action
    # the beat's batch is created by "system"; the reviewer's by the reviewer
    created = _ok(api.get("/api/v1/audit", {"action": "batch_create"}))["results"]
    assert sorted(str(r["actor"]) for r in created) == sorted(["None", reviewer.username])
    # the approve row names its batch (it once did not)
    approve = AuditEvent.objects.get(action=AuditAction.BATCH_APPROVE)
    assert approve.batch_id == int(objects["batch_approve"][1])
    assert approve.run_id is not None


def test_the_audit_api_filters_by_object_and_since_and_refuses_bad_filters(
    reviewer: User, annotator: User, annotator2: User, tmp_path: Path
) -> None:
    objects = _every_decision(reviewer, annotator, annotator2, tmp_path)
    api = client_for(reviewer)
    batch_id = objects["batch_approve"][1]
    actions = [
        r["action"]
        for r in _ok(api.get("/api/v1/audit", {"object_type": "batch", "object_id": batch_id}))["results"]
    ]
    assert actions == [
        "run_retry",
        "batch_approve",
        "batch_exclude",
        "batch_create",
    ]  # the retry names its batch
    annotator_rows = _ok(api.get("/api/v1/audit", {"object_type": "annotator", "object_id": annotator2.pk}))
    assert {r["action"] for r in annotator_rows["results"]} >= {
        "annotator_pause",
        "quarantine_release",
        "annotator_unpause",
    }
    assert _ok(api.get("/api/v1/audit", {"since": "2999-01-01"}))["count"] == 0
    for params, field in (
        ({"action": "nope"}, "action"),
        ({"since": "yesterday"}, "since"),
        ({"object_type": "cat"}, "object_type"),
    ):
        response = api.get("/api/v1/audit", params)
        assert response.status_code == 400
        assert field in response.json()["error"]["fields"]
    assert client_for(annotator).get("/api/v1/audit").status_code == 403


def test_the_audit_api_and_page_paginate(reviewer: User) -> None:
    AuditEvent.objects.bulk_create(
        [AuditEvent(action=AuditAction.BATCH_CREATE, subject=f"batch:{i}") for i in range(1, 61)]
    )
    body = client_for(reviewer).get("/api/v1/audit").json()
    assert (body["count"], len(body["results"]), body["next"] is not None) == (60, 50, True)
    second = client_for(reviewer).get("/api/v1/audit", {"page": 2}).json()
    assert len(second["results"]) == 10
    client = Client()
    client.force_login(reviewer)
    page = client.get(reverse("training:audit")).content.decode()
    assert "60 decision(s)" in page
    assert "page 1 of 2" in page
    older = client.get(reverse("training:audit"), {"page": 2}).content.decode()
    assert older.count('data-action="batch_create"') == 10
