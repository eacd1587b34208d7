"""The demo's v1, measured as a user meets it: is it a model worth correcting?

Run: ``.venv/bin/python tests/benchmarks/demo_v1.py [--out docs/bench-results/demo-v1.json]``

Seeds the demo from nothing (``manage.py demo --no-serve`` in a fresh data directory: the synthetic
catalogue, the tiny base built from its texts, ``v1`` fine-tuned on the named seed set) and times it; then
scores the champion on the demo's test split through the same predictor the product guesses with. Prints
a table and writes JSON: v1 MAE, the training mean's MAE (the seed labels' mean price), their ratio
(target ≤ 0.75), the interquartile range of v1's guesses over that of the true prices (target ≥ 0.25),
distinct guesses, TF-IDF ridge on the same seed labels, and the seconds the seeding took (target: within
3 minutes on 2 cores).

``--first-batch`` then does what the demo's first day does, in this process through the HTTP API (DRF's
test client, the demo's own logins): the two demo annotators label every open pool task with its true
price (gold items included), the reviewer creates a batch and approves it, and the run (dataset → train →
evaluate → gate) runs in this process, step by step as the worker would, with the demo's retraining settings
(``RETRAIN_*`` from the environment). ``--answers N`` stops the annotators after N answers (a shorter first
day; an answer left leased is not in the batch), and ``--batches K`` repeats label → batch → approve → run K
times, as a day of a slower team whose reviewer approves each batch as it comes. It reports each batch,
the candidate's test MAE and the gate's decision (target: v2 promoted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument(
        "--first-batch", action="store_true", help="then label the pool, approve the first batch, train v2"
    )
    parser.add_argument(
        "--answers",
        type=int,
        default=0,
        help="with --first-batch: stop after this many answers (default 0: every open task)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=1,
        help="with --first-batch and --answers: this many batches in a row, each labelled, approved, trained",
    )
    args = parser.parse_args()
    if args.batches > 1 and not args.answers:
        parser.error("--batches above 1 needs --answers N: without it the first batch takes every open task")

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="demo-v1-"))
    env = {**os.environ, "PRICELOOP_DATA_DIR": str(data_dir), "DEBUG": "1"}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL"):  # the demo runs on its embedded defaults
        env.pop(name, None)
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "demo", "--no-serve"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seed_seconds = time.perf_counter() - began

    os.environ.update({"PRICELOOP_DATA_DIR": str(data_dir), "DEBUG": "1"})
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from annotation.models import Product, SeedLabel, Split
    from training import storage
    from training.engine.baselines import tfidf_ridge
    from training.engine.evaluator import evaluate, iqr_ratio
    from training.models import ModelVersion, VersionStatus
    from training.recipes import make_predictor, version_predictor_settings

    champion = ModelVersion.objects.get(status=VersionStatus.CHAMPION)
    test = list(Product.objects.filter(split=Split.TEST, price__isnull=False).order_by("id"))
    truths = [float(p.price) for p in test]
    predictor = make_predictor(
        base_model=champion.base_model,
        adapter_dir=storage.version_local(champion.artifact_path, manifest=champion.manifest),
        predictor=version_predictor_settings(champion),
    )
    guesses = [g.price for g in predictor.predict([p.text for p in test])]
    seeds = list(SeedLabel.objects.select_related("product"))
    seed_prices = [float(s.price) for s in seeds]
    mean_mae = evaluate(truths, [statistics.fmean(seed_prices)] * len(truths)).mae
    ridge = tfidf_ridge([s.product.text for s in seeds], seed_prices)
    ridge_mae = evaluate(truths, list(ridge([p.text for p in test]))).mae
    v1 = evaluate(truths, guesses)
    result = {
        "champion": champion.name,
        "products": Product.objects.count(),
        "test_items": len(test),
        "seed_labels": len(seeds),
        "seed_seconds": round(seed_seconds, 1),
        "v1_mae": round(v1.mae, 2),
        "mean_mae": round(mean_mae, 2),
        "ratio": round(v1.mae / mean_mae, 3),
        "iqr_ratio": round(iqr_ratio(guesses, truths), 3),
        "distinct_guesses": len({round(g) for g in guesses}),
        "guess_range": [round(min(guesses), 2), round(max(guesses), 2)],
        "ridge_mae": round(ridge_mae, 2),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    rows = [
        ("seeding (catalogue, base, v1, guesses)", f"{seed_seconds:.0f} s", "≤ 180 s"),
        ("v1 test MAE", f"${v1.mae:.2f}", ""),
        ("training-mean MAE", f"${mean_mae:.2f}", ""),
        ("v1 ÷ training mean", f"{result['ratio']:.3f}", "≤ 0.75"),
        ("guess IQR ÷ truth IQR", f"{result['iqr_ratio']:.3f}", "≥ 0.25"),
        ("TF-IDF ridge (same seed labels)", f"${ridge_mae:.2f}", ""),
    ]
    if args.first_batch:
        day = [one_batch(args.answers) for _ in range(args.batches)]
        result["first_batch"] = day[0]
        if args.batches > 1:
            result["batches"] = day
        for n, batch in enumerate(day, start=1):
            candidate = batch.get("candidate_mae")
            rows += [
                (f"batch {n}: labels", str(batch["batch_size"]), ""),
                (f"{batch['candidate']} test MAE", f"${candidate:.2f}" if candidate is not None else "–", ""),
                ("gate", "promoted" if batch["promoted"] else "rejected", "promoted" if n == 1 else ""),
            ]
    print(f"{'measure':<42}{'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<42}{value:>12}  {target}")
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def one_batch(answers: int = 0) -> dict:
    """The demo annotators label the open pool (all of it, or ``answers`` answers) with true prices; the
    reviewer batches every resolved label and approves; the run is trained and gated against the champion."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from annotation.models import Product
    from training.models import TrainingRun
    from training.services.registry import run_evaluate_and_gate
    from training.services.runs import dataset_build, run_train

    def client(username: str) -> APIClient:
        api = APIClient(SERVER_NAME="127.0.0.1")
        api.force_authenticate(get_user_model().objects.get(username=username))
        return api

    annotators = [client("annotator"), client("annotator2")]
    labelled, idle = 0, 0
    began = time.perf_counter()
    while idle < len(annotators):
        idle = 0
        for api in annotators:
            if answers and labelled >= answers:
                idle = len(annotators)  # the day's answers are in
                break
            got = api.post("/api/v1/annotate/next", format="json")
            if got.status_code == 204:
                idle += 1
                continue
            body = got.json()
            if got.status_code != 200 and body.get("error", {}).get("code") == "codebook_ack_required":
                ack = {"version": body["error"]["codebook_version"]}
                api.post("/api/v1/annotate/codebook/ack", ack, format="json")
                continue
            assert got.status_code == 200, body
            truth = Product.objects.get(external_id=body["product"]["external_id"]).price
            answer = {
                "assignment_id": body["id"],
                "verdict": "correct",
                "corrected_price": str(truth),
                "confirm_price": True,
                "seconds_spent": 3.0,
            }
            sent = api.post("/api/v1/annotate/submit", answer, format="json")
            assert sent.status_code == 200, sent.content
            labelled += 1
    label_seconds = time.perf_counter() - began

    reviewer = client("reviewer")
    created = reviewer.post("/api/v1/batches/create", {"min_size": 1}, format="json")
    assert created.status_code == 201, created.content
    batch = created.json()
    approve: dict = {}
    if not batch["checks_passed"]:  # said in the output: the demo's reviewer would have to override
        approve = {"override_reason": "demo first batch: every label is the true price"}
    began = time.perf_counter()
    approved = reviewer.post(f"/api/v1/batches/{batch['id']}/approve", approve, format="json")
    assert approved.status_code == 200, approved.content
    run_id = approved.json()["id"]
    dataset_build(run_id=run_id)  # the worker's three steps, in order, here
    run_train(run_id=run_id, enqueue_next=False)
    run_evaluate_and_gate(run_id=run_id)
    run = TrainingRun.objects.select_related("candidate").get(pk=run_id)
    gate = run.gate or {}
    return {
        "labelled": labelled,
        "label_seconds": round(label_seconds, 1),
        "batch_size": batch["size"],
        "checks_passed": batch["checks_passed"],
        "run_status": run.status,
        "run_seconds": round(time.perf_counter() - began, 1),
        "retrain_from": settings.RETRAIN_FROM,
        "candidate": run.candidate.name if run.candidate else None,
        "candidate_mae": run.candidate.metrics.get("mae") if run.candidate else None,
        "v1_gate_mae": gate.get("numbers", {}).get("mae_champion"),  # the champion's (v1 for the first)
        "promoted": bool(gate.get("promote")),
        "gate": gate,
        "error": run.error,
    }


if __name__ == "__main__":
    raise SystemExit(main())
