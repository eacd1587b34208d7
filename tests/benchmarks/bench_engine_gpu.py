"""The engine's own path on a GPU: ``trainer.train`` and ``Predictor.from_recipe`` with the reference and the
fast recipe, in one process, on Llama-3.1-8B-shaped random weights in 4-bit (gpu_common.py).

Run on a CUDA host (see docs/benchmarks.md):
    python tests/benchmarks/bench_engine_gpu.py --items ../shared/data/amazon_items.jsonl \
        --out docs/bench-results/engine-h200.json --steps 40 --warmup 5
CPU wiring check (tiny base, a few steps, no timing worth reading):
    python tests/benchmarks/bench_engine_gpu.py --items ../shared/data/amazon_items.jsonl --out /tmp/e.json \
        --cpu-base data/base-tiny --steps 6 --warmup 2 --n-predict 24

Training: both recipes (``llama-3.1-8b-qlora``: reference; ``llama-3.1-8b-qlora-fast``) train a fresh
adapter on the same JSONL rows through ``train()`` with only ``model.base``, ``train.max_steps`` and
``train.save_steps`` overridden. Tokens/s counts real (non-padding) tokens from the Trainer's own counter
between the end of step ``warmup`` and the last step; MFU is 4 × 8.03e9 × tokens/s ÷ the bf16 matmul rate
measured at the start of this process. Guessing: ``Predictor.from_recipe`` for each recipe (and the fast
recipe with ``predict.matmul=fp8``) on the same prompts with the reference run's adapter, so their prices
are comparable; agreement is against the reference recipe's predictor.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import (
    bench_tokenizer,
    environment,
    gib,
    load_items,
    matmul_tflops,
    n_params_8b,
    scratch_dir,
    sft_rows,
    write_random_model,
)

from training.engine.config import Recipe, load_recipe
from training.engine.predictor import Predictor
from training.engine.trainer import ProgressEvent, train

CUDA = torch.cuda.is_available()
RECIPES = {"reference": "llama-3.1-8b-qlora", "fast": "llama-3.1-8b-qlora-fast"}


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_memory() -> None:
    gc.collect()
    torch._dynamo.reset()  # compiled graphs of the last stage hold its model; recompile limits start over
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory() -> dict[str, float]:
    if not CUDA:
        return {}
    return {
        "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
        "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
    }


def step_clock() -> Any:
    """A TrainerCallback: wall time (after a device sync) and the Trainer's token counter at each step end."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.tokens: list[int] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.ends.append(time.perf_counter())
            self.tokens.append(int(state.num_input_tokens_seen))

    return StepClock()


def run_training(
    name: str, recipe: Recipe, dataset: Path, out_dir: Path, *, warmup: int, rate_tflops: float | None
) -> dict[str, Any]:
    reset_memory()
    events: list[ProgressEvent] = []
    clock = step_clock()
    t0 = time.perf_counter()
    result = train(recipe, dataset, out_dir, progress=events.append, callbacks=[clock], resume=False)
    wall = time.perf_counter() - t0
    steps = len(clock.ends)
    timed = clock.ends[-1] - clock.ends[warmup - 1]
    tokens = clock.tokens[-1] - clock.tokens[warmup - 1]
    tps = tokens / timed
    out: dict[str, Any] = {
        "recipe": recipe.name,
        "speed": recipe.to_dict()["speed"],
        "steps": result.steps,
        "steps_clocked": steps,
        "warmup_steps_excluded": warmup,
        "batch": recipe.train.batch_size,
        "tokens_per_s": round(tps, 1),
        "samples_per_s": round(recipe.train.batch_size * (steps - warmup) / timed, 2),
        "s_per_step": round(timed / (steps - warmup), 4),
        "mfu": None if rate_tflops is None else round(4 * n_params_8b() * tps / (rate_tflops * 1e12), 4),
        **memory(),
        "final_loss": result.final_loss,
        "loss_log": [e.loss for e in events],
        "progress_tokens_per_s": [None if e.tokens_per_s is None else round(e.tokens_per_s) for e in events],
        "result_tokens": result.tokens,
        "result_seconds": round(result.seconds, 1),
        "wall_s_with_load": round(wall, 1),
        "adapter_dir": str(result.adapter_dir),
    }
    del result
    return out


def run_predictor(
    name: str, recipe: Recipe, adapter: Path, texts: list[str], **options: Any
) -> tuple[dict[str, Any], list[Any]]:
    reset_memory()
    t0 = time.perf_counter()
    predictor = Predictor.from_recipe(recipe, adapter, **options)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.predict(texts)  # warm-up: Triton/Inductor compilation for every width bucket
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = predictor.predict(texts)
    sync()
    seconds = time.perf_counter() - t0
    info = {
        "recipe": recipe.name,
        "matmul": predictor.matmul,
        "batch_size": predictor.batch_size,
        "pad_to_multiple_of": predictor.pad_to_multiple_of,
        "sort_by_length": predictor.sort_by_length,
        "n": len(texts),
        "items_per_s": round(len(texts) / seconds, 2),
        "load_s": round(load_s, 1),
        "first_pass_s": round(warm_s, 1),
        **memory(),
    }
    del predictor
    return info, preds


def agreement(preds: list[Any], ref: list[Any]) -> dict[str, Any]:
    diffs = [abs(a.price - b.price) for a, b in zip(preds, ref, strict=True)]
    top1 = sum(a.topk[0][0] == b.topk[0][0] for a, b in zip(preds, ref, strict=True))
    return {
        "max_abs_price_diff": round(max(diffs), 3),
        "mean_abs_price_diff": round(sum(diffs) / len(diffs), 4),
        "top1_agreement": round(top1 / len(diffs), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--n-predict", type=int, default=1024)
    parser.add_argument("--predict-batches", default="recipe,128", help="'recipe' and/or batch sizes")
    parser.add_argument("--cpu-base", type=Path, help="wiring check on CPU with this (tiny) base folder")
    opts = parser.parse_args()

    result: dict[str, Any] = {"environment": environment(), "training": {}, "guessing": {}}
    result["bf16_matmul_tflops"] = round(matmul_tflops(), 1) if CUDA else None
    print("env", json.dumps(result["environment"]), "bf16 TFLOP/s", result["bf16_matmul_tflops"], flush=True)

    def save() -> None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=1, default=str))

    scratch = scratch_dir()
    items = load_items(opts.items)
    overrides: dict[str, Any] = {"train.max_steps": opts.steps, "train.save_steps": 100_000}
    if opts.cpu_base:
        from training.engine.model_io import load_tokenizer

        base = opts.cpu_base
        tokenizer = load_tokenizer(base)
        overrides.update(
            {
                "quant.mode": "none",
                "model.dtype": "float32",
                "train.precision": "fp32",
                "train.optimizer": "adamw_torch",
                "train.batch_size": 4,
                "train.logging_steps": 2,
                "predict.batch_size": 8,
            }
        )
    else:
        tokenizer = bench_tokenizer(items, scratch / "tokenizer")
        base = scratch / "llama8b-random"
        result["model_write"] = write_random_model(base, tokenizer)
    overrides["model.base"] = str(base)
    recipes = {k: load_recipe(v, overrides) for k, v in RECIPES.items()}
    batch = recipes["reference"].train.batch_size
    rows = sft_rows(items, tokenizer, batch * opts.steps)
    dataset = scratch / "engine-sft.jsonl"
    with dataset.open("w") as fh:
        for r in rows:
            fh.write(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n")
    lengths = [len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]
    result["rows"] = {
        "n": len(rows),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "max": max(lengths),
    }
    print("rows", result["rows"], flush=True)
    save()

    for name, recipe in recipes.items():
        try:
            res = run_training(
                name,
                recipe,
                dataset,
                scratch / f"engine-run-{name}",
                warmup=opts.warmup,
                rate_tflops=result["bf16_matmul_tflops"],
            )
        except Exception as exc:
            traceback.print_exc()
            res = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
        result["training"][name] = res
        print(
            name,
            json.dumps(
                {k: res.get(k) for k in ("tokens_per_s", "mfu", "peak_allocated_gib", "final_loss", "error")}
            ),
            flush=True,
        )
        save()
    ref_train = result["training"]["reference"]
    fast_train = result["training"]["fast"]
    if "tokens_per_s" in ref_train and "tokens_per_s" in fast_train:
        result["training_ratio_fast_vs_reference"] = round(
            fast_train["tokens_per_s"] / ref_train["tokens_per_s"], 3
        )

    trained = ref_train.get("adapter_dir") or fast_train.get("adapter_dir")
    adapter = Path(trained) if trained else None
    if adapter is None:
        print("no adapter trained: guessing skipped", flush=True)
        save()
        return
    texts = [it["text"] for it in items[-opts.n_predict :]]  # not the training rows' order
    fp8 = load_recipe(RECIPES["fast"], {**overrides, "predict.matmul": "fp8"})
    runs: list[tuple[str, Recipe, dict[str, Any]]] = []
    for b in opts.predict_batches.split(","):
        extra = {} if b == "recipe" else {"batch_size": int(b)}
        tag = "" if b == "recipe" else f"_b{b}"
        runs += [(f"reference{tag}", recipes["reference"], extra), (f"fast{tag}", recipes["fast"], extra)]
        runs.append((f"fast_fp8{tag}", fp8, extra))
    ref_preds: dict[str, list[Any]] = {}
    for name, recipe, extra in runs:
        try:
            info, preds = run_predictor(name, recipe, adapter, texts, **extra)
            key = name.split("_b")[-1] if "_b" in name else "recipe"
            if name.startswith("reference"):
                ref_preds[key] = preds
            elif key in ref_preds:
                info["agreement_vs_reference_predictor"] = agreement(preds, ref_preds[key])
            info["first_prices"] = [round(p.price, 2) for p in preds[:5]]
        except Exception as exc:
            traceback.print_exc()
            info = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
        result["guessing"][name] = info
        print(name, json.dumps({k: v for k, v in info.items() if k != "first_prices"}), flush=True)
        save()

    print(f"\n{'training':10} {'tok/s':>8} {'samp/s':>7} {'x ref':>6} {'MFU':>6} {'peak GiB':>9} {'loss':>7}")
    for name, v in result["training"].items():
        if "error" in v:
            print(f"{name:10} ERROR {v['error'][:100]}")
            continue
        ratio = v["tokens_per_s"] / ref_train["tokens_per_s"] if "tokens_per_s" in ref_train else float("nan")
        print(
            f"{name:10} {v['tokens_per_s']:8.0f} {v['samples_per_s']:7.1f} {ratio:6.2f} {v['mfu'] or 0:6.3f} "
            f"{v.get('peak_allocated_gib', 0):9.2f} {v['final_loss'] or float('nan'):7.3f}"
        )
    print(f"\n{'guessing':16} {'items/s':>8} {'peak GiB':>9} {'max|dP|':>8} {'mean|dP|':>9} {'top1':>5}")
    for name, v in result["guessing"].items():
        if "error" in v:
            print(f"{name:16} ERROR {v['error'][:100]}")
            continue
        a = v.get("agreement_vs_reference_predictor", {})
        nan = float("nan")
        print(
            f"{name:16} {v['items_per_s']:8.1f} {v.get('peak_allocated_gib', 0):9.2f} "
            f"{a.get('max_abs_price_diff', nan):8.2f} {a.get('mean_abs_price_diff', nan):9.3f} "
            f"{a.get('top1_agreement', nan):5.2f}"
        )
    save()


if __name__ == "__main__":
    main()
