from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_documents_every_variable_the_settings_read() -> None:
    from webapp.env import READ_VARIABLES

    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert READ_VARIABLES, "the settings read no variable through webapp.env: the check proves nothing"
    missing = sorted(READ_VARIABLES - documented)
    assert not missing, f"add these to .env.example: {missing}"


_SECURITY_VARIABLES = {
    "HTTPS",
    "TRUSTED_PROXY",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
}
_SECRET = "x" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890"


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", *_SECURITY_VARIABLES}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path: Path) -> None:
    result = _manage("check", env={"DEBUG": "0", "PRICELOOP_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_passes_the_deploy_check_with_production_settings(tmp_path: Path) -> None:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "x" * 20 + "-production-like-secret-key-with-enough-entropy-1234567890",
        "ALLOWED_HOSTS": "priceloop.example.com",
        "PRICELOOP_DATA_DIR": str(tmp_path),
        "CACHE_URL": "redis://127.0.0.1:6379/9",  # as deploy/priceloop.env.example has it
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_warns_that_the_api_throttle_is_per_process_without_a_shared_cache(tmp_path: Path) -> None:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": _SECRET,
        "ALLOWED_HOSTS": "priceloop.example.com",
        "PRICELOOP_DATA_DIR": str(tmp_path),
        "CACHE_URL": "",
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "(priceloop.W001) API_THROTTLE_RATE=600/minute is counted in each web process" in result.stderr
    assert "HINT: Set CACHE_URL=redis://" in result.stderr
    assert (
        _manage(
            "check", "--deploy", "--fail-level", "WARNING", env=env | {"API_THROTTLE_RATE": "off"}
        ).returncode
        == 0
    )


def test_it_rejects_a_malformed_boolean_with_the_variable_name(tmp_path: Path) -> None:
    result = _manage("check", env={"DEBUG": "maybe", "PRICELOOP_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


# What a client of gunicorn sees under each security mode: the login page fetched with Django's test client
# in a fresh process whose settings come from the given environment (no database is touched).
_FETCH_LOGIN = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client, override_settings
# production's manifest storage needs collectstatic first; static files are not what is checked here
plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
plain_static = {**settings.STORAGES, "staticfiles": plain}
out = {}
for name, headers in (("plain", {}), ("forwarded", {"X-Forwarded-Proto": "https"})):
    with override_settings(STORAGES=plain_static):
        r = Client().get("/login/", headers=headers)
    cookie = r.cookies.get("csrftoken")
    out[name] = {
        "status": r.status_code,
        "location": r.get("Location", ""),
        "hsts": r.get("Strict-Transport-Security", ""),
        "secure_cookie": bool(cookie and cookie["secure"]),
    }
print(json.dumps(out))
"""


def _login_page(tmp_path: Path, **env: str) -> dict[str, dict[str, object]]:
    production = {
        "DEBUG": "0",
        "SECRET_KEY": _SECRET,
        "ALLOWED_HOSTS": "testserver",
        "PRICELOOP_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
    }
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", *_SECURITY_VARIABLES}}
    clean.update(production | env)
    result = subprocess.run(
        [sys.executable, "-c", _FETCH_LOGIN], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_ignores_a_forwarded_proto_header_unless_a_proxy_is_trusted(tmp_path: Path) -> None:
    pages = _login_page(tmp_path)
    # HTTPS is expected by default: plain HTTP is redirected, and a client cannot skip that by claiming HTTPS.
    assert pages["plain"]["status"] == 301
    assert pages["plain"]["location"] == "https://testserver/login/"
    assert pages["forwarded"]["status"] == 301


def test_it_trusts_the_forwarded_proto_of_a_declared_proxy(tmp_path: Path) -> None:
    pages = _login_page(tmp_path, TRUSTED_PROXY="1")
    assert pages["forwarded"]["status"] == 200
    assert pages["forwarded"]["secure_cookie"] is True
    assert pages["forwarded"]["hsts"].startswith("max-age=31536000")
    # the proxy's plain-HTTP side (a request it did not mark as HTTPS) is still sent to HTTPS
    assert pages["plain"]["status"] == 301


def test_it_serves_plain_http_in_plain_http_mode(tmp_path: Path) -> None:
    pages = _login_page(tmp_path, HTTPS="0")
    assert pages["plain"]["status"] == 200
    assert pages["plain"]["secure_cookie"] is False  # a Secure cookie would never come back over HTTP
    assert pages["plain"]["hsts"] == ""


def test_it_silences_only_the_https_warnings_in_plain_http_mode(tmp_path: Path) -> None:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": _SECRET,
        "ALLOWED_HOSTS": "10.0.0.5",
        "PRICELOOP_DATA_DIR": str(tmp_path),
        "CACHE_URL": "redis://127.0.0.1:6379/9",
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env | {"HTTPS": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    # without the mode the same settings are warned about: the mode is what silences them
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env | {"SECURE_SSL_REDIRECT": "0"})
    assert result.returncode != 0
    assert "security.W008" in result.stdout + result.stderr
    # any other deploy problem still fails the check in plain-HTTP mode (here: a short secret key)
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING", env=env | {"HTTPS": "0", "SECRET_KEY": "short"}
    )
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_it_names_the_fix_for_a_bad_artifact_backend(tmp_path: Path) -> None:
    result = _manage(
        "check", env={"DEBUG": "1", "PRICELOOP_DATA_DIR": str(tmp_path), "ARTIFACTS_BACKEND": "ftp"}
    )
    assert result.returncode != 0
    assert "ARTIFACTS_BACKEND='ftp': use local (a folder) or s3." in result.stderr
    result = _manage(
        "check", env={"DEBUG": "1", "PRICELOOP_DATA_DIR": str(tmp_path), "ARTIFACTS_BACKEND": "s3"}
    )
    assert result.returncode != 0
    assert "ARTIFACTS_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME" in result.stderr
