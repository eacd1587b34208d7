"""Scripted annotators drive PriceLoop round after round through its HTTP API; does the champion improve?

    python tests/benchmarks/simulate_loop.py --items FILE --rounds K --labels-per-round N \\
        --annotators careful=3,sloppy=1,spammer=1 --seed S [--score-extra FILE] \\
        [--url URL | --start] --out DIR

``--start`` starts a PriceLoop of its own on the embedded defaults in a fresh data dir (``--data-dir``,
default ``DIR/priceloop``): SQLite, the filesystem broker, a real ``celery worker -Q default,train``
process and the web server. ``--url`` drives one that is running; the operator commands below then run
with this process's environment, which must point at that PriceLoop's database (``DATABASE_URL``,
``PRICELOOP_DATA_DIR``) and carry its ``RETRAIN_RECIPE``/``RETRAIN_RECIPE_OVERRIDES``.

What an operator does runs as ``manage.py`` commands: ``migrate`` (with ``--start``), ``create_user``
(one user per scripted person, with a token), ``bootstrap_champion --seed-labels`` (v1 from the seed
set) and, until the gold API exists, ``import_gold``. Everything else is HTTP with tokens, as users do:

1. The catalogue is split by a stable hash of the id (``--test-fraction``, the import API's
   ``test_fraction``): test items are imported with their prices (the frozen evaluation set); the pool
   is imported without prices, in slices, one per round (new products arrive; the champion of the
   moment guesses them), except a seed set (v1's labels) and a gold set (known prices, served
   unannounced; each with the codebook's green band at its price as tolerance).
2. Each round, annotators take items through ``/annotate/next`` and ``/annotate/submit`` until
   ``--labels-per-round`` labels are in: *careful* accepts a guess within the codebook's green band
   (error < $40 or < 20%) and otherwise types the true price ± 3%; *sloppy* accepts within 40% and
   otherwise types the price ± 20%; *spammer* accepts or types a random price at random.
3. A reviewer creates a batch, approves it when its checks pass (else rejects it, saying why), and
   follows its run (dataset → training → evaluation → gate) on ``/api/v1/runs/{id}``.
4. Per round: labels by annotator kind, the batch, training time, candidate and champion metrics on
   the test split (the versions API) and on ``--score-extra`` items (never imported; scored here with
   the engine's ``Predictor`` on the version's downloaded adapter), the gate's decision and reasons,
   and baselines (training mean, TF-IDF ridge) fitted on the labels the versions were trained on.

Writes ``DIR/simulation.json``, ``DIR/simulation.md`` and ``DIR/error-per-round.png``.
Needs only what the project depends on (stdlib HTTP client), so it runs on a GPU host without an index.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotation.catalogue.reader import read_products  # noqa: E402  (pure Python, no Django)

# Codebook v1 (webapp/demo/codebook_v1.md): accept when the guess is within about 20%, or $40 for cheap
# items — the evaluator's green band (DESIGN.md §5).
GREEN_ABS = 40.0
GREEN_REL = 0.20
SLOPPY_ACCEPT_REL = 0.40
KINDS = ("careful", "sloppy", "spammer")
SECONDS_SPENT = {"careful": 9.0, "sloppy": 3.0, "spammer": 1.0}


# --- the catalogue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str
    text: str  # curated exactly as the import curates it: what annotators and the model see
    price: float | None
    trainable: bool  # a usable price (0.50–999.49): the server scores and trains on these only
    raw: dict[str, Any]


def read_items(path: Path, *, test_fraction: float, max_text_chars: int) -> tuple[list[Item], list[Item]]:
    """(test items, pool items) of a catalogue file, curated and split as the import does."""
    raw: dict[str, dict[str, Any]] = {}
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                obj = json.loads(line)
                raw[str(obj.get("id", "")).strip()] = obj
    test: list[Item] = []
    pool: list[Item] = []
    with path.open("rb") as handle:
        for row in read_products(handle, "jsonl", test_fraction=test_fraction, max_text_chars=max_text_chars):
            if not hasattr(row, "external_id"):
                print(f"skipping {path.name} {row}", file=sys.stderr)
                continue
            price = float(row.price) if row.price is not None else None
            item = Item(row.external_id, row.text, price, price is not None and not row.price_flag,
                        raw[row.external_id])  # fmt: skip
            (test if row.split == "test" else pool).append(item)
    return test, pool


def _order(items: Sequence[Item], seed: int, salt: str) -> list[Item]:
    """A seeded, stable order: the same file and seed give the same seed set, gold set and slices."""
    return sorted(items, key=lambda i: hashlib.sha256(f"{seed}:{salt}:{i.id}".encode()).hexdigest())


@dataclass
class Plan:
    test: list[Item]
    seed: list[Item]
    gold: list[Item]
    slices: list[list[Item]]

    @property
    def by_id(self) -> dict[str, Item]:
        items = self.test + self.seed + self.gold + [i for s in self.slices for i in s]
        return {i.id: i for i in items}


def plan_catalogue(test: list[Item], pool: list[Item], cfg: Config) -> Plan:
    """Seed set, gold set, and one slice of unlabelled pool items per round."""
    priced = _order([i for i in pool if i.trainable], cfg.seed, "seed")
    seed = priced[: cfg.seed_size]
    rest = [i for i in _order(pool, cfg.seed, "pool") if i not in seed]
    # Gold from the dearer items: below $200 the codebook's $40 allowance makes the green band wide
    # enough for random prices to pass a gold item too often to catch a spammer.
    gold_pool = [i for i in rest if i.trainable and (i.price or 0) >= cfg.gold_min_price]
    if len(gold_pool) < cfg.gold_size:
        gold_pool = sorted((i for i in rest if i.trainable), key=lambda i: -(i.price or 0))
    gold = gold_pool[: cfg.gold_size]
    gold_ids = {i.id for i in gold}
    stream = [i for i in rest if i.id not in gold_ids]
    need = cfg.rounds * cfg.labels_per_round
    if len(stream) < need:
        raise SystemExit(
            f"--items {cfg.items.name}: the pool holds {len(stream)} items after the seed ({len(seed)}) and "
            f"gold ({len(gold)}) sets, fewer than --rounds x --labels-per-round = {need}; "
            "lower one of them or use a bigger file."
        )
    n = cfg.labels_per_round
    slices = [stream[r * n : (r + 1) * n] for r in range(cfg.rounds)]
    return Plan(test=test, seed=seed, gold=gold, slices=slices)


def jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def import_row(item: Item, *, with_price: bool) -> dict[str, Any]:
    row = {k: v for k, v in item.raw.items() if k != "price"}
    if with_price and item.price is not None:
        row["price"] = item.raw.get("price")
    return row


def gold_tolerance(price: float) -> float:
    """The codebook's green band at this price, as a share of it (what a careful annotator accepts)."""
    return round(max(GREEN_REL, GREEN_ABS / price), 4)


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

    def __init__(self, cfg: Config) -> None:
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
def priceloop(cfg: Config) -> Iterator[Server]:
    server = Server(cfg)
    try:
        if cfg.start:
            server.start()
        yield server
    finally:
        server.stop()


# --- scripted people ---------------------------------------------------------------------------------


@dataclass
class Annotator:
    kind: str
    api: Api
    rng: random.Random
    paused_round: int | None = None
    paused_reason: str = ""
    labels: int = 0
    gold_answers: int = 0

    def answer(self, guess: float | None, truth: float) -> tuple[str, float | None]:
        """(verdict, corrected price) for an item whose true price is ``truth``."""
        rng = self.rng
        if self.kind == "spammer":
            if guess is not None and rng.random() < 0.5:
                return "accept", None
            return "correct", math.exp(rng.uniform(0.0, math.log(999.0)))
        error = abs(guess - truth) if guess is not None else math.inf
        if self.kind == "careful":
            if error < GREEN_ABS or error < GREEN_REL * truth:
                return "accept", None
            return "correct", truth * (1 + rng.uniform(-0.03, 0.03))
        if error <= SLOPPY_ACCEPT_REL * truth:
            return "accept", None
        return "correct", truth * (1 + rng.uniform(-0.20, 0.20))


@dataclass
class Label:
    """What one annotation told the server (overlap 1: it is the resolved label)."""

    round: int
    kind: str
    username: str
    product_id: str
    text: str
    price: float


def parse_token(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("token "):
            return line.split(" ", 1)[1].strip()
    raise SystemExit(f"create_user printed no token:\n{output}")


# --- metrics -------------------------------------------------------------------------------------------


def wilson(hits: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def scored(truths: Sequence[float], guesses: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Tester metrics with 95% percentile-bootstrap intervals for MAE, RMSLE and hit rate."""
    import numpy as np

    from training.engine.evaluator import evaluate

    metrics = evaluate(truths, guesses, seed=seed).to_dict()
    t, g = np.asarray(truths, dtype=float), np.asarray(guesses, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(1000, len(t)))
    sq = (np.log1p(g) - np.log1p(t)) ** 2
    err = np.abs(g - t)
    green = (err < GREEN_ABS) | (err < GREEN_REL * t)
    metrics["rmsle_ci95"] = [float(x) for x in np.percentile(np.sqrt(sq[idx].mean(axis=1)), [2.5, 97.5])]
    metrics["hit_rate_ci95"] = [float(x) for x in np.percentile(green[idx].mean(axis=1), [2.5, 97.5])]
    return metrics


def api_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A version's test-split metrics as the versions API gives them, plus the hit rate's Wilson interval."""
    out = dict(metrics)
    if metrics.get("n"):
        out["hit_rate_ci95"] = wilson(int(metrics.get("counts", {}).get("green", 0)), int(metrics["n"]))
    return out


# --- the simulation ------------------------------------------------------------------------------------


@dataclass
class Config:
    items: Path
    rounds: int
    labels_per_round: int
    annotators: dict[str, int]
    seed: int
    out: Path
    score_extra: Path | None = None
    url: str | None = None
    start: bool = False
    data_dir: Path | None = None
    test_fraction: float = 0.25
    seed_size: int = 200
    gold_size: int = 40
    gold_min_price: float = 200.0
    build_base: str | None = None
    bootstrap_overrides: str = ""
    timeout: float = 3600.0
    argv: list[str] = field(default_factory=list)


class Simulation:
    def __init__(self, cfg: Config, server: Server, plan: Plan, extra: list[Item]) -> None:
        self.cfg, self.server, self.plan, self.extra = cfg, server, plan, extra
        self.by_id = plan.by_id
        self.gold_ids = {i.id for i in plan.gold}
        self.rng = random.Random(cfg.seed)
        self.annotators: list[Annotator] = []
        self.labels: list[Label] = []
        self.trained_rounds: set[int] = set()  # rounds whose batch was approved
        self.pool_imported = 0
        self.tasks_before = 0
        self.versions: dict[str, dict[str, Any]] = {}
        self.extra_scores: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.reviewer: Api
        self.log_file = (cfg.out / "simulation.log").open("a", encoding="utf-8")

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    # --- set-up: people, codebook, catalogue, v1, gold ---

    def users(self, people: list[tuple[str, str]]) -> dict[str, Api]:
        """``create_user NAME --role ROLE --token`` for each person, at once (each command boots Django)."""
        procs = {
            name: subprocess.Popen(
                [sys.executable, "manage.py", "create_user", name, "--role", role, "--token"],
                cwd=ROOT,
                env=self.server.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, role in people
        }
        apis = {}
        for name, proc in procs.items():
            stdout, stderr = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"manage.py create_user {name} failed:\n{stderr[-2000:]}")
            apis[name] = Api(self.server.url, parse_token(stdout), name)
        return apis

    def setup_people(self) -> None:
        people = [("sim-reviewer", "reviewer")]
        kinds = {}
        for kind in KINDS:
            for n in range(1, self.cfg.annotators.get(kind, 0) + 1):
                people.append((f"sim-{kind}-{n}", "annotator"))
                kinds[f"sim-{kind}-{n}"] = (kind, n)
        apis = self.users(people)
        self.reviewer = apis["sim-reviewer"]
        for name, (kind, n) in kinds.items():
            rng = random.Random(f"{self.cfg.seed}:{kind}:{n}")
            self.annotators.append(Annotator(kind, apis[name], rng))
        first = self.annotators[0].api
        status, codebook = first.call("GET", "/api/v1/annotate/codebook")
        if status == 204:
            text = (ROOT / "webapp" / "demo" / "codebook_v1.md").read_text(encoding="utf-8")
            codebook = self.reviewer.post("/api/v1/annotation/codebook/versions", {"markdown": text})
            self.log(f"reviewer published codebook v{codebook['number']}")
        for annotator in self.annotators:
            annotator.api.post("/api/v1/annotate/codebook/ack", {"version": codebook["number"]})

    def import_items(self, items: Sequence[Item], *, name: str, with_price: bool) -> dict[str, Any]:
        rows = [import_row(i, with_price=with_price) for i in items]
        body = self.reviewer.upload(
            "/api/v1/products/import", name, jsonl(rows), {"test_fraction": str(self.cfg.test_fraction)}
        )
        if body["bad"]:
            raise SystemExit(f"import of {name} refused {body['bad']} rows: {body['errors'][:5]}")
        return body

    def queue(self) -> dict[str, Any]:
        return self.reviewer.get("/api/v1/annotation/queue")

    def wait(self, what: str, predicate: Any, *, interval: float = 1.0) -> Any:
        deadline = time.monotonic() + self.cfg.timeout
        while time.monotonic() < deadline:
            self.server.alive()
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise SystemExit(f"timed out after {self.cfg.timeout:.0f} s waiting for {what} (--timeout)")

    def wait_guessed(self) -> None:
        """Every pool product imported so far has its task (the champion guessed it)."""
        target = self.tasks_before + self.pool_imported
        self.wait(
            f"the champion's guesses on {self.pool_imported} pool products",
            lambda: self.queue()["tasks"]["total"] >= target,
        )

    def champion(self) -> dict[str, Any] | None:
        try:
            return self.reviewer.get("/api/v1/versions/champion")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def bootstrap_v1(self) -> dict[str, Any]:
        champion = self.champion()
        if champion is not None:
            self.notes.append(
                f"{champion['name']} was champion already; no v1 was trained by this simulation."
            )
            return champion
        seed_file = self.cfg.out / "seed-labels.jsonl"
        seed_file.write_bytes(jsonl([{"id": i.id, "price": i.price} for i in self.plan.seed]))
        extra = ["--overrides", self.cfg.bootstrap_overrides] if self.cfg.bootstrap_overrides else []
        started = time.monotonic()
        done = self.server.manage("bootstrap_champion", "--seed-labels", str(seed_file), *extra, check=False)
        if done.returncode != 0 and "--seed-labels" in done.stderr and "unrecognized" in done.stderr:
            # Before bootstrap_champion takes a seed file it trains v1 on the pool's priced products:
            # giving the seed items (and only them) their prices is the same seed set.
            self.notes.append(
                "bootstrap_champion has no --seed-labels here: v1 was trained on the seed items imported "
                "with their prices (the only priced pool products at that time)."
            )
            self.import_items(self.plan.seed, name="seed-priced.jsonl", with_price=True)
            done = self.server.manage("bootstrap_champion", *extra, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bootstrap_champion failed:\n{done.stderr[-3000:]}")
        self.log(f"v1: {done.stdout.strip()} ({time.monotonic() - started:.0f} s)")
        champion = self.champion()
        assert champion is not None
        return champion

    def import_gold(self) -> str:
        """Gold items with their price and tolerance: one call, through the API when it has one."""
        rows = [
            {"id": i.id, "price": i.price, "tolerance": gold_tolerance(i.price or 1)} for i in self.plan.gold
        ]
        try:
            self.reviewer.post("/api/v1/gold", {"items": rows})
            return "api"
        except ApiError as exc:
            if exc.status not in (404, 405):
                raise
        path = self.cfg.out / "gold.jsonl"
        path.write_bytes(jsonl(rows))
        done = self.server.manage("import_gold", str(path), check=False)
        if done.returncode == 0:
            return "command"
        if "Unknown command" not in done.stderr:
            raise SystemExit(f"import_gold failed:\n{done.stderr[-3000:]}")
        # Neither exists yet: the annotation service that the gold command wraps, as an operator's shell.
        code = (
            "import json,sys\nfrom decimal import Decimal\nfrom annotation.models import Product\n"
            "from annotation.services import gold_tasks_create\n"
            f"for row in map(json.loads, open({str(path)!r})):\n"
            "    gold_tasks_create(products=[Product.objects.get(external_id=row['id'])],"
            " tolerance=Decimal(str(row['tolerance'])))\n"
        )
        self.server.manage("shell", "-c", code)
        self.notes.append(
            "gold imported through manage.py shell (neither /api/v1/gold nor import_gold exists here)."
        )
        return "shell"

    def setup(self) -> dict[str, Any]:
        self.setup_people()
        self.tasks_before = self.queue()["tasks"]["total"]
        plan = self.plan
        # The frozen test split with its prices, and the seed set without (its labels come separately).
        self.import_items(plan.test, name="test.jsonl", with_price=True)
        self.import_items(plan.seed, name="seed.jsonl", with_price=False)
        self.pool_imported += len(plan.seed)
        self.log(f"imported {len(plan.test)} test items and {len(plan.seed)} seed items")
        v1 = self.bootstrap_v1()
        self.log(f"champion {v1['name']}: test MAE ${v1['metrics'].get('mae', float('nan')):.2f}")
        # Gold products are pool products with a known price; the champion guesses them first, so the
        # gold items show a guess like every other item.
        self.import_items(plan.gold, name="gold.jsonl", with_price=True)
        self.pool_imported += len(plan.gold)
        self.wait_guessed()
        how = self.import_gold()
        self.log(f"{len(plan.gold)} gold items ({how}); queue: {self.queue()['tasks']}")
        return v1

    # --- one round ---

    def annotate(self, round_no: int) -> dict[str, Any]:
        """Annotators take turns (one item each per turn) until the round's labels are in."""
        target = self.cfg.labels_per_round
        labels: Counter[str] = Counter()
        gold: Counter[str] = Counter()
        verdicts: Counter[str] = Counter()
        empty_turns = 0
        while sum(labels.values()) < target:
            active = [a for a in self.annotators if a.paused_round is None]
            if not active:
                self.notes.append(f"round {round_no}: every annotator is paused")
                break
            served = 0
            for annotator in active:
                if sum(labels.values()) >= target:
                    break
                outcome = self.annotate_one(annotator, round_no)
                if outcome is None:
                    continue
                served += 1
                kind, is_gold, verdict = outcome
                (gold if is_gold else labels)[kind] += 1
                verdicts[verdict] += 1
            if served == 0:
                empty_turns += 1
                if empty_turns >= 3:
                    self.notes.append(f"round {round_no}: the queue ran dry at {sum(labels.values())} labels")
                    break
                time.sleep(1.0)
            else:
                empty_turns = 0
        return {"labels": dict(labels), "gold_answers": dict(gold), "verdicts": dict(verdicts)}

    def annotate_one(self, annotator: Annotator, round_no: int) -> tuple[str, bool, str] | None:
        api = annotator.api
        try:
            status, assignment = api.call("POST", "/api/v1/annotate/next")
        except ApiError as exc:
            if exc.code == "annotator_paused":
                annotator.paused_round, annotator.paused_reason = round_no, str(exc.body["error"]["message"])
                self.log(f"{api.who} paused in round {round_no}: {annotator.paused_reason}")
                return None
            if exc.code == "codebook_ack_required":
                api.post("/api/v1/annotate/codebook/ack", {"version": exc.body["error"]["codebook_version"]})
                return None
            raise
        if status == 204:
            return None
        product = assignment["product"]
        item = self.by_id.get(product["external_id"])
        if item is None or item.price is None:
            # Not a product of this simulation (a PriceLoop in use): not ours to judge.
            api.post("/api/v1/annotate/skip", {"assignment_id": assignment["id"]})
            return None
        guess = float(assignment["guess"]["price"]) if assignment.get("guess") else None
        verdict, price = annotator.answer(guess, item.price)
        body: dict[str, Any] = {
            "assignment_id": assignment["id"],
            "verdict": verdict,
            "seconds_spent": SECONDS_SPENT[annotator.kind],
            "client_token": f"{api.who}-{assignment['id']}",
        }
        if price is not None:
            body["corrected_price"] = f"{price:.2f}"
        try:
            api.post("/api/v1/annotate/submit", body)
        except ApiError as exc:
            if exc.code == "annotator_paused":
                annotator.paused_round, annotator.paused_reason = round_no, str(exc.body["error"]["message"])
                return None
            raise
        is_gold = item.id in self.gold_ids
        if is_gold:
            annotator.gold_answers += 1
        else:
            annotator.labels += 1
            label_price = price if price is not None else guess
            assert label_price is not None
            self.labels.append(
                Label(round_no, annotator.kind, api.who, item.id, product["text"], label_price)
            )
        return annotator.kind, is_gold, verdict

    def review(self, round_no: int) -> dict[str, Any]:
        """Batch the round's labels; approve when the checks pass, else reject and say why."""
        try:
            self.reviewer.post("/api/v1/batches/create", {"min_size": 1})
        except ApiError as exc:
            if exc.status != 409:
                raise
        pending = self.reviewer.get("/api/v1/batches?status=pending_review")["results"]
        if not pending:
            return {"decision": "none", "reason": "no resolved label waiting"}
        outcome: dict[str, Any] = {}
        for summary in sorted(pending, key=lambda b: b["id"]):
            outcome = self.review_batch(summary["id"], round_no)
        return outcome

    def review_batch(self, batch_id: int, round_no: int) -> dict[str, Any]:
        detail = self.reviewer.get(f"/api/v1/batches/{batch_id}")
        checks, passed = detail.get("checks"), detail.get("checks_passed")
        paused = {row["username"] for row in self.reviewer.get("/api/v1/annotation/annotators/paused")}
        in_batch = {
            row["username"]: row["annotations"] for row in detail.get("stats", {}).get("annotators", [])
        }
        from_paused = {name: n for name, n in in_batch.items() if name in paused and n}
        outcome: dict[str, Any] = {
            "id": batch_id,
            "size": detail["size"],
            "checks": checks,
            "checks_passed": passed,
            "annotators": in_batch,
        }
        reason = ""
        if passed is False:
            failing = [
                c for c in checks or [] if isinstance(c, dict) and not c.get("passed", c.get("ok", True))
            ]
            reason = "checks failed: " + json.dumps(failing or checks)[:1500]
        elif from_paused:
            # What a reviewer reads on the batch page: labels of annotators that gold has paused.
            reason = "holds labels of paused annotators: " + ", ".join(
                f"{k} ({v})" for k, v in from_paused.items()
            )
        if not reason:
            try:
                run = self.reviewer.post(f"/api/v1/batches/{batch_id}/approve", {})
            except ApiError as exc:
                if exc.status != 409:
                    raise
                reason = f"approve refused: {exc.body.get('error', {}).get('message', exc.body)}"
            else:
                outcome.update(decision="approved", run_id=run["id"])
                self.trained_rounds.add(round_no)
                self.log(f"batch {batch_id} ({detail['size']} labels) approved: run {run['id']}")
                return outcome
        self.reviewer.post(f"/api/v1/batches/{batch_id}/reject", {"reason": reason[:2000]})
        outcome.update(decision="rejected", reason=reason)
        self.log(f"batch {batch_id} rejected: {reason}")
        return outcome

    def follow_run(self, run_id: int) -> dict[str, Any]:
        started = time.monotonic()

        def ended() -> bool:
            progress = self.reviewer.get(f"/api/v1/runs/{run_id}/progress?after_step=1000000000")
            return progress["status"] in ("succeeded", "failed", "cancelled")

        self.wait(f"run {run_id} (dataset → training → evaluation → gate)", ended, interval=2.0)
        run = self.reviewer.get(f"/api/v1/runs/{run_id}")
        return {
            "id": run_id,
            "status": run["status"],
            "error": run["error"][-2000:],
            "candidate": run["candidate"],
            "gate": run["gate"],
            "train_seconds": (run.get("result") or {}).get("seconds"),
            "steps": (run.get("result") or {}).get("steps"),
            "final_loss": (run.get("result") or {}).get("final_loss"),
            "wall_seconds": round(time.monotonic() - started, 1),
        }

    # --- measurements ---

    def version(self, name: str) -> dict[str, Any]:
        if name not in self.versions:
            self.versions[name] = self.reviewer.get(f"/api/v1/versions/{int(name.lstrip('v'))}")
        return self.versions[name]

    def measure(self, name: str) -> dict[str, Any]:
        version = self.version(name)
        out: dict[str, Any] = {"name": name, "test": api_metrics(version.get("metrics") or {})}
        if self.extra:
            out["extra"] = self.score_extra(name)
        return out

    def score_extra(self, name: str) -> dict[str, Any]:
        """The version on the never-imported items, through the engine's Predictor and its adapter files."""
        if name in self.extra_scores:
            return self.extra_scores[name]
        version = self.version(name)
        folder = self.cfg.out / "versions"
        archive = self.reviewer.download(f"/api/v1/versions/{version['number']}/download")
        if hashlib.sha256(archive).hexdigest() != version["sha256"]:
            raise SystemExit(f"the download of {name} does not match its sha256")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        started = time.monotonic()
        predictor = make_predictor(version["base_model"], folder / name)
        guesses = [p.price for p in predictor.predict([i.text for i in self.extra])]
        del predictor
        _free_accelerator()
        metrics = scored([i.price or 0.0 for i in self.extra], guesses, seed=self.cfg.seed)
        metrics["seconds"] = round(time.monotonic() - started, 1)
        self.extra_scores[name] = metrics
        shutil.rmtree(folder / name, ignore_errors=True)
        return metrics

    def baselines(self) -> dict[str, Any]:
        """Training mean and TF-IDF ridge fitted on the labels the champion line was trained on: the seed
        set plus every label of an approved batch from an annotator gold had not paused."""
        from training.engine.baselines import mean_baseline, tfidf_ridge

        paused = {a.api.who for a in self.annotators if a.paused_round is not None}
        rows = [(i.text, float(i.price or 0)) for i in self.plan.seed]
        rows += [
            (lab.text, lab.price)
            for lab in self.labels
            if lab.round in self.trained_rounds and lab.username not in paused and 0.5 <= lab.price <= 999.49
        ]
        texts, prices = [t for t, _ in rows], [p for _, p in rows]
        test = [i for i in self.plan.test if i.trainable]
        out: dict[str, Any] = {"n_train": len(rows)}
        for key, model in (("mean", mean_baseline(prices)), ("ridge", tfidf_ridge(texts, prices))):
            entry = {"test": scored([i.price or 0.0 for i in test], model.predict([i.text for i in test]))}
            if self.extra:
                entry["extra"] = scored(
                    [i.price or 0.0 for i in self.extra], model.predict([i.text for i in self.extra])
                )
            out[key] = entry
        return out

    # --- the whole thing ---

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.monotonic()
        v1 = self.setup()
        result: dict[str, Any] = {
            "items": cfg.items.name,
            "base": base_size(v1["base_model"]),
            "base_model": v1["base_model"],
            "command": "python tests/benchmarks/simulate_loop.py " + " ".join(cfg.argv),
            "settings": {
                "rounds": cfg.rounds,
                "labels_per_round": cfg.labels_per_round,
                "annotators": cfg.annotators,
                "seed": cfg.seed,
                "test_fraction": cfg.test_fraction,
                "seed_size": len(self.plan.seed),
                "gold_size": len(self.plan.gold),
                "test_items": len(self.plan.test),
                "extra_items": len(self.extra),
                "score_extra": cfg.score_extra.name if cfg.score_extra else None,
                "recipe": self.server.env.get("RETRAIN_RECIPE") or "tiny",
                "recipe_overrides": self.server.env.get("RETRAIN_RECIPE_OVERRIDES", ""),
            },
            "start": {"round": 0, "champion": self.measure(v1["name"]), "baselines": self.baselines()},
            "rounds": [],
        }
        self.log(f"start: {json.dumps(result['start']['champion']['test'])[:300]}")
        for round_no in range(1, cfg.rounds + 1):
            result["rounds"].append(self.round(round_no))
            write_outputs(result | {"notes": self.notes, "complete": False}, cfg.out)
        result["annotators"] = [
            {
                "username": a.api.who,
                "kind": a.kind,
                "labels": a.labels,
                "gold_answers": a.gold_answers,
                "paused_round": a.paused_round,
                "paused_reason": a.paused_reason,
            }
            for a in self.annotators
        ]
        result["summary"] = summarize(result)
        result["notes"] = self.notes
        result["complete"] = True
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    def round(self, round_no: int) -> dict[str, Any]:
        started = time.monotonic()
        before = self.champion()
        assert before is not None
        new = self.plan.slices[round_no - 1]
        self.import_items(new, name=f"pool-round-{round_no}.jsonl", with_price=False)
        self.pool_imported += len(new)
        self.wait_guessed()
        guessed_s = time.monotonic() - started
        collected = self.annotate(round_no)
        self.log(f"round {round_no}: labels {collected['labels']}, gold answers {collected['gold_answers']}")
        batch = self.review(round_no)
        entry: dict[str, Any] = {
            "round": round_no,
            "labels": sum(collected["labels"].values()),
            "labels_by_kind": collected["labels"],
            "gold_answers_by_kind": collected["gold_answers"],
            "verdicts": collected["verdicts"],
            "paused": [
                {"username": a.api.who, "kind": a.kind, "reason": a.paused_reason}
                for a in self.annotators
                if a.paused_round == round_no
            ],
            "batch": batch,
            "promoted": False,
            "champion_before": {"name": before["name"], "test": api_metrics(before.get("metrics") or {})},
            "guess_wait_seconds": round(guessed_s, 1),
        }
        if batch.get("decision") == "approved":
            run = self.follow_run(batch["run_id"])
            entry["run"] = run
            entry["training_seconds"] = run["train_seconds"]
            gate = run.get("gate") or {}
            entry["gate"] = {"promote": gate.get("promote"), "reasons": gate.get("reasons", []),
                             "numbers": gate.get("numbers", {})}  # fmt: skip
            entry["promoted"] = bool(gate.get("promote"))
            if run["candidate"]:
                entry["candidate"] = self.measure(run["candidate"])
            self.log(
                f"run {run['id']} {run['status']}: {run['candidate']} " + "; ".join(entry["gate"]["reasons"])
            )
        after = self.champion()
        assert after is not None
        entry["champion"] = self.measure(after["name"])
        entry["baselines"] = self.baselines()
        entry["seconds"] = round(time.monotonic() - started, 1)
        self.log(
            f"round {round_no} done in {entry['seconds']:.0f} s: champion {after['name']} "
            f"MAE ${entry['champion']['test'].get('mae', float('nan')):.2f}; ridge "
            f"${entry['baselines']['ridge']['test']['mae']:.2f} on {entry['baselines']['n_train']} labels"
        )
        return entry


def make_predictor(base: str, adapter_dir: Path) -> Any:
    """A Predictor with the settings the server's evaluations use (training/recipes.py ``make_predictor``
    on ``predictor_settings()``: the recipe ``RETRAIN_RECIPE`` with ``RETRAIN_RECIPE_OVERRIDES``)."""
    from training.engine.config import load_recipe
    from training.engine.predictor import Predictor

    overrides = json.loads(os.environ.get("RETRAIN_RECIPE_OVERRIDES") or "{}")
    recipe = load_recipe(os.environ.get("RETRAIN_RECIPE") or "tiny", overrides)
    return Predictor(
        base,
        adapter_dir,
        quantization=recipe.quant.mode,
        k=recipe.predict.k,
        batch_size=recipe.predict.batch_size,
        prompt_style=recipe.model.prompt_style,
        max_length=recipe.train.max_length,
        max_new_tokens=recipe.predict.max_new_tokens,
        dtype=recipe.model.dtype,
        matmul=recipe.predict.matmul,
    )


def _free_accelerator() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def base_size(base_model: str) -> str:
    """The bootstrap size of an offline base (its ``bootstrap.json``), else the base's name."""
    try:
        return str(json.loads((Path(base_model) / "bootstrap.json").read_text())["size"])
    except (OSError, ValueError, KeyError):
        return Path(base_model).name or base_model


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """What a reader checks first: did the champion improve, was anything worse promoted, the spammer."""
    start = result["start"]["champion"]["test"].get("mae")
    rounds = result["rounds"]
    champions = [r["champion"]["test"].get("mae") for r in rounds]
    final = champions[-1] if champions else start
    worse_promoted = [
        r["round"]
        for r in rounds
        if r["promoted"]
        and r.get("candidate", {}).get("test", {}).get("mae", math.inf)
        > r["champion_before"]["test"].get("mae", 0)
    ]
    maes = [start, *champions]
    spammers = [a for a in result.get("annotators", []) if a["kind"] == "spammer"]
    in_approved = sum(
        n
        for r in rounds
        if r["batch"].get("decision") == "approved"
        for name, n in (r["batch"].get("annotators") or {}).items()
        if name.startswith("sim-spammer")
    )
    ridge = rounds[-1]["baselines"]["ridge"]["test"]["mae"] if rounds else None
    return {
        "v1_mae": start,
        "final_mae": final,
        "improvement": (start - final) / start if start and final is not None else None,
        "promotions": sum(1 for r in rounds if r["promoted"]),
        "champion_mae_never_raised": all(b <= a + 1e-9 for a, b in itertools.pairwise(maes)),
        "worse_candidates_promoted": worse_promoted,
        "spammers_paused": all(a["paused_round"] is not None for a in spammers) if spammers else None,
        "spammer_labels_in_approved_batches": in_approved,
        "final_ridge_mae": ridge,
        "final_vs_ridge": (final - ridge) if final is not None and ridge is not None else None,
    }


# --- outputs ---------------------------------------------------------------------------------------------


def _fmt(metrics: dict[str, Any] | None, key: str = "mae") -> str:
    if not metrics or metrics.get(key) is None:
        return "–"
    ci = metrics.get(f"{key}_ci95")
    if key == "hit_rate":
        text = f"{metrics[key]:.1%}"
        return text + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
    if key == "rmsle":
        return f"{metrics[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return f"${metrics[key]:.2f}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "")


def write_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [result["start"], *result["rounds"]]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [r["champion"]["test"].get("mae") for r in rounds], "o-", label="champion (test split)")
    cand = [
        (r["round"], r["candidate"]["test"].get("mae"), r["promoted"]) for r in rounds if r.get("candidate")
    ]
    for promoted, marker, colour, label in ((True, "^", "tab:green", "candidate promoted"),
                                            (False, "x", "tab:red", "candidate rejected")):  # fmt: skip
        points = [(c[0], c[1]) for c in cand if c[2] is promoted]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, s=70, color=colour, label=label, zorder=3)
    ax.plot(
        xs,
        [r["baselines"]["ridge"]["test"]["mae"] for r in rounds],
        "s--",
        label="TF-IDF ridge on the labels",
    )
    ax.plot(
        xs, [r["baselines"]["mean"]["test"]["mae"] for r in rounds], ":", color="grey", label="training mean"
    )
    if all("extra" in r["champion"] for r in rounds):
        ax.plot(xs, [r["champion"]["extra"]["mae"] for r in rounds], "o-.", label="champion (--score-extra)")
    ax.set_xlabel("round (0 = v1)")
    ax.set_ylabel("mean absolute error ($)")
    ax.set_xticks(xs)
    ax.set_title(f"PriceLoop learning loop: {result['items']}, base {result['base']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    s = result["settings"]
    lines = [
        f"# Learning loop: {result['items']} (base {result['base']})",
        "",
        f"`{result['command']}`",
        "",
        f"{s['rounds']} rounds of {s['labels_per_round']} labels; annotators {s['annotators']}; "
        f"seed {s['seed']}; test split {s['test_items']} items ({s['test_fraction']:.0%} by id hash); "
        f"seed set {s['seed_size']}; gold {s['gold_size']}; recipe {s['recipe']}.",
        "",
        "![error per round](error-per-round.png)",
        "",
        "| round | labels (careful/sloppy/spammer) | batch | train s | candidate MAE | gate | champion MAE "
        "| champion RMSLE | champion hits | ridge MAE | mean MAE | champion extra MAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    start = result["start"]
    lines.append(
        f"| 0 (v1) | seed {s['seed_size']} | – | – | – | – | {_fmt(start['champion']['test'])} "
        f"| {_fmt(start['champion']['test'], 'rmsle')} | {_fmt(start['champion']['test'], 'hit_rate')} "
        f"| {_fmt(start['baselines']['ridge']['test'])} | {_fmt(start['baselines']['mean']['test'])} "
        f"| {_fmt(start['champion'].get('extra'))} |"
    )
    for r in result["rounds"]:
        kinds = "/".join(str(r["labels_by_kind"].get(k, 0)) for k in KINDS)
        batch = r["batch"]
        batch_text = (
            f"#{batch['id']} ({batch['size']}) {batch['decision']}" if batch.get("id") else batch["decision"]
        )
        gate = "promoted" if r["promoted"] else ("rejected" if r.get("gate") else "–")
        train = f"{r['training_seconds']:.0f}" if r.get("training_seconds") is not None else "–"
        lines.append(
            f"| {r['round']} | {kinds} | {batch_text} | {train} | {_fmt(r.get('candidate', {}).get('test'))} "
            f"| {gate} | {r['champion']['name']} {_fmt(r['champion']['test'])} "
            f"| {_fmt(r['champion']['test'], 'rmsle')} | {_fmt(r['champion']['test'], 'hit_rate')} "
            f"| {_fmt(r['baselines']['ridge']['test'])} | {_fmt(r['baselines']['mean']['test'])} "
            f"| {_fmt(r['champion'].get('extra'))} |"
        )
    lines += [
        "",
        "MAE in dollars with its 95% bootstrap interval; hits = share green (< $40 or < 20%), Wilson "
        "interval on the test split. Baselines are fitted on the labels the champion line was trained on.",
        "",
        "## Candidates",
        "",
        "| round | candidate | test MAE | test RMSLE | test hits | extra MAE | extra RMSLE | extra hits "
        "| training s (steps) | run wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rounds"]:
        if not r.get("candidate"):
            continue
        c, run = r["candidate"], r.get("run", {})
        lines.append(
            f"| {r['round']} | {c['name']} {'promoted' if r['promoted'] else 'rejected'} | {_fmt(c['test'])} "
            f"| {_fmt(c['test'], 'rmsle')} | {_fmt(c['test'], 'hit_rate')} | {_fmt(c.get('extra'))} "
            f"| {_fmt(c.get('extra'), 'rmsle')} | {_fmt(c.get('extra'), 'hit_rate')} "
            f"| {run.get('train_seconds') or 0:.0f} ({run.get('steps')}) | {run.get('wall_seconds')} |"
        )
    lines.append("")
    lines.append("## Gate decisions and batches")
    for r in result["rounds"]:
        lines.append(f"- round {r['round']}: batch {r['batch'].get('id', '–')} {r['batch']['decision']}"
                     + (f" ({r['batch']['reason']})" if r["batch"].get("reason") else ""))  # fmt: skip
        for reason in (r.get("gate") or {}).get("reasons", []):
            lines.append(f"  - {reason}")
        for p in r["paused"]:
            lines.append(f"  - paused: {p['username']} ({p['kind']}): {p['reason']}")
    if "summary" in result:
        lines += ["", "## Summary", "", "```json", json.dumps(result["summary"], indent=2), "```"]
    if result.get("notes"):
        lines += ["", "## Notes", *[f"- {n}" for n in result["notes"]]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_outputs(result: dict[str, Any], out: Path) -> None:
    (out / "simulation.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    write_markdown(result, out / "simulation.md")
    write_chart(result, out / "error-per-round.png")


# --- entry point -------------------------------------------------------------------------------------------


def parse_annotators(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, count = part.partition("=")
        if kind not in KINDS or not count.isdigit():
            raise argparse.ArgumentTypeError(
                f"--annotators {text!r}: write KIND=COUNT pairs, KIND one of {', '.join(KINDS)} "
                "(e.g. careful=3,sloppy=1,spammer=1)"
            )
        out[kind] = int(count)
    if not sum(out.values()):
        raise argparse.ArgumentTypeError("--annotators: at least one annotator is needed")
    return out


def parse_args(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--items", type=Path, required=True, help="catalogue JSONL (id, title, text, category, price)"
    )
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--labels-per-round", type=int, default=800)
    p.add_argument(
        "--annotators", type=parse_annotators, default=parse_annotators("careful=3,sloppy=1,spammer=1")
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-extra", type=Path, help="JSONL of items never imported, scored each round")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running PriceLoop (its manage.py runs with this environment)")
    where.add_argument("--start", action="store_true", help="start a PriceLoop on embedded defaults")
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON, markdown and chart")
    p.add_argument("--data-dir", type=Path, help="with --start: a fresh data dir (default OUT/priceloop)")
    p.add_argument("--test-fraction", type=float, default=0.25, help="share of items in the test split")
    p.add_argument("--seed-size", type=int, default=200, help="labelled pool items that v1 is trained on")
    p.add_argument("--gold-size", type=int, default=40)
    p.add_argument("--gold-min-price", type=float, default=200.0, help="gold items cost at least this")
    p.add_argument(
        "--build-base",
        choices=["tiny", "small"],
        help="with --start and no BASE_MODEL: pretrain this base on the pool's texts first",
    )
    p.add_argument("--bootstrap-overrides", default="", help="JSON recipe overrides for v1")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds any one wait may take")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.labels_per_round < 1:
        p.error("--rounds and --labels-per-round must be at least 1")
    if not 0 < args.test_fraction < 1:
        p.error("--test-fraction must be between 0 and 1")
    for name in ("items", "score_extra"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            p.error(f"--{name.replace('_', '-')} {path}: no such file")
    return Config(
        items=args.items,
        rounds=args.rounds,
        labels_per_round=args.labels_per_round,
        annotators=args.annotators,
        seed=args.seed,
        out=args.out,
        score_extra=args.score_extra,
        url=args.url,
        start=args.start,
        data_dir=args.data_dir,
        test_fraction=args.test_fraction,
        seed_size=args.seed_size,
        gold_size=args.gold_size,
        gold_min_price=args.gold_min_price,
        build_base=args.build_base,
        bootstrap_overrides=args.bootstrap_overrides,
        timeout=args.timeout,
        argv=list(argv),
    )


def build_base_from_pool(cfg: Config, pool: list[Item]) -> str:
    """The operator's first step on a fresh install: a base pretrained on the pool's texts only."""
    from training.engine.bootstrap import build_base

    out = (cfg.out / f"base-{cfg.build_base}").resolve()
    if not (out / "config.json").exists():
        print(f"building the {cfg.build_base} base from {len(pool)} pool texts into {out}", flush=True)
        build_base(
            [{"id": i.id, "text": i.text} for i in pool], out, size=cfg.build_base or "tiny", seed=cfg.seed
        )
    return str(out)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    max_chars = int(os.environ.get("CATALOGUE_MAX_TEXT_CHARS") or 1500)
    test, pool = read_items(cfg.items, test_fraction=cfg.test_fraction, max_text_chars=max_chars)
    plan = plan_catalogue(test, pool, cfg)
    extra: list[Item] = []
    if cfg.score_extra:
        extra_test, extra_pool = read_items(cfg.score_extra, test_fraction=0.0, max_text_chars=max_chars)
        extra = [i for i in extra_test + extra_pool if i.trainable]
        overlap = {i.id for i in extra} & plan.by_id.keys()
        if overlap:
            raise SystemExit(
                f"--score-extra shares {len(overlap)} ids with --items (e.g. {sorted(overlap)[0]}): "
                "the extra items must be ones the product never sees."
            )
    if cfg.build_base and cfg.start and not os.environ.get("BASE_MODEL"):
        os.environ["BASE_MODEL"] = build_base_from_pool(cfg, pool)
    with priceloop(cfg) as server:
        sim = Simulation(cfg, server, plan, extra)
        result = sim.run()
    write_outputs(result, cfg.out)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
