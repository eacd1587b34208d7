"""Scripted annotators drive PriceLoop round after round through its HTTP API; does the champion improve?

    python tests/benchmarks/simulate_loop.py --items FILE --rounds K --labels-per-round N \\
        --annotators careful=3,sloppy=1,spammer=1 --seed S [--score-extra FILE] \\
        [--url URL | --start] --out DIR

``--start`` starts a PriceLoop of its own on the embedded defaults in a fresh data dir (``--data-dir``,
default ``DIR/priceloop``): SQLite, the filesystem broker, a real ``celery worker -Q default,train``
process and the web server. Its base is ``BASE_MODEL`` when set (a prebuilt folder or a hub id), else
one pretrained here on the pool's texts (``--build-base tiny|small``); ``RETRAIN_RECIPE`` and the
other settings come from the environment. ``--url`` drives one that is running; the operator commands
below then run with this process's environment, which must point at that PriceLoop's database
(``DATABASE_URL``, ``PRICELOOP_DATA_DIR``) and carry its ``RETRAIN_RECIPE``/``RETRAIN_RECIPE_OVERRIDES``.

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
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simloop_catalogue import (
    GREEN_ABS,
    GREEN_REL,
    ROOT,
    Item,
    Plan,
    gold_tolerance,
    import_row,
    jsonl,
    plan_catalogue,
    read_items,
)
from simloop_report import KINDS, api_metrics, base_size, scored, summarize, write_outputs
from simloop_server import Api, ApiError, Server, priceloop

SLOPPY_ACCEPT_REL = 0.40
SECONDS_SPENT = {"careful": 9.0, "sloppy": 3.0, "spammer": 1.0}


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
        """(verdict, corrected price) for an item whose true price is ``truth``; corrections are typed in
        whole dollars, as the codebook asks."""
        rng = self.rng
        if self.kind == "spammer":
            if guess is not None and rng.random() < 0.5:
                return "accept", None
            return "correct", _dollars(math.exp(rng.uniform(0.0, math.log(999.0))))
        error = abs(guess - truth) if guess is not None else math.inf
        if self.kind == "careful":
            if error < GREEN_ABS or error < GREEN_REL * truth:
                return "accept", None
            return "correct", _dollars(truth * (1 + rng.uniform(-0.03, 0.03)))
        if error <= SLOPPY_ACCEPT_REL * truth:
            return "accept", None
        return "correct", _dollars(truth * (1 + rng.uniform(-0.20, 0.20)))


def _dollars(price: float) -> float:
    return float(max(1, round(price)))


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
    base_only: bool = False
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
        self.local_scores: dict[str, dict[str, Any]] = {}
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
                [
                    sys.executable,
                    "manage.py",
                    "create_user",
                    name,
                    "--role",
                    role,
                    "--token",
                    "--no-password",
                ],
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
            self.reviewer.post("/api/v1/gold", rows)
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
        # Seeded products are labelled already (bootstrap_champion --seed-labels): never queued.
        self.log(f"imported {len(plan.test)} test items and {len(plan.seed)} seed items")
        v1 = self.bootstrap_v1()
        self.log(f"champion {v1['name']}: test MAE ${v1['metrics'].get('mae', float('nan')):.2f}")
        # Gold products are pool products with a known price; the champion guesses them first, so the
        # gold items show a guess like every other item.
        self.import_items(plan.gold, name="gold.jsonl", with_price=True)
        self.pool_imported += len(plan.gold)
        self.wait_guessed()
        how = self.import_gold()
        # Made gold, those products leave the ordinary queue (their unanswered tasks are withdrawn): count
        # the rounds' products from here.
        self.tasks_before, self.pool_imported = self.queue()["tasks"]["total"], 0
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
            # Scripted people stand by what they type: when the page asks to confirm an unusual price
            # (far from the guess, or untrainable), they press y, which the API spells confirm_price.
            body["confirm_price"] = True
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

    def _pages(self, url: str) -> list[dict[str, Any]]:
        """Every row of a paginated list."""
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.reviewer.get(f"{url}?page={page}")
            rows += body["results"]
            if not body.get("next"):
                return rows
            page += 1

    def review_batch(self, batch_id: int, round_no: int) -> dict[str, Any]:
        detail = self.reviewer.get(f"/api/v1/batches/{batch_id}")
        checks, passed = detail.get("checks"), detail.get("checks_passed")
        paused = {row["username"] for row in self._pages("/api/v1/annotation/annotators/paused")}
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
            failing = [c for c in checks or [] if isinstance(c, dict) and not c.get("passed", True)]
            reason = (
                "checks failed: " + "; ".join(f"{c.get('name')}: {c.get('message')}" for c in failing)
                if failing
                else "checks failed: " + json.dumps(checks)[:1500]
            )
        elif checks is None and from_paused:
            # A PriceLoop without batch checks: what a reviewer reads on the batch page instead, labels
            # of annotators that gold has paused.
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
        """The version's metrics: ``test`` as the versions API gives them (what the gate saw), and this
        script's own scoring of the same test items (``test_local``, intervals for every metric) and of
        the ``--score-extra`` items (``extra``)."""
        version = self.version(name)
        return {"name": name, "test": api_metrics(version.get("metrics") or {}), **self.score_locally(name)}

    def score_locally(self, name: str) -> dict[str, Any]:
        """The version through the engine's Predictor on its downloaded adapter (sha256 checked)."""
        if name in self.local_scores:
            return self.local_scores[name]
        version = self.version(name)
        folder = self.cfg.out / "versions"
        archive = self.reviewer.download(f"/api/v1/versions/{version['number']}/download")
        if hashlib.sha256(archive).hexdigest() != version["sha256"]:
            raise SystemExit(f"the download of {name} does not match its sha256")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        started = time.monotonic()
        predictor = make_predictor(base_model_of(version), folder / name)
        test = [i for i in self.plan.test if i.trainable]
        guesses = [p.price for p in predictor.predict([i.text for i in test + self.extra])]
        del predictor
        _free_accelerator()
        seconds = round(time.monotonic() - started, 1)
        out = {"test_local": scored([i.price or 0.0 for i in test], guesses[: len(test)], seed=self.cfg.seed)}
        out["test_local"]["seconds"] = seconds
        if self.extra:
            out["extra"] = scored(
                [i.price or 0.0 for i in self.extra], guesses[len(test) :], seed=self.cfg.seed
            )
        self.local_scores[name] = out
        shutil.rmtree(folder / name, ignore_errors=True)
        return out

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
            "base": base_size(base_model_of(v1)),
            "base_model": v1["base_model"],
            "command": "python tests/benchmarks/simulate_loop.py " + shlex.join(cfg.argv),
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
                "retrain_from": self.server.env.get("RETRAIN_FROM") or "base",
                "replay_share": float(self.server.env.get("RETRAIN_REPLAY_SHARE") or 0),
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


def base_model_of(version: dict[str, Any]) -> str:
    """The base to load a version on: this process's ``BASE_MODEL`` (the PriceLoop it drives shares
    it), since the API names a local base by its folder and sha256, never by its server path."""
    return os.environ.get("BASE_MODEL") or version["base_model"]


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
        estimate=recipe.predict.estimate,
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
        help="with --start and no BASE_MODEL: the size of the base pretrained on the pool's texts (tiny); "
        "small also makes RETRAIN_RECIPE default to the small recipe",
    )
    p.add_argument(
        "--base-only",
        action="store_true",
        help="build the base (--build-base) into OUT/base-SIZE and stop: several runs can then share it",
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
        base_only=args.base_only,
        bootstrap_overrides=args.bootstrap_overrides,
        timeout=args.timeout,
        argv=list(argv),
    )


def build_base_from_pool(cfg: Config, pool: list[Item]) -> str | None:
    """The operator's first step on a fresh install: a base pretrained on the pool's texts only (all of
    them: the simulation imports the pool a slice per round, so a base built from the catalogue at v1
    time would know only the seed set). None when this engine's ``build_base`` still pretrains on
    prices: then ``bootstrap_champion`` builds its own base, as it does for the demo."""
    import inspect

    from training.engine.bootstrap import build_base

    if "prices" not in inspect.signature(build_base).parameters:
        return None
    size = cfg.build_base or "tiny"
    out = (cfg.out / f"base-{size}").resolve()
    if not (out / "config.json").exists():
        print(f"building the {size} base from {len(pool)} pool texts into {out}", flush=True)
        build_base([{"id": i.id, "text": i.text} for i in pool], out, size=size, seed=cfg.seed)
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
    if cfg.base_only:
        print(build_base_from_pool(cfg, pool))
        return 0
    if cfg.start and not os.environ.get("BASE_MODEL"):
        base = build_base_from_pool(cfg, pool)
        if base is not None:
            os.environ["BASE_MODEL"] = base
        if cfg.build_base == "small":  # the recipe measured for that base, unless one is named
            os.environ.setdefault("RETRAIN_RECIPE", "small")
    with priceloop(cfg) as server:
        sim = Simulation(cfg, server, plan, extra)
        result = sim.run()
    write_outputs(result, cfg.out)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
