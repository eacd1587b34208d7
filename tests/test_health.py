from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_it_reports_database_and_broker_ok() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_it_returns_503_when_the_broker_is_unreachable(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False


@pytest.mark.django_db
def test_it_serves_the_login_page() -> None:
    response = Client().get("/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
