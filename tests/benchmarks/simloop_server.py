"""The simulation's side of HTTP (a token client on the stdlib) and the PriceLoop it drives.

Part of tests/benchmarks/simulate_loop.py (see there for how it runs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# --- HTTP --------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status, self.body = status, body
        text = body.decode(errors="replace") if isinstance(body, bytes) else json.dumps(body)
        super().__init__(f"{method} {path} answered {status}: {text[:600]}")

    @property
    def code(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code", "")) if isinstance(error, dict) else ""


class Api:
    """A user of the API: every request carries their token."""

    def __init__(self, url: str, token: str, who: str) -> None:
        self.url, self.token, self.who = url.rstrip("/"), token, who

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, ctype: str = ""
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        data = raw
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif raw is not None:
            headers["Content-Type"] = ctype
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        content: Any = None
        if payload:
            try:
                content = json.loads(payload)
            except ValueError:
                content = payload
        if status >= 400:
            raise ApiError(method, path, status, content)
        return status, content

    def get(self, path: str) -> Any:
        return self.call("GET", path)[1]

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})[1]

    def upload(self, path: str, filename: str, content: bytes, fields: dict[str, str]) -> Any:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
        raw = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.call("POST", path, raw=raw, ctype=f"multipart/form-data; boundary={boundary}")[1]

    def download(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Token {self.token}"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.read()


# --- the PriceLoop under test ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A PriceLoop to drive: ``url`` plus ``manage()`` for the operator's commands."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.env = dict(os.environ)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = cfg.url or ""
        self.data_dir: Path | None = None

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise SystemExit(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def start(self) -> None:
        cfg = self.cfg
        data = (cfg.data_dir or cfg.out / "priceloop").resolve()
        if data.exists() and any(data.iterdir()):
            raise SystemExit(
                f"--data-dir {data} is not empty: --start needs a fresh one (delete it or name another)."
            )
        data.mkdir(parents=True, exist_ok=True)
        self.data_dir = data
        # The embedded defaults, whatever this shell points at: SQLite and the filesystem broker.
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "ARTIFACT_ROOT"):
            self.env.pop(name, None)
        self.env.update({"PRICELOOP_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"})
        self.env.setdefault("DEBUG", "1")
        # Simulation settings (each may be overridden from the environment): every label counts once,
        # a guess is always shown (blind items are the codebook's, not this experiment's), and gold comes
        # often enough to pause a spammer within its first few dozen items.
        for name, value in {
            "ANNOTATION_OVERLAP": "1",
            "ANNOTATION_BLIND_SHARE": "0",
            "ANNOTATION_GOLD_RATE": "0.15",
            "ANNOTATION_GOLD_MIN_SEEN": "4",
            "RETRAIN_MIN_BATCH_SIZE": "1",
        }.items():
            self.env.setdefault(name, value)
        self.manage("migrate", "--verbosity", "0", "--no-input")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        logs = data / "logs"
        logs.mkdir(exist_ok=True)
        python = sys.executable
        commands = {
            "web": [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
            "worker": [python, "-m", "celery", "-A", "webapp", "worker", "-Q", "default,train", "-c", "1",
                       "--without-gossip", "--without-mingle", "-l", "INFO"],
        }  # fmt: skip
        for name, command in commands.items():
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            self.procs[name] = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                raise SystemExit(f"a PriceLoop process exited during start-up; see {logs}/")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.url}/healthz did not answer 200 within 120 s; see {logs}/")

    def alive(self) -> None:
        dead = [name for name, p in self.procs.items() if p.poll() is not None]
        if dead:
            raise SystemExit(f"PriceLoop's {', '.join(dead)} stopped; see {self.data_dir}/logs/")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@contextmanager
def priceloop(cfg: Any) -> Iterator[Server]:
    server = Server(cfg)
    try:
        if cfg.start:
            server.start()
        yield server
    finally:
        server.stop()
