"""Accounts an operator can trust: login lockout, password rules, role commands, token expiry and
revocation, the API throttle."""

from __future__ import annotations

import io
import logging
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.annotation.queue_helpers import make_tasks
from tests.conftest import PASSWORD, client_for
from webapp.roles import Role, user_roles
from webapp.services import AccountError, user_create_with_role

pytestmark = pytest.mark.django_db


def _login(client: Client, username: str, password: str, path: str = "/login/") -> Any:
    return client.post(path, {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return client.get("/").status_code == 200


# --- lockout (django-axes) ------------------------------------------------------------------------------


def test_it_locks_out_after_repeated_wrong_passwords_and_logs_who_and_where(
    annotator: User, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    answers = [_login(client, annotator.username, f"guess-{i}").status_code for i in range(limit + 3)]
    assert answers[: limit - 1] == [200] * (limit - 1)  # the login form again, with its error
    assert answers[limit - 1 :] == [429] * 4  # locked from the limit on
    with caplog.at_level(logging.WARNING, logger="webapp.lockout"):
        refused = _login(client, annotator.username, PASSWORD)  # the right password, too late
    assert refused.status_code == 429
    assert b"Too many wrong passwords" in refused.content
    assert not _logged_in(client)
    assert (
        "login locked out: username='alice' ip=127.0.0.1 after 5 failed passwords, for 15 min "
        "(unlock now: manage.py axes_reset_username alice)"
    ) in caplog.text
    # another user from the same address is not locked out
    assert _login(Client(), "rita-not-here", "x").status_code == 200


@pytest.mark.parametrize("trusted_proxy", [False, True], ids=["direct", "behind-proxy"])
def test_a_client_written_forwarded_for_does_not_escape_the_lockout(
    annotator: User, settings: Any, caplog: pytest.LogCaptureFixture, trusted_proxy: bool
) -> None:
    settings.TRUSTED_PROXY = trusted_proxy
    client = Client()
    caplog.set_level(logging.WARNING, logger="webapp.lockout")
    # A guesser writes a new X-Forwarded-For each time; a proxy appends the address it saw (10.0.0.7).
    for i in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            "/login/",
            {"username": annotator.username, "password": f"guess-{i}"},
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i}, 10.0.0.7" if trusted_proxy else f"203.0.113.{i}",
        )
    refused = client.post(
        "/login/",
        {"username": annotator.username, "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.1, 10.0.0.7" if trusted_proxy else "198.51.100.1",
    )
    assert refused.status_code == 429
    seen = "10.0.0.7" if trusted_proxy else "127.0.0.1"
    assert f"login locked out: username='alice' ip={seen} " in caplog.text
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {seen}


def test_an_operator_unlocks_with_axes_reset_username(annotator: User, settings: Any) -> None:
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login(client, annotator.username, f"guess-{i}")
    assert _login(client, annotator.username, PASSWORD).status_code == 429
    call_command("axes_reset_username", annotator.username, stdout=StringIO())
    assert _login(client, annotator.username, PASSWORD).status_code == 302
    assert _logged_in(client)


def test_the_lockout_ends_after_the_cool_off(annotator: User, settings: Any) -> None:
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login(client, annotator.username, f"guess-{i}")
    assert _login(client, annotator.username, PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert _login(client, annotator.username, PASSWORD).status_code == 302


def test_the_admin_login_is_locked_out_too(settings: Any) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "root", f"guess-{i}", path="/admin/login/")
    refused = _login(client, "root", PASSWORD, path="/admin/login/")
    assert refused.status_code == 429
    assert client.get("/admin/").status_code == 302  # still not in


# --- passwords ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "is empty"),
        ("a", "too short"),
        ("123456789012345", "entirely numeric"),
        ("password1234", "too common"),
    ],
)
def test_it_refuses_weak_passwords_with_the_reason(password: str, reason: str) -> None:
    with pytest.raises(AccountError, match=reason) as refused:
        user_create_with_role(username="weak", role=Role.ANNOTATOR, password=password)
    assert "the password for weak" in str(refused.value)
    assert not User.objects.filter(username="weak").exists()


def test_only_the_demo_path_skips_the_password_rules() -> None:
    from webapp.demo.seed import DEMO_LOGINS, seed_users

    with pytest.raises(AccountError):
        user_create_with_role(username="reviewer", role=Role.REVIEWER, password="review-demo")
    first, again = seed_users(), seed_users()  # the demo seeds the same data dir again
    assert first == again
    for login in DEMO_LOGINS:  # the demo's printed logins work on the login page
        assert _login(Client(), login.username, login.password).status_code == 302


def test_create_user_refuses_a_password_on_the_command_line() -> None:
    with pytest.raises(CommandError, match=r"shell's history.*--password-file"):
        call_command("create_user", "rita", "--role", "reviewer", "--password", "s3cret-pass-long")
    assert not User.objects.filter(username="rita").exists()


def test_create_user_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a long enough passphrase\n")
    out = StringIO()
    call_command("create_user", "rita", "--role", "reviewer", "--password-file", str(secret), stdout=out)
    assert "rita has role reviewer and logs in with its password" in out.getvalue()
    assert _login(Client(), "rita", "a long enough passphrase").status_code == 302
    secret.write_text("a\n")
    with pytest.raises(CommandError, match="too short"):
        call_command("create_user", "rex", "--role", "reviewer", "--password-file", str(secret))
    with pytest.raises(CommandError, match="cannot be read"):
        call_command("create_user", "rex", "--role", "reviewer", "--password-file", str(tmp_path / "nope"))


def test_create_user_prompts_twice_and_asks_again_on_a_mismatch_or_a_weak_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    typed = iter(
        ["first passphrase ok", "second passphrase", "a", "a", "good passphrase 42", "good passphrase 42"]
    )
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    monkeypatch.setattr("sys.stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    err = StringIO()
    call_command("create_user", "rita", "--role", "reviewer", stdout=StringIO(), stderr=err)
    assert "differ" in err.getvalue()
    assert "too short" in err.getvalue()
    assert _login(Client(), "rita", "good passphrase 42").status_code == 302


def test_create_user_without_a_terminal_says_how_to_give_the_password() -> None:
    with pytest.raises(CommandError, match="--password-file FILE, or --no-password"):
        call_command("create_user", "rita", "--role", "reviewer")


# --- roles ----------------------------------------------------------------------------------------------


def test_create_user_on_an_existing_user_adds_no_role_and_points_to_the_roles_command(
    annotator: User,
) -> None:
    with pytest.raises(
        CommandError, match=r"already exists \(roles: annotator\).*manage.py roles alice --add client"
    ):
        call_command("create_user", "alice", "--role", "client", "--token")
    assert user_roles(User.objects.get(pk=annotator.pk)) == {Role.ANNOTATOR}


def test_the_roles_command_sets_adds_and_removes(annotator: User) -> None:
    def roles(*args: str) -> str:
        out = StringIO()
        call_command("roles", "alice", *args, stdout=out)
        return out.getvalue().strip()

    assert roles() == "user alice has roles: annotator"
    assert (
        roles("--add", "reviewer", "--add", "client") == "user alice has roles: annotator, client, reviewer"
    )
    assert roles("--remove", "annotator") == "user alice has roles: client, reviewer"
    assert roles("--set", "annotator") == "user alice has roles: annotator"
    assert roles("--set") == "user alice has roles: none"
    client = Client()
    client.force_login(annotator)
    assert b"has no role yet" in client.get("/").content
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("roles", "nobody", "--add", "client")
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("roles", "alice", "--add", "admin")


# --- tokens ---------------------------------------------------------------------------------------------


def _age_token(user: User, days: float) -> None:
    Token.objects.filter(user=user).update(created=timezone.now() - timedelta(days=days))


def test_an_expired_token_gets_a_401_that_names_the_fix(api_client_user: User, settings: Any) -> None:
    settings.API_TOKEN_TTL_DAYS = 30
    client = client_for(api_client_user)
    _age_token(api_client_user, 29)
    assert client.get("/api/v1/versions").status_code == 200
    _age_token(api_client_user, 31)
    response = client.get("/api/v1/versions")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "token_expired"
    assert "manage.py rotate_token ci-bot" in error["message"]
    settings.API_TOKEN_TTL_DAYS = 0  # never expire
    assert client.get("/api/v1/versions").status_code == 200


def test_an_expired_token_is_refused_on_the_annotators_hot_path(annotator: User, settings: Any) -> None:
    settings.API_TOKEN_TTL_DAYS = 1
    make_tasks(1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {annotator.auth_token.key}")
    _age_token(annotator, 2)
    response = client.post("/api/v1/annotate/next")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


def test_rotate_revoke_and_list_tokens(api_client_user: User, settings: Any) -> None:
    settings.API_TOKEN_TTL_DAYS = 90
    old = api_client_user.auth_token.key
    _age_token(api_client_user, 100)
    out = StringIO()
    call_command("rotate_token", "ci-bot", stdout=out)
    new = Token.objects.get(user=api_client_user).key
    assert new != old
    assert f"token {new}" in out.getvalue()
    assert "expires 20" in out.getvalue()
    with_old, with_new = APIClient(), APIClient()
    with_old.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    with_new.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert with_old.get("/api/v1/versions").status_code == 401
    assert with_new.get("/api/v1/versions").status_code == 200
    listing = StringIO()
    call_command("list_tokens", stdout=listing)
    assert "ci-bot\tclient\tcreated" in listing.getvalue()
    assert new not in listing.getvalue()
    out = StringIO()
    call_command("revoke_token", "ci-bot", stdout=out)
    assert "token of ci-bot revoked" in out.getvalue()
    assert with_new.get("/api/v1/versions").status_code == 401
    with pytest.raises(CommandError, match="no user 'ghost'"):
        call_command("revoke_token", "ghost")


# --- throttle -------------------------------------------------------------------------------------------


def test_the_registry_is_throttled_per_user_but_the_annotator_loop_is_not(
    api_client_user: User, annotator: User, settings: Any
) -> None:
    cache.clear()
    settings.API_THROTTLE_RATE = "3/minute"
    client = client_for(api_client_user)
    answers = [client.get("/api/v1/versions").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    refused = client.get("/api/v1/annotations/export?output=json")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    make_tasks(1)
    annotating = APIClient()
    annotating.credentials(HTTP_AUTHORIZATION=f"Token {annotator.auth_token.key}")
    assert all(annotating.post("/api/v1/annotate/next").status_code == 200 for _ in range(10))
    session = client_for(annotator)
    assert all(session.post("/api/v1/annotate/next").status_code == 200 for _ in range(10))
    settings.API_THROTTLE_RATE = "off"
    assert client.get("/api/v1/versions").status_code == 200


def test_every_command_the_readme_names_for_accounts_exists() -> None:
    from django.core.management import get_commands

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Accounts and tokens", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"manage\.py (\w+)", section)) | set(re.findall(r"`(axes_\w+)", section))
    assert {
        "create_user",
        "roles",
        "rotate_token",
        "revoke_token",
        "list_tokens",
        "axes_reset_username",
    } <= named
    assert named <= set(get_commands()), named - set(get_commands())
