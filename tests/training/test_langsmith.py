"""LangSmith tracing against a loopback HTTP server that records what the real ``langsmith`` client sends:
each model guess becomes a run, each annotation feedback on it (accept → 1, reject → 0, correction →
``{"price": …}``); a failing server leaves the cursors in place and never touches annotation."""

from __future__ import annotations

import gzip
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from annotation.models import Product, Split
from annotation.services import guesses_record_bulk, tasks_create_for_products
from tests.training.conftest import catalogue_rows, import_catalogue
from tests.training.factories import make_version
from training import langsmith_sync
from training.models import SyncCursor, VersionStatus

PROJECT_ID = "11111111-2222-3333-4444-555555555555"


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, Any]] = []
        self.fail = False


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "api_key": self.headers.get("x-api-key"),
            }
        )
        status = 500 if self.server.fail else 200
        answer: Any = {"id": "00000000-0000-0000-0000-000000000000"}
        if self.command == "GET" and self.path.startswith("/sessions"):
            answer = [
                {
                    "id": PROJECT_ID,
                    "name": "priceloop-test",
                    "tenant_id": PROJECT_ID,
                    "start_time": "2026-11-22T00:00:00",
                    "reference_dataset_id": None,
                }
            ]
        payload = json.dumps(answer if status == 200 else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_PATCH = do_GET = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


@pytest.fixture
def traced(settings: Any, server: Recorder, tmp_path: Path, annotator: Any) -> dict[str, Any]:
    """Three guessed products labelled accept / reject / correct, LangSmith pointed at the recorder."""
    settings.LANGSMITH_ENDPOINT = f"http://127.0.0.1:{server.server_address[1]}"
    settings.LANGSMITH_API_KEY = "ls-test-key"
    settings.LANGSMITH_PROJECT = "priceloop-test"
    settings.ARTIFACT_ROOT = tmp_path
    settings.ANNOTATION_BLIND_SHARE = 0.0
    settings.ANNOTATION_GOLD_RATE = 0.0
    import_catalogue(catalogue_rows(12))
    version = make_version(tmp_path, 1, status=VersionStatus.CHAMPION, evaluate=False)
    pool = list(Product.objects.filter(split=Split.POOL).order_by("id")[:3])
    guesses = guesses_record_bulk(
        rows=[{"product_id": p.pk, "price": "42.00", "entropy": 1.5} for p in pool],
        model_version=version,
        source="model",
    )
    tasks_create_for_products(products=[p.pk for p in pool], guess_source="model")
    verdicts = iter(["accept", "reject", "correct"])

    def answer(product: Product) -> Any:
        return next(verdicts)

    from annotation.queue import lease_next_task
    from annotation.services import annotation_submit

    for _ in range(3):
        assignment = lease_next_task(annotator=annotator)
        verdict = answer(assignment.task.product)
        annotation_submit(
            annotator=annotator,
            assignment_id=assignment.pk,
            verdict=verdict,
            corrected_price="77.00" if verdict == "correct" else None,
            reason_code="not_a_product" if verdict == "reject" else "",
            seconds_spent=2,
        )
    return {"version": version, "guesses": guesses}


@pytest.mark.django_db
def test_it_logs_guesses_as_runs_and_annotations_as_feedback(
    traced: dict[str, Any], server: Recorder
) -> None:
    sent = langsmith_sync.sync_all()
    assert sent == {"guesses": 3, "annotations": 3}
    runs = [r for r in server.requests if r["method"] == "POST" and r["path"].rstrip("/").endswith("/runs")]
    feedback = [r for r in server.requests if r["path"].rstrip("/").endswith("/feedback")]
    assert len(runs) == 3
    assert len(feedback) == 3
    assert {r["api_key"] for r in runs + feedback} == {"ls-test-key"}
    guess_ids = {str(langsmith_sync.guess_run_id(g.pk)) for g in traced["guesses"]}
    assert {r["body"]["id"] for r in runs} == guess_ids
    run = runs[0]["body"]
    assert run["run_type"] == "llm"
    assert run["session_name"] == "priceloop-test"
    assert run["outputs"]["price"] == 42.0
    assert run["extra"]["metadata"]["model_version"] == "v1"
    by_value = {f["body"]["value"]: f["body"] for f in feedback}
    assert by_value["accept"]["score"] == 1
    assert by_value["reject"]["score"] == 0
    assert by_value["reject"]["comment"] == "not_a_product"
    assert by_value["correct"]["correction"] == {"price": 77.0}
    assert {f["run_id"] for f in by_value.values()} <= guess_ids
    assert {f["session_id"] for f in by_value.values()} == {PROJECT_ID}
    # Nothing new: a second sync sends nothing.
    server.requests.clear()
    assert langsmith_sync.sync_all() == {"guesses": 0, "annotations": 0}
    assert server.requests == []


@pytest.mark.django_db
def test_it_keeps_its_place_when_langsmith_fails(traced: dict[str, Any], server: Recorder) -> None:
    server.fail = True
    with pytest.raises(langsmith_sync.LangSmithSendError):
        langsmith_sync.sync_all()
    assert SyncCursor.objects.get(name=langsmith_sync.GUESSES).last_id == 0
    server.fail = False
    assert langsmith_sync.sync_all() == {"guesses": 3, "annotations": 3}


@pytest.mark.django_db
def test_it_sends_nothing_when_not_configured(settings: Any, server: Recorder) -> None:
    settings.LANGSMITH_ENDPOINT = ""
    settings.LANGSMITH_API_KEY = ""
    assert langsmith_sync.sync_all() == {"guesses": 0, "annotations": 0}
    assert server.requests == []


def test_it_says_how_to_install_langsmith_when_configured_without_it(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.LANGSMITH_API_KEY = "ls-test-key"
    monkeypatch.setitem(sys.modules, "langsmith", None)  # as if the optional extra were not installed
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'priceloop\[langsmith\]'"):
        langsmith_sync.sync_all()
    with pytest.raises(SystemCheckError, match=r"langsmith package is not installed"):
        call_command("check")
