"""manage.py demo [--port 8000] [--no-serve]: migrate, seed, then run web + worker + beat until Ctrl-C.

Started by ``./dev demo`` on embedded defaults (SQLite, filesystem broker, local artifacts).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test.utils import override_settings

from webapp.demo.seed import DEMO_LOGINS, seed_all

ROOT = Path(settings.BASE_DIR)
LOG_TAIL_LINES = 20  # how much of a dead child's log the demo prints
DEMO_OVERLAP_SHARE = 0.2


def _overlap_share() -> float:
    """One item in five labelled twice, so the demo's agreement and adjudication pages have data,
    unless the environment names another share."""
    raw = os.environ.get("ANNOTATION_OVERLAP_SHARE", "")
    return float(settings.ANNOTATION_OVERLAP_SHARE) if raw else DEMO_OVERLAP_SHARE


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the PriceLoop demo: migrate, seed, start web + worker + beat, print the URL and logins."
    _log_starts: dict[str, int]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-serve", action="store_true", help="seed only; start nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(
            "PriceLoop demo: migrating and seeding (first run builds the data; later runs reuse it)…"
        )
        call_command("migrate", verbosity=0, interactive=False)
        with override_settings(ANNOTATION_OVERLAP_SHARE=_overlap_share()):
            tokens = seed_all()
        if options["no_serve"]:
            return
        url = f"http://{options['host']}:{options['port']}/"
        # `kill`/CI stop the demo with SIGTERM: treat it like Ctrl-C so the children are stopped too.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        procs = self._start(options["host"], options["port"])
        try:
            self._wait_healthy(url + "healthz", procs)
            from workers.system import heartbeat

            heartbeat.delay(source="worker")  # the health page shows the worker alive from the start
            self._banner(url, tokens)
            while all(p.poll() is None for p in procs.values()):
                time.sleep(1)
            raise CommandError(self._death_report(procs) + "\ndemo: shutting the other processes down.")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping…")
        finally:
            self._stop(procs)

    def _start(self, host: str, port: int) -> dict[str, subprocess.Popen[bytes]]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANNOTATION_OVERLAP_SHARE": str(_overlap_share())}
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", f"{host}:{port}", "--noreload", "--skip-checks"],
            # One worker serves both queues here; production runs -Q default on CPU and -Q train on GPU nodes.
            "worker": [python, "-m", "celery", "-A", "webapp", "worker", "-Q", "default,train", "-c", "2",
                       "--without-gossip", "--without-mingle", "-l", "INFO"],
            "beat": [python, "-m", "celery", "-A", "webapp", "beat", "-l", "INFO",
                     "-s", str(Path(settings.DATA_DIR) / "celerybeat-schedule")],
        }  # fmt: skip
        logs = Path(settings.DATA_DIR) / "logs"
        logs.mkdir(exist_ok=True)
        procs = {}
        self._log_starts = {}
        for name, command in commands.items():
            out = open(self._log_path(name), "ab")  # noqa: SIM115 - lives as long as the child
            # Logs are appended to across runs: remember where this run's output begins.
            self._log_starts[name] = out.tell()
            procs[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        return procs

    def _log_path(self, name: str) -> Path:
        return Path(settings.DATA_DIR) / "logs" / f"{name}.log"

    def _death_report(self, procs: dict[str, subprocess.Popen[bytes]]) -> str:
        """Which child stopped, with its exit code, its log file and the end of what it logged this run."""
        parts = []
        for name, p in procs.items():
            code = p.poll()
            if code is None:
                continue
            log = self._log_path(name)
            with open(log, "rb") as fh:
                fh.seek(self._log_starts.get(name, 0))
                lines = fh.read().decode("utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            parts.append(
                f"demo: the {name} process {how}. Its log: {log}\n"
                f"--- last lines of {log.name} ---\n" + "\n".join(lines) + f"\n--- end of {log.name} ---"
            )
        return "\n".join(parts)

    def _wait_healthy(self, url: str, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs.values()):
                raise CommandError(self._death_report(procs) + "\ndemo: start-up failed.")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise CommandError(f"demo: {url} did not answer 200 within 120 s; see {self._log_path('web')}")

    def _banner(self, url: str, tokens: dict[str, str]) -> None:
        lines = [
            "",
            f"PriceLoop is running at {url}   (web + worker + beat; Ctrl-C stops all three)",
            "",
            "Logins:",
        ]
        lines += [
            f"  {login.role.value:<10} {login.username:<11} password: {login.password}"
            for login in DEMO_LOGINS
        ]
        lines += [
            "",
            f"API token (client): {tokens.get('client', '')}",
            f"  curl -H 'Authorization: Token {tokens.get('client', '')}' {url}api/v1/versions",
            f"API docs: {url}api/docs/    health: {url}healthz    logs: {settings.DATA_DIR}/logs/",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _stop(self, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
