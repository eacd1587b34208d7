"""The demo's v1, measured as a user meets it: is it a model worth correcting?

Run: ``.venv/bin/python tests/benchmarks/demo_v1.py [--out docs/bench-results/demo-v1.json]``

Seeds the demo from nothing (``manage.py demo --no-serve`` in a fresh data directory: the synthetic
catalogue, the tiny base built from its texts, ``v1`` fine-tuned on the named seed set) and times it; then
scores the champion on the demo's test split through the same predictor the product guesses with. Prints
a table and writes JSON: v1 MAE, the training mean's MAE (the seed labels' mean price), their ratio
(target ≤ 0.75), the interquartile range of v1's guesses over that of the true prices (target ≥ 0.25),
distinct guesses, TF-IDF ridge on the same seed labels, and the seconds the seeding took (target: within
3 minutes on 2 cores).
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
    args = parser.parse_args()

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
    print(f"{'measure':<42}{'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<42}{value:>12}  {target}")
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
