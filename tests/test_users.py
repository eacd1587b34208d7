from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.conftest import PASSWORD
from webapp.roles import Role, has_role


@pytest.mark.django_db
def test_it_creates_a_reviewer_who_can_log_in(tmp_path: Path) -> None:
    out = StringIO()
    (tmp_path / "pw").write_text("s3cret-pass-phrase\n")
    call_command(
        "create_user", "rita", "--role", "reviewer", "--password-file", str(tmp_path / "pw"), stdout=out
    )
    user = User.objects.get(username="rita")
    assert has_role(user, Role.REVIEWER)
    assert not has_role(user, Role.ANNOTATOR)
    client = Client()
    response = client.post("/login/", {"username": "rita", "password": "s3cret-pass-phrase"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_it_prints_an_api_token_for_a_client() -> None:
    out = StringIO()
    call_command("create_user", "serving-bot", "--role", "client", "--token", stdout=out)
    key = Token.objects.get(user__username="serving-bot").key
    assert f"token {key}" in out.getvalue()
    # a token-only client has no usable password
    assert not User.objects.get(username="serving-bot").has_usable_password()


@pytest.mark.django_db
def test_it_rejects_an_unknown_role() -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("create_user", "x", "--role", "admin")


@pytest.mark.django_db
def test_it_shows_an_error_for_a_wrong_password(annotator: User) -> None:
    response = Client().post("/login/", {"username": annotator.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


@pytest.mark.django_db
def test_it_logs_out_with_a_post(annotator: User) -> None:
    client = Client()
    # through the login page: django-axes checks every password login, so it needs the request
    assert client.post("/login/", {"username": annotator.username, "password": PASSWORD}).status_code == 302
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302  # back to the login page


@pytest.mark.django_db
def test_it_tells_a_user_without_a_role_to_ask_for_one(outsider: User) -> None:
    client = Client()
    client.force_login(outsider)
    assert b"has no role yet" in client.get("/").content
