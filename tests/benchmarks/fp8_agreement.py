"""Do FP8 guessing and dense weights give the prices the loaded weights give, on a trained model? (issue 15)

Run (device tool, one GPU of capability 8.9+; the shared data gzipped in .gpu/):
    python tests/benchmarks/fp8_agreement.py --items .gpu/amazon_items.jsonl --out $OUT/fp8-agreement.json
    python tests/benchmarks/fp8_agreement.py --items .gpu/amazon_items.jsonl --quant 4bit --out $OUT/a4.json
CPU dry run of the plumbing (where the PyTorch build refuses float8 matmuls, fp8 is reported as refused):
    .venv/bin/python tests/benchmarks/fp8_agreement.py --synthetic 300 --size tiny --recipe tiny \
        --seed-items 100

The catalogue is split as the platform splits it (a stable share by id hash is the test split). A text-only
base is built from the pool's texts, v1's adapter is trained on ``--seed-items`` labels with the recipe
(``--quant 4bit``: QLoRA on the 4-bit base, as the 8B recipes do), and the test split is guessed three times
through ``Predictor.from_recipe`` (the platform's path): ``loaded`` (bf16 matmuls on the weights as loaded,
the adapter beside them), ``dense`` (``predict.dense_weights=on``: dequantized once, the adapter folded in)
and ``fp8`` (``predict.matmul=fp8``). Reported for dense and fp8 against loaded: top-1 number token agreement,
the share of equal prices, the mean and largest absolute price difference, each path's MAE with its 95%
interval, and the paired test of the two.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--items", help="catalogue JSONL (id, text, price)")
    source.add_argument("--synthetic", type=int, help="N generated products")
    parser.add_argument("--size", default="small", help="base size (build-base --size)")
    parser.add_argument("--base-steps", type=int, default=None, help="pretraining steps (the size's)")
    parser.add_argument("--recipe", default="small")
    parser.add_argument("--seed-items", type=int, default=1500)
    parser.add_argument("--test-share", type=float, default=0.25)
    parser.add_argument("--eager", action="store_true", help="no compiled layers")
    parser.add_argument("--quant", choices=("none", "4bit"), default=None, help="quant.mode (the recipe's)")
    parser.add_argument("--out", default="var/fp8-agreement.json")
    args = parser.parse_args()

    import torch
    from label_data import read_catalogue, split, write_sft  # this folder (the script's own path)

    from training.engine.bootstrap import build_base
    from training.engine.config import load_recipe
    from training.engine.evaluator import compare_paired, evaluate
    from training.engine.model_io import load_tokenizer
    from training.engine.predictor import Predictor
    from training.engine.trainer import train

    test, pool = split(read_catalogue(args.items, synthetic=args.synthetic), args.test_share)
    seed_set = pool[: args.seed_items]
    truths = [float(i["price"]) for i in test]
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "items": Path(args.items).name if args.items else f"synthetic {args.synthetic}",
        "test_items": len(test),
        "seed_items": len(seed_set),
        "recipe": args.recipe,
        "eager": args.eager,
        "quant": args.quant,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "command"}), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        base = build_base(
            [{"text": i["text"]} for i in pool], Path(tmp) / "base", size=args.size, steps=args.base_steps
        )
        result["base"] = {
            **json.loads((base / "bootstrap.json").read_text()),
            "seconds": round(time.perf_counter() - began, 1),
        }
        overrides: dict[str, Any] = {"model.base": str(base)}
        if args.quant:
            overrides["quant.mode"] = args.quant
        recipe = load_recipe(args.recipe, overrides)
        tokenizer = load_tokenizer(str(base))
        ds = Path(tmp) / "sft.jsonl"
        write_sft(
            seed_set,
            ds,
            test_ids={i["id"] for i in test},
            tokenizer=tokenizer,
            max_length=recipe.train.max_length,
        )
        began = time.perf_counter()
        trained = train(recipe, ds, Path(tmp) / "run", base=str(base), resume=False)
        result["train_seconds"] = round(time.perf_counter() - began, 1)
        save()

        texts = [i["text"] for i in test]
        paths: dict[str, list[Any]] = {}
        modes = {
            "loaded": {"matmul": "bf16", "dense_weights": "off"},
            "dense": {"matmul": "bf16", "dense_weights": "on"},
            "fp8": {"matmul": "fp8"},
        }
        for mode, options in modes.items():
            began = time.perf_counter()
            try:
                extra = {"compile": False} if args.eager else {}
                predictor = Predictor.from_recipe(recipe, trained.adapter_dir, **options, **extra)
            except Exception as exc:  # the refusal on a device without FP8 units, named in the output
                result[mode] = {"refused": str(exc)}
                save()
                continue
            preds = predictor.predict(texts)
            m = evaluate(truths, [p.price for p in preds])
            paths[mode] = preds
            result[mode] = {
                "mae": round(m.mae, 2),
                "mae_ci95": [round(x, 2) for x in m.mae_ci95],
                "hit_rate": round(m.hit_rate, 4),
                "seconds": round(time.perf_counter() - began, 1),
            }
            del predictor
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            save()
    for mode in ("dense", "fp8"):
        if mode not in paths or "loaded" not in paths:
            continue
        a, b = paths["loaded"], paths[mode]
        n, pairs = len(a), list(zip(a, b, strict=True))
        diffs = [abs(x.price - y.price) for x, y in pairs]
        c = compare_paired(truths, [y.price for y in b], [x.price for x in a])
        result[f"agreement_{mode}"] = {
            "top1_token_same": round(sum(x.topk[0][0] == y.topk[0][0] for x, y in pairs) / n, 4),
            "price_same": round(sum(d == 0 for d in diffs) / len(diffs), 4),
            "mean_abs_price_diff": round(sum(diffs) / len(diffs), 3),
            "max_abs_price_diff": round(max(diffs), 2),
            # This mode as the candidate against the loaded weights: a positive delta means it guessed better.
            "mae_delta_loaded_minus_mode": round(c.mae_delta, 3),
            "mae_delta_ci95": [round(x, 3) for x in c.ci95],
            "p_wilcoxon_mode_better": c.p_wilcoxon,
        }
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
