from __future__ import annotations

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


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "SECURE_SSL_REDIRECT"}
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
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_rejects_a_malformed_boolean_with_the_variable_name(tmp_path: Path) -> None:
    result = _manage("check", env={"DEBUG": "maybe", "PRICELOOP_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


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
