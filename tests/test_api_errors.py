"""/api/v1/ answers every path with the API's JSON error shape, including paths no endpoint serves."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import client_for


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
