# ruff: noqa: B023, E501 - an experiment script: the per-epoch callback closes over the loop it runs in
"""Choose the fine-tuning recipe for offline (bootstrapped) bases by measurement.

Run (CPU, the demo's catalogue):
    .venv/bin/python tests/benchmarks/offline_recipe_search.py --synthetic 600 --catalogue-seed 7 \
        --size tiny --seed-items 150 --out var/recipe-search
Run (GPU, real data): ... --items ../shared/data/amazon_items.jsonl --size small --seed-items 2000

The catalogue is split as the platform splits it: a stable share by id hash is the test split (never
trained on); from the pool a validation set (items neither the base's fine-tune nor anyone else sees) is
held out for early stopping, and ``--seed-items`` labelled items train v1. The base is pretrained on the
pool's *texts* only (no prices), then each candidate recipe fine-tunes a LoRA adapter on the seed labels;
after every epoch the adapter is scored on the validation set and the best epoch is kept. The table gives
test MAE (and the training-mean baseline's), the spread of guesses (IQR ratio to the true prices') and
seconds. Writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Candidate recipes: overrides over the packaged `tiny` recipe (CPU) or `small-qlora` (GPU).
VARIANTS: dict[str, dict[str, Any]] = {
    "attn-r8": {"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
    "all-r16": {
        "lora": {
            "r": 16,
            "alpha": 32,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        }
    },
    "all-r32": {
        "lora": {
            "r": 32,
            "alpha": 64,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        }
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--items", help="catalogue JSONL (id, text, price)")
    source.add_argument("--synthetic", type=int, help="N generated products")
    parser.add_argument("--catalogue-seed", type=int, default=7)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--base-steps", type=int, default=None)
    parser.add_argument("--hidden", type=int, help="override the size's hidden width (intermediate = 3x)")
    parser.add_argument("--layers", type=int, help="override the size's layer count")
    parser.add_argument("--no-number-init", action="store_true", help="random number-token embeddings")
    parser.add_argument("--base", help="reuse a built base folder")
    parser.add_argument("--recipe", default="tiny")
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--val-items", type=int, default=60)
    parser.add_argument("--seed-items", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--lr", default="5e-3", help="comma-separated learning rates")
    parser.add_argument("--k", type=int, default=0, help="predict.k override (0: the recipe's)")
    parser.add_argument("--overrides", default="{}", help="JSON recipe sections merged into every variant")
    parser.add_argument("--out", default="var/recipe-search")
    args = parser.parse_args()

    from training.engine.bootstrap import build_base
    from training.engine.config import load_recipe
    from training.engine.evaluator import evaluate, iqr_ratio
    from training.engine.model_io import load_tokenizer
    from training.engine.predictor import Predictor
    from training.engine.trainer import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from label_data import read_catalogue, split, write_sft  # this folder (the script's own path)

    items = read_catalogue(args.items, synthetic=args.synthetic, seed=args.catalogue_seed)
    test, pool = split(items, args.test_share)
    val, rest = pool[: args.val_items], pool[args.val_items :]
    seed_set = rest[: args.seed_items]
    print(f"items {len(items)}: test {len(test)}, pool {len(pool)} (val {len(val)}, seed {len(seed_set)})")

    import dataclasses

    from training.engine import bootstrap

    size = args.size
    if args.hidden or args.layers:
        spec = bootstrap.SIZES[args.size]
        hidden = args.hidden or spec.hidden
        size = f"{args.size}-h{hidden}x{args.layers or spec.layers}"
        bootstrap.SIZES[size] = dataclasses.replace(
            spec, hidden=hidden, intermediate=3 * hidden, layers=args.layers or spec.layers
        )
    if args.no_number_init:
        bootstrap._init_number_embeddings = lambda model, tokenizer: None
    began = time.perf_counter()
    if args.base:
        base = Path(args.base)
    else:
        base = build_base(
            [{"text": i["text"]} for i in pool], out / f"base-{size}", size=size, steps=args.base_steps
        )
    base_seconds = time.perf_counter() - began
    print(f"base: {base} in {base_seconds:.1f}s {json.loads((base / 'bootstrap.json').read_text())}")

    truths = [float(i["price"]) for i in test]
    mean_price = statistics.fmean(float(i["price"]) for i in seed_set)
    mean_mae = evaluate(truths, [mean_price] * len(truths)).mae
    from training.engine.baselines import tfidf_ridge

    ridge = tfidf_ridge([i["text"] for i in seed_set], [float(i["price"]) for i in seed_set])
    ridge_mae = evaluate(truths, list(ridge([i["text"] for i in test]))).mae
    print(f"baselines on the test split: training mean MAE {mean_mae:.2f}, TF-IDF ridge MAE {ridge_mae:.2f}")
    results: list[dict[str, Any]] = []
    if args.epochs == 0:  # build the base (and print the baselines) only
        return 0
    tokenizer = load_tokenizer(str(base))
    for name in args.variants.split(","):
        for lr in [float(x) for x in args.lr.split(",")]:
            extra = json.loads(args.overrides)
            overrides = {
                **extra,
                **VARIANTS[name],
                "train": {**extra.get("train", {}), "learning_rate": lr, "epochs": 1, "max_steps": -1},
            }
            if args.k:
                overrides["predict"] = {"k": args.k}
            recipe = load_recipe(args.recipe, overrides)
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                ds = Path(tmp) / "sft.jsonl"
                write_sft(
                    seed_set,
                    ds,
                    test_ids={i["id"] for i in test},
                    tokenizer=tokenizer,
                    max_length=recipe.train.max_length,
                )
                rows: list[dict[str, Any]] = []
                began_train = time.perf_counter()
                pred_tok = load_tokenizer(str(base))

                def on_epoch_end(model: Any, epoch: int, loss: float | None) -> None:
                    was_training = model.training
                    model.eval()
                    predictor = Predictor(
                        str(base), model=model, tokenizer=pred_tok, k=recipe.predict.k,
                        batch_size=32, max_length=recipe.train.max_length, dtype="float32",
                        estimate=recipe.predict.estimate,  # as the product guesses (was top-k always)
                    )  # fmt: skip
                    val_mae = evaluate(
                        [float(i["price"]) for i in val],
                        [p.price for p in predictor.predict([i["text"] for i in val])],
                    ).mae
                    guesses = [p.price for p in predictor.predict([i["text"] for i in test])]
                    metrics = evaluate(truths, guesses)
                    row = {
                        "variant": name, "lr": lr, "epoch": epoch, "train_s": round(time.perf_counter() - began_train, 1),
                        "loss": loss, "val_mae": round(val_mae, 2), "test_mae": round(metrics.mae, 2),
                        "mean_mae": round(mean_mae, 2), "ridge_mae": round(ridge_mae, 2), "ratio": round(metrics.mae / mean_mae, 3),
                        "iqr_ratio": round(iqr_ratio(guesses, truths), 3), "hit_rate": round(metrics.hit_rate, 3),
                        "distinct": len({round(g) for g in guesses}),
                    }  # fmt: skip
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    if was_training:
                        model.train()

                from transformers import TrainerCallback

                class EpochEval(TrainerCallback):
                    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                        losses = [h["loss"] for h in state.log_history if "loss" in h]
                        on_epoch_end(kw["model"], round(state.epoch or 0), losses[-1] if losses else None)

                recipe = load_recipe(
                    args.recipe, {**overrides, "train": {**overrides["train"], "epochs": args.epochs}}
                )
                train(recipe, ds, Path(tmp) / "run", base=str(base), resume=False, callbacks=[EpochEval()])
                results.extend(rows)
                best = min(rows, key=lambda r: r["val_mae"])
                results.append({**best, "best": True})
                print("BEST", json.dumps(best), flush=True)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "base_seconds": base_seconds, "rows": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
