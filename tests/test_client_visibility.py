"""What a client token can read, role × endpoint: no traceback, server path, annotator identity, seconds
spent or gold flag reaches a client; a reviewer still reads every one of them (webapp/visibility.py)."""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation import services as annotation_services
from annotation.models import AnnotatorStatus, Task
from tests.annotation.queue_helpers import lease, make_tasks, submit
from tests.conftest import client_for
from tests.training.factories import make_version
from training.models import RetrainBatch, TrainingRun, VersionStatus
from training.services.batches import batch_create_from_resolved
from training.services.runs import run_fail
from webapp.visibility import ClientVisibleSerializer, one_line_error, strip_paths

pytestmark = pytest.mark.django_db

# Keys that carry who annotated, how long, which items were gold, or the run's raw log.
FORBIDDEN_KEYS = {
    "annotator",
    "annotators",
    "annotator_id",
    "annotator_ids",
    "username",
    "reviewer",
    "seconds_spent",
    "gold",
    "is_gold",
    "gold_seen",
    "gold_accuracy_mean",
    "logs",
}
PERSONS = ("alice", "bob", "rita")  # the two annotators and the reviewer (tests/conftest.py)
# A path under a usual top-level folder, not preceded by a URL's "//" or a word (hub ids stay).
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:tmp|var|home|srv|work|usr|opt|root|data|run|mnt)/")


@pytest.fixture
def world(settings: Any, tmp_path: Path, annotator: User, annotator2: User, reviewer: User) -> dict[str, Any]:
    """A registry as a real deployment has it: a base model at a server path, a batch labelled by two
    annotators (one on a gold item, one paused), a run that failed with a traceback, a logged run."""
    settings.ARTIFACT_ROOT = tmp_path
    settings.ANNOTATION_GOLD_RATE = 0.0
    settings.ANNOTATION_BLIND_SHARE = 0.0
    base = str(tmp_path / "models" / "base-tiny")
    versions = [make_version(tmp_path, 1, mae=90.0), make_version(tmp_path, 3, status=VersionStatus.CHAMPION)]
    for version in versions:
        version.base_model = base
        version.manifest = {**version.manifest, "base_model": base}
        version.save(update_fields=["base_model", "manifest"])

    tasks = make_tasks(3)
    for user in (annotator, annotator, annotator2):
        submit(user, lease(user), "correct", "80", seconds_spent=7)
    Task.objects.filter(pk=tasks[0].pk).update(is_gold=True, gold_price="80.00")
    AnnotatorStatus.objects.update_or_create(user=annotator, defaults={"gold_seen": 10, "gold_correct": 9})
    AnnotatorStatus.objects.update_or_create(user=annotator2, defaults={"gold_seen": 10, "gold_correct": 2})
    batch = batch_create_from_resolved(min_size=1)
    annotation_services.annotator_pause(annotator=annotator2, reason="gold accuracy 2/10.")
    RetrainBatch.objects.filter(pk=batch.pk).update(reviewer=reviewer, reason="looks fine")

    run = TrainingRun.objects.create(
        batch=batch,
        recipe_name="tiny",
        base_model=base,
        candidate=versions[1],
        status="running",
        logs=f"[12:00:00] loading the base from {base}\n",
    )
    try:
        (tmp_path / "missing" / "adapter_model.safetensors").read_bytes()
    except OSError as exc:  # the text run_fail gets from the training task (training/services/runs.py)
        run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    # v1's files no longer verify (one went missing): its download answers 409 with the reason.
    (tmp_path / "versions" / "v1" / "adapter_config.json").unlink()
    return {"run": run, "batch": batch, "tmp_path": tmp_path}


# endpoint → what a reviewer reads there that a client must not
ENDPOINTS = {
    "runs detail": ("/api/v1/runs/{run}", "{tmp}"),
    "runs list": ("/api/v1/runs", "{tmp}"),
    "run progress": ("/api/v1/runs/{run}/progress", None),
    "versions list": ("/api/v1/versions", None),  # base_model is a label for everyone
    "version detail": ("/api/v1/versions/3", "{tmp}"),
    "champion": ("/api/v1/versions/champion", "{tmp}"),
    "batches list": ("/api/v1/batches", "rita"),
    "batch detail": ("/api/v1/batches/{batch}", "bob"),
    "annotations export jsonl": ("/api/v1/annotations/export", '"gold": true'),
    "annotations export json": ("/api/v1/annotations/export?output=json", "alice"),
    "labels export": ("/api/v1/labels/export", None),
    "batch export": ("/api/v1/batches/{batch}/export", "bob"),
    "download error": ("/api/v1/versions/1/download", "{tmp}"),
}


def _get(user: User, path: str, world: dict[str, Any]) -> str:
    url = path.format(run=world["run"].pk, batch=world["batch"].pk)
    response = client_for(user).get(url)
    assert response.status_code in (200, 409), (url, response.status_code)
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def _documents(text: str) -> Iterator[Any]:
    try:
        yield json.loads(text)
    except json.JSONDecodeError:  # JSON Lines
        for line in text.splitlines():
            yield json.loads(line)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_client_token_reads_no_trace_path_person_or_gold_flag(
    world: dict[str, Any], api_client_user: User, endpoint: str
) -> None:
    text = _get(api_client_user, ENDPOINTS[endpoint][0], world)
    assert "Traceback" not in text
    assert str(world["tmp_path"]) not in text
    assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text)
    for person in PERSONS:
        assert not re.search(rf"\b{person}\b", text), person
    keys = {key for document in _documents(text) for key in _keys(document)}
    assert not keys & FORBIDDEN_KEYS


@pytest.mark.parametrize("endpoint", [name for name, (_, seen) in ENDPOINTS.items() if seen])
def test_a_reviewer_still_reads_them(world: dict[str, Any], reviewer: User, endpoint: str) -> None:
    path, seen = ENDPOINTS[endpoint]
    text = _get(reviewer, path, world)
    assert seen is not None
    assert seen.format(tmp=world["tmp_path"]) in text


def test_a_client_reads_what_it_needs_from_each(world: dict[str, Any], api_client_user: User) -> None:
    client = client_for(api_client_user)
    run = client.get(f"/api/v1/runs/{world['run'].pk}").json()
    assert run["status"] == "failed"
    missing = "'…/adapter_model.safetensors'"
    assert run["error"] == f"FileNotFoundError: [Errno 2] No such file or directory: {missing}"
    assert run["base_model"] == "base-tiny"  # a local base's folder name
    assert run["candidate"] == "v3"
    champion = client.get("/api/v1/versions/champion").json()
    assert champion["metrics"]["mae"] == 50.0
    assert champion["lineage"]["batch"]["id"] == world["batch"].pk
    assert champion["manifest"]["base_model"] == "…/base-tiny"
    assert champion["manifest"]["files"]["adapter_model.safetensors"]["sha256"]
    batch = client.get(f"/api/v1/batches/{world['batch'].pk}").json()
    assert batch["stats"]["rows"] == world["batch"].size == 2  # the gold item is no label
    assert batch["stats"]["agreement"]
    floor = next(check for check in batch["checks"] if check["name"] == "annotators_below_floor")
    assert floor == {
        "name": "annotators_below_floor",
        "passed": False,
        "value": 1,
        "threshold": 0,
        "message": "1 annotator(s) of this batch are paused or below the 60% gold accuracy floor.",
    }
    rows = client.get("/api/v1/annotations/export?output=json").json()
    assert [row["corrected_price"] for row in rows] == ["80.00"] * 3
    assert set(rows[0]) >= {"id", "task_id", "product_external_id", "verdict", "codebook_version", "created"}
    refused = client.get("/api/v1/versions/1/download").json()["error"]
    assert refused["code"] == "artifact_invalid"
    assert "server log" in refused["message"]


def test_every_field_a_client_can_read_is_classified() -> None:
    """A new field on a client-readable serializer is a decision: plain for clients, rewritten or hidden."""

    def all_subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from all_subclasses(sub)

    import training.api  # noqa: F401 - registers the serializers

    serializers = list(all_subclasses(ClientVisibleSerializer))
    assert len(serializers) >= 7
    for serializer in serializers:
        fields = set(serializer().fields)
        classified = set(serializer.client_plain) | set(serializer.client_view)
        assert fields == classified, (serializer.__name__, fields ^ classified)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/srv/priceloop/var/base-tiny", "…/base-tiny"),
        ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("see https://example.com/a/b", "see https://example.com/a/b"),
        ("open '/tmp/x/y.json' failed", "open '…/y.json' failed"),
    ],
)
def test_paths_are_cut_to_their_last_part(text: str, shown: str) -> None:
    assert strip_paths(text) == shown


def test_a_bare_traceback_becomes_its_summary_line() -> None:
    error = 'Traceback (most recent call last):\n  File "/srv/a.py", line 1, in f\nValueError: bad /srv/x'
    assert one_line_error(error) == "ValueError: bad …/x"
