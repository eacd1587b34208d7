"""/api/ answers every error with the API's JSON error shape: paths no endpoint serves (404), methods
an endpoint does not take (405), unexpected failures (500), and a database or broker that is down (503)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests import worker_process
from tests.conftest import client_for
from training import selectors as training_selectors
from training import views as training_views
from training.models import RetrainBatch, RunStatus, TrainingRun
from training.services.recovery import runs_recover
from webapp.celery import app as celery_app


@pytest.mark.django_db
def test_it_tells_a_client_that_adds_a_trailing_slash_the_path_to_use(api_client_user: User) -> None:
    response = client_for(api_client_user).get("/api/v1/versions/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "use /api/v1/versions." in error["message"]


@pytest.mark.django_db
def test_it_answers_an_unknown_api_path_with_the_json_error_shape(api_client_user: User) -> None:
    response = client_for(api_client_user).get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "No API endpoint at /api/v1/no-such-thing; the endpoints are listed at /api/docs/.",
        }
    }


@pytest.mark.django_db
def test_it_answers_a_session_post_to_an_unknown_path_with_json_not_a_csrf_page(reviewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)

    response = client.post("/api/v1/batches/", data={})

    assert response.status_code == 404
    assert "use /api/v1/batches." in response.json()["error"]["message"]


@pytest.mark.django_db
def test_it_keeps_the_sites_own_404_page_outside_the_api(reviewer: Any) -> None:
    response = client_for(reviewer).get("/no-such-page/")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


# --- every /api/ error in the one shape: 404, 405, 500, 503 ---------------------------------------------

ERROR_KEYS = {"code", "message", "fields", "codebook_version"}


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The README's shape: ``{"error": {"code", "message", "fields"?}}`` as JSON, with this status."""
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert {"code", "message"} <= set(error) <= ERROR_KEYS
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] == code, error
    return error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/no-such-thing"),
        ("get", "/api/v1/versions/"),  # the demo banner's curl line, with a trailing slash
        ("get", "/api/v1/versions/abc"),
        ("get", "/api/v1/versions/-1"),
        ("get", "/api/v1/versions/99"),  # a version that does not exist
        ("get", "/api/v1/runs/99/"),
        ("get", "/api/v1/"),
        ("get", "/api/"),
        ("get", "/api/schema"),  # the schema lives at /api/schema/
        ("post", "/api/v1/batches/99/approve"),  # a batch that does not exist
        ("post", "/api/v1/batches/99/approve/"),
        ("delete", "/api/v1/nothing/here"),
    ],
)
def test_it_answers_every_api_404_with_the_json_error_shape(
    reviewer: User, api_client_user: User, method: str, path: str
) -> None:
    user = reviewer if method == "post" else api_client_user
    response = getattr(client_for(user), method)(path)

    _assert_error(response, 404, "not_found")


@pytest.mark.django_db
def test_it_names_the_slashed_path_when_a_client_drops_the_slash(api_client_user: User) -> None:
    error = _assert_error(client_for(api_client_user).get("/api/schema"), 404, "not_found")

    assert "use /api/schema/." in error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/v1/versions"),
        ("post", "/api/v1/versions/champion"),
        ("get", "/api/v1/batches/1/approve"),
        ("put", "/api/schema/"),
    ],
)
def test_it_answers_every_api_405_with_the_json_error_shape(reviewer: User, method: str, path: str) -> None:
    response = getattr(client_for(reviewer), method)(path)

    _assert_error(response, 405, "method_not_allowed")


@pytest.mark.django_db
def test_it_answers_an_unexpected_failure_with_a_json_500_and_logs_the_traceback(
    api_client_user: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("secret detail /srv/priceloop/var")

    monkeypatch.setattr(training_selectors, "versions_list", broken)
    client = client_for(api_client_user)
    client.raise_request_exception = False

    response = client.get("/api/v1/versions")

    error = _assert_error(response, 500, "server_error")
    assert "secret" not in error["message"]
    assert "/srv" not in response.content.decode()
    assert "RuntimeError: secret detail" in caplog.text  # the operator gets the real error


@pytest.mark.django_db
def test_it_keeps_the_sites_html_500_page_outside_the_api(
    reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(training_views.selectors, "batches_list", broken)
    client = client_for(reviewer)
    client.raise_request_exception = False

    response = client.get("/review/batches/")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def _closed_port() -> int:
    with socket.socket() as sock:  # a port the OS just handed out and nothing listens on any more
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _database_unreachable(tmp_path: Path) -> Iterator[None]:
    """The default connection pointed at a closed port (PostgreSQL) or a missing folder (SQLite)."""
    conn = connections["default"]
    saved = dict(conn.settings_dict)
    conn.close()
    if conn.vendor == "postgresql":
        conn.settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
    else:
        conn.settings_dict["NAME"] = str(tmp_path / "missing" / "db.sqlite3")
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_json_when_the_database_is_unreachable(
    api_client_user: User, annotator: User, reviewer: User, tmp_path: Path
) -> None:
    token_client = client_for(api_client_user)
    hot_path = APIClient()  # the annotators' token fast path looks the token up before any DRF view
    hot_path.credentials(HTTP_AUTHORIZATION=f"Token {annotator.auth_token.key}")
    session = client_for(reviewer)
    for client in (token_client, hot_path, session):
        client.raise_request_exception = False

    with _database_unreachable(tmp_path):
        responses = [
            token_client.get("/api/v1/versions"),
            token_client.get("/api/v1/versions/champion"),
            hot_path.post("/api/v1/annotate/next", format="json"),
            session.get("/api/v1/batches"),
        ]
        health = Client().get("/healthz")
        missing = token_client.get("/api/v1/no-such-thing")

    for response in responses:
        error = _assert_error(response, 503, "database_unavailable")
        assert "/healthz" in error["message"]
        assert "127.0.0.1" not in response.content.decode()
    assert health.status_code == 503
    assert health.json()["database"] == {"ok": False, "state": "unreachable", "vendor": connection.vendor}
    _assert_error(missing, 404, "not_found")  # no database needed to say so


BROKER_DOWN_SCRIPT = """
import json, sys
import django
django.setup()
from rest_framework.test import APIClient
client = APIClient(HTTP_HOST="localhost")
client.raise_request_exception = False
client.credentials(HTTP_AUTHORIZATION="Token " + sys.argv[1])
response = client.post(sys.argv[2], {"override_reason": "a test batch"}, format="json")
print(json.dumps({"status": response.status_code, "type": response["Content-Type"], "body": response.json()}))
"""


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_json_when_the_broker_is_down_and_sends_the_run_once_it_is_back(
    reviewer: User,
) -> None:
    batch = RetrainBatch.objects.create(content_sha256="b" * 64, size=0)
    token = Token.objects.get_or_create(user=reviewer)[0].key
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="webapp.settings_test",
        DATABASE_URL=worker_process._database_url(),
        CELERY_BROKER_URL=f"redis://127.0.0.1:{_closed_port()}/0",
        PRICELOOP_DATA_DIR=str(settings.DATA_DIR),
    )
    url = f"/api/v1/batches/{batch.pk}/approve"
    answer = subprocess.run(
        [sys.executable, "-c", BROKER_DOWN_SCRIPT, token, url],
        cwd=worker_process.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    result = json.loads(answer.stdout.strip().splitlines()[-1])

    assert (result["status"], result["type"]) == (503, "application/json"), answer.stderr[-2000:]
    assert result["body"]["error"]["code"] == "broker_unavailable"
    assert "broker" in result["body"]["error"]["message"]
    assert "kombu.exceptions.OperationalError" in answer.stderr  # the real error is in the server log
    # The approval committed before the send failed: the run waits in the database, never sent, until
    # the recovery beat's pass sends it once the broker (here: the test's real one) is back.
    run = TrainingRun.objects.get(batch=batch)
    assert (run.status, run.celery_task_id) == (RunStatus.QUEUED, "")
    try:
        assert runs_recover().resent == [run.pk]
    finally:
        celery_app.control.purge()  # no worker here: leave no message for a later test's worker
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    assert run.celery_task_id != ""
    assert runs_recover().resent == []  # sent once


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["approve", "reject"])
def test_it_answers_a_missing_batch_on_the_review_pages_with_a_404_page(reviewer: User, action: str) -> None:
    response = client_for(reviewer).post(f"/review/batches/999/{action}/", {"reason": "x"})

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_it_answers_a_refused_host_under_the_api_with_the_json_error_shape(api_client_user: User) -> None:
    client = client_for(api_client_user)
    client.raise_request_exception = False

    response = client.get("/api/v1/versions", HTTP_HOST="evil.example")

    _assert_error(response, 400, "bad_request")
