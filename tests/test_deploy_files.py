"""deploy/ and the README's production blocks say the same thing (CI runs the blocks: .ci/prod)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
APP = "/srv/priceloop/app/"  # where the units expect the checkout


def _readme_block(name: str) -> list[str]:
    """The command lines of the README block marked ``<!-- name: ... -->`` (as .ci/prod extracts them)."""
    text = (ROOT / "README.md").read_text()
    after = text.split(f"<!-- {name}:", 1)[1]
    body = after.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _exec_start(unit: Path) -> str:
    (line,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    command = line.removeprefix("ExecStart=")
    # systemd spells Celery's %h as %%h and expands ${VAR} as one word; the README runs from the checkout.
    return command.replace(APP, "").replace("%%", "%").replace("${WEB_BIND}", '"$WEB_BIND"')


def test_it_starts_each_readme_service_with_one_unit_running_the_same_command() -> None:
    services = _readme_block("prod-services")
    units = sorted(UNITS.glob("priceloop-*.service"))
    assert [unit.name for unit in units] == [
        "priceloop-beat.service",
        "priceloop-web.service",
        "priceloop-worker-cpu.service",
        "priceloop-worker-gpu.service",
    ]
    assert sorted(_exec_start(unit) for unit in units) == sorted(services)


def test_it_binds_gunicorn_and_serves_both_queues_and_beat() -> None:
    services = _readme_block("prod-services")
    assert any("gunicorn" in line and "--bind" in line for line in services)
    assert any("worker -Q default" in line for line in services)
    assert any("worker -Q train" in line for line in services)
    assert sum(" beat" in line for line in services) == 1


def test_it_prepares_static_files_and_checks_the_deployment_before_the_services_start() -> None:
    setup = " ".join(_readme_block("prod-setup"))
    for step in (
        "manage.py migrate",
        "manage.py collectstatic --noinput",
        "check --deploy --fail-level WARNING",
    ):
        assert step in setup
    assert "--password-file" in setup  # never a password on the command line
    assert _readme_block("prod-champion") == [
        ".venv/bin/python manage.py bootstrap_champion --seed-labels seed.jsonl"
    ]


def test_it_names_only_variables_the_settings_read_in_the_env_example() -> None:
    from webapp.env import READ_VARIABLES

    example = (ROOT / "deploy" / "priceloop.env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.M))
    # WEB_BIND is read by the gunicorn command line, HF_TOKEN by huggingface_hub.
    unknown = sorted(named - READ_VARIABLES - {"WEB_BIND", "HF_TOKEN"})
    assert not unknown, f"deploy/priceloop.env.example names variables nothing reads: {unknown}"
    for required in (
        "SECRET_KEY",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "ALLOWED_HOSTS",
        "HTTPS",
        "TRUSTED_PROXY",
    ):
        assert required in named
