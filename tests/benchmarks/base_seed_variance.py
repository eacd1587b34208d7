"""Does a tiny base learn prices from a seed set whatever its random seed? One base, one v1, one score.

Run (CPU; the demo's catalogue, a seed-set SFT file such as a PriceLoop run's ``datasets/run-1/sft.jsonl``):
    .venv/bin/python -m training.engine.synthetic --n 800 --seed 7 --out var/demo800.jsonl
    .venv/bin/python tests/benchmarks/base_seed_variance.py --catalogue var/demo800.jsonl \
        --dataset SFT.jsonl --base-seed 3 [--base-steps 300] [--overrides '{"train": {...}}']

Builds the tiny base from the pool's texts (the catalogue less the 20% test split by the platform's id
hash; no prices) with ``--base-seed``, fine-tunes the ``tiny`` recipe (plus ``--overrides``) on
``--dataset`` and scores the adapter on the test split with both estimates (median, top-k mean). Prints
one ``RESULT`` JSON line: MAE, the ratio to ``--mean-mae`` when given, guess IQR over truth IQR, seconds.
docs/learning-loop.md ("The demo's v1: a recipe search that did not carry over") lists the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalogue", type=Path, required=True, help="catalogue JSONL (id, text, price)")
    parser.add_argument("--dataset", type=Path, required=True, help="SFT JSONL of the seed labels")
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument(
        "--base", type=Path, default=None, help="an existing tiny base (e.g. a demo's base-tiny): not rebuilt"
    )
    parser.add_argument("--base-steps", type=int, default=None, help="text steps (default: the size's)")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--overrides", default="{}", help="JSON recipe sections over `tiny`")
    parser.add_argument(
        "--price-sigma",
        type=float,
        default=None,
        help="train.price_sigma (0: plain cross-entropy; default: the recipe's)",
    )
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--mean-mae", type=float, default=None, help="the training mean's test MAE")
    parser.add_argument("--out", type=Path, default=Path("var/base-seed-variance"))
    args = parser.parse_args()

    from label_data import read_catalogue, split  # this folder (the script's own path)

    from training.engine.bootstrap import build_base
    from training.engine.config import load_recipe
    from training.engine.evaluator import evaluate, iqr_ratio
    from training.engine.predictor import Predictor
    from training.engine.trainer import train

    test, pool = split(read_catalogue(args.catalogue), args.test_share)
    truths = [float(i["price"]) for i in test]
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.base or args.out / f"base-s{args.base_seed}-{args.base_steps or 'default'}"
    began = time.perf_counter()
    if args.base is None:
        build_base(
            [{"id": i["id"], "text": i["text"]} for i in pool],
            base,
            size="tiny",
            seed=args.base_seed,
            steps=args.base_steps,
        )
    base_s = time.perf_counter() - began
    overrides = json.loads(args.overrides)
    recipe = load_recipe(
        "tiny",
        {
            **overrides,
            "train": {
                **overrides.get("train", {}),
                "seed": args.train_seed,
                **({} if args.price_sigma is None else {"price_sigma": args.price_sigma}),
            },
            "model": {"base": str(base)},
        },
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        result = train(recipe, args.dataset, Path(tmp) / "run", base=str(base), resume=False)
        train_s = time.perf_counter() - began
        for estimate in ("median", "topk"):
            predictor = Predictor(
                str(base),
                result.adapter_dir,
                k=recipe.predict.k,
                batch_size=32,
                max_length=recipe.train.max_length,
                dtype="float32",
                estimate=estimate,
            )
            guesses = [p.price for p in predictor.predict([i["text"] for i in test])]
            mae = evaluate(truths, guesses).mae
            row = {
                "base_seed": None if args.base else args.base_seed,
                "base": args.base.name if args.base else None,
                "base_steps": args.base_steps,
                "train_seed": args.train_seed,
                "overrides": overrides,
                "price_sigma": recipe.train.price_sigma,
                "estimate": estimate,
                "test_items": len(test),
                "mae": round(mae, 2),
                "ratio": round(mae / args.mean_mae, 3) if args.mean_mae else None,
                "iqr_ratio": round(iqr_ratio(guesses, truths), 3),
                "base_s": round(base_s, 1),
                "train_s": round(train_s, 1),
            }
            print("RESULT", json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
