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
recipe with ``predict.matmul=fp8``, and with ``predict.dense_weights=off`` as ``fast_loaded``) on the same
prompts with the reference run's adapter, so their prices are comparable; agreement is against the
reference recipe's predictor (and for ``fast``, against ``fast_loaded``).

Training variants (``--variants``): ``reference`` and ``fast`` are the packaged recipes as they are;
``fast_syncs`` is the fast recipe as it was on 2026-12-06 (TRL's fused head picking the labelled positions
with a boolean index, the 2-D padding mask, blocking batch copies: three waits for the GPU a step);
``fast_graphs`` is the fast recipe with each compiled layer replayed as CUDA graphs (``torch.compile``'s
``reduce-overhead``: less host work a step); ``fast_before`` is the fast recipe as it was until
2026-12-06 (Liger kernels inside the compiled layers, TRL's and the Trainer's per-step host reads, the NaN
filter); ``fast_liger`` adds only the Liger kernels back and ``fast_reads`` only the per-step reads, to
tell the two changes apart. Timing runs between two logged
steps (``train.logging_steps`` = ``--warmup``), where the token count is exact, with a device sync at
each end and none in between. ``--profile`` runs a short extra copy of the named variants under the torch
profiler (kernel time by kind, GPU busy share, the host's busiest operators). Guessing prints the bf16
ceiling (the process's matmul rate over 2 x 7.50e9 non-embedding parameters x the prompts' mean tokens)
and each predictor's share of it.
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
from training.engine.trainer import ProgressEvent, TrainHooks, train

CUDA = torch.cuda.is_available()
RECIPES = {"reference": "llama-3.1-8b-qlora", "fast": "llama-3.1-8b-qlora-fast"}
VARIANTS = ("reference", "fast", "fast_syncs", "fast_graphs", "fast_before", "fast_liger", "fast_reads")
NON_EMBEDDING_PARAMS = 7.50e9  # Llama-3.1-8B less its 525 M-parameter embedding table (docs/benchmarks.md)


class TrlHeadMetrics:
    """``DeferredStepMetrics`` as it was on 2026-12-06 (fast_syncs): batches without host-made answer
    positions, so TRL's fused head picks them with a boolean index and the model gets the 2-D mask."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = self.data_collator.collator  # type: ignore[attr-defined]


def variant_hooks(name: str, recipe: Recipe) -> TrainHooks | None:
    """The speed hooks a training variant runs with (None: the recipe's own)."""
    from training.engine import speed

    hooks = speed.train_hooks(recipe)
    if name in ("reference", "fast") or hooks is None:
        return None
    if name == "fast_graphs":

        def graphs(model: Any) -> Any:  # each layer replayed as CUDA graphs (torch.compile reduce-overhead)
            for layer in speed.causal_lm_parts(model)[0].layers:
                layer.compile(mode="reduce-overhead")
            return model

        return TrainHooks(
            prepare_model=graphs, args_overrides=hooks.args_overrides, trainer_mixins=hooks.trainer_mixins
        )
    blocking = {k: v for k, v in hooks.args_overrides.items() if k != "accelerator_config"}
    if name == "fast_syncs":
        mixin = type("FastSyncsMetrics", (TrlHeadMetrics, speed.DeferredStepMetrics), {})
        return TrainHooks(prepare_model=hooks.prepare_model, args_overrides=blocking, trainer_mixins=(mixin,))

    def liger_then_compile(model: Any) -> Any:
        speed.apply_liger(model)
        speed.compile_layers(model)
        return model

    with_reads = {k: v for k, v in blocking.items() if k != "logging_nan_inf_filter"}
    return TrainHooks(
        prepare_model=hooks.prepare_model if name == "fast_reads" else liger_then_compile,
        args_overrides=hooks.args_overrides if name == "fast_liger" else with_reads,
        trainer_mixins=hooks.trainer_mixins if name == "fast_liger" else (),
    )


def graph_breaks() -> dict[str, Any]:
    from torch._dynamo.utils import counters

    reasons = counters["graph_break"]
    return {"total": sum(reasons.values()), "top": [[r[:160], n] for r, n in reasons.most_common(5)]}


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


def log_clock() -> Any:
    """A TrainerCallback: wall time (after a device sync) and the Trainer's token count at each logged step;
    nothing is synced between logs, so the host may run ahead of the device as it does in a real run."""
    from transformers import TrainerCallback

    class LogClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: dict[int, tuple[float, int]] = {}

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                sync()
                self.marks[state.global_step] = (time.perf_counter(), int(state.num_input_tokens_seen))

    return LogClock()


def run_training(
    name: str, recipe: Recipe, dataset: Path, out_dir: Path, *, warmup: int, rate_tflops: float | None
) -> dict[str, Any]:
    reset_memory()
    from torch._dynamo.utils import counters

    counters.clear()
    events: list[ProgressEvent] = []
    clock = log_clock()
    t0 = time.perf_counter()
    hooks = variant_hooks(name, recipe)
    result = train(
        recipe, dataset, out_dir, progress=events.append, callbacks=[clock], resume=False, hooks=hooks
    )
    wall = time.perf_counter() - t0
    last = max(clock.marks)
    timed = clock.marks[last][0] - clock.marks[warmup][0]
    tokens = clock.marks[last][1] - clock.marks[warmup][1]
    steps = last - warmup
    tps = tokens / timed
    out: dict[str, Any] = {
        "recipe": recipe.name,
        "variant": name,
        "speed": recipe.to_dict()["speed"],
        "steps": result.steps,
        "timed_steps": [warmup, last],
        "batch": recipe.train.batch_size,
        "tokens_per_s": round(tps, 1),
        "samples_per_s": round(recipe.train.batch_size * steps / timed, 2),
        "s_per_step": round(timed / steps, 4),
        "graph_breaks": graph_breaks(),
        "mfu": None if rate_tflops is None else round(4 * n_params_8b() * tps / (rate_tflops * 1e12), 4),
        **memory(),
        "final_loss": result.final_loss,
        "loss_log": [[e.step, e.loss] for e in events],
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
    bare = None
    if predictor.single_pass:
        # The same batches' forward passes alone, inputs already on the device: what predict() would reach
        # with no host work at all (its share of this is the host overhead left).
        encoded = [
            predictor._encode(predictor.prompts([texts[i] for i in batch]))
            for batch in predictor.batches(texts)
        ]
        sync()
        t0 = time.perf_counter()
        for enc in encoded:
            predictor._forward(enc)
        sync()
        bare = len(texts) / (time.perf_counter() - t0)
    info = {
        "recipe": recipe.name,
        "bare_forward_items_per_s": None if bare is None else round(bare, 2),
        "share_of_bare_forward": None if bare is None else round(len(texts) / seconds / bare, 3),
        "matmul": predictor.matmul,
        "dense_weights": predictor.dense,
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
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"training variants of {VARIANTS}")
    parser.add_argument("--profile", default="", help="variants to profile in a short extra run (2 steps)")
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
    # Logged (and so timed) at the end of the warm-up and every as many steps after it.
    overrides: dict[str, Any] = {
        "train.max_steps": opts.steps,
        "train.save_steps": 100_000,
        "train.logging_steps": opts.warmup,
    }
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

    variants = [v for v in opts.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not {"reference", "fast"} <= set(variants):
        parser.error(f"--variants {opts.variants}: use reference, fast and any of {VARIANTS}")
    for name in variants:
        recipe = recipes["reference" if name == "reference" else "fast"]
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
    if "tokens_per_s" in ref_train:
        result["training_ratio_vs_reference"] = {
            name: round(v["tokens_per_s"] / ref_train["tokens_per_s"], 3)
            for name, v in result["training"].items()
            if "tokens_per_s" in v
        }
    result["profiles"] = {}
    for name in filter(None, opts.profile.split(",")):
        recipe = load_recipe(
            RECIPES["reference" if name == "reference" else "fast"],
            {**overrides, "train.max_steps": opts.warmup + 4},
        )
        from bench_train_gpu import _step_clock, summarize_profile

        clock = _step_clock((opts.warmup + 1, opts.warmup + 3))  # steps warmup+2 and warmup+3
        try:
            reset_memory()
            train(
                recipe,
                dataset,
                scratch / f"engine-profile-{name}",
                callbacks=[clock],
                resume=False,
                hooks=variant_hooks(name, recipe),
            )
            result["profiles"][name] = summarize_profile(clock.done_profiler, clock.prof_wall, 2)
        except Exception as exc:
            traceback.print_exc()
            result["profiles"][name] = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
        print("profile", name, json.dumps(result["profiles"][name])[:600], flush=True)
        save()

    trained = ref_train.get("adapter_dir") or fast_train.get("adapter_dir")
    adapter = Path(trained) if trained else None
    if adapter is None:
        print("no adapter trained: guessing skipped", flush=True)
        save()
        return
    texts = [it["text"] for it in items[-opts.n_predict :]]  # not the training rows' order
    budget = recipes["fast"].train.max_length - 4
    from training.engine.prompts import build_prompt, encode_prompt

    prompt_tokens = sum(
        len(encode_prompt(tokenizer, build_prompt(t, tokenizer=tokenizer, max_tokens=budget))) for t in texts
    ) / len(texts)
    ceiling = None
    if result["bf16_matmul_tflops"]:
        ceiling = result["bf16_matmul_tflops"] * 1e12 / (2 * NON_EMBEDDING_PARAMS * prompt_tokens)
    result["guessing_ceiling"] = {
        "prompt_tokens_mean": round(prompt_tokens, 1),
        "bf16_items_per_s": None if ceiling is None else round(ceiling, 1),
    }
    fp8 = load_recipe(RECIPES["fast"], {**overrides, "predict.matmul": "fp8"})
    loaded = load_recipe(RECIPES["fast"], {**overrides, "predict.dense_weights": "off"})
    runs: list[tuple[str, Recipe, dict[str, Any]]] = []
    for b in filter(None, opts.predict_batches.split(",")):  # "": no guessing
        extra = {} if b == "recipe" else {"batch_size": int(b)}
        tag = "" if b == "recipe" else f"_b{b}"
        runs += [(f"reference{tag}", recipes["reference"], extra), (f"fast{tag}", recipes["fast"], extra)]
        runs.append((f"fast_loaded{tag}", loaded, extra))
        runs.append((f"fast_fp8{tag}", fp8, extra))
    ref_preds: dict[str, list[Any]] = {}
    fast_preds: dict[str, list[Any]] = {}
    for name, recipe, extra in runs:
        try:
            info, preds = run_predictor(name, recipe, adapter, texts, **extra)
            key = name.split("_b")[-1] if "_b" in name else "recipe"
            if name.startswith("reference"):
                ref_preds[key] = preds
            elif key in ref_preds:
                info["agreement_vs_reference_predictor"] = agreement(preds, ref_preds[key])
            fast_name = name.replace("fast_loaded", "fast")
            if name.startswith("fast_loaded") and fast_name in fast_preds:  # dense weights vs as loaded
                result["guessing"][fast_name]["agreement_vs_loaded_weights"] = agreement(
                    fast_preds[fast_name], preds
                )
            elif name.startswith("fast") and "fp8" not in name:
                fast_preds[name] = preds
            info["first_prices"] = [round(p.price, 2) for p in preds[:5]]
            if ceiling:
                info["share_of_bf16_ceiling"] = round(info["items_per_s"] / ceiling, 3)
        except Exception as exc:
            traceback.print_exc()
            info = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
        result["guessing"][name] = info
        print(name, json.dumps({k: v for k, v in info.items() if k != "first_prices"}), flush=True)
        save()

    print(
        f"\n{'training':12} {'tok/s':>8} {'samp/s':>7} {'x ref':>6} {'MFU':>6} {'peak GiB':>9} {'loss':>7} "
        f"{'breaks':>6}"
    )
    for name, v in result["training"].items():
        if "error" in v:
            print(f"{name:12} ERROR {v['error'][:100]}")
            continue
        ratio = v["tokens_per_s"] / ref_train["tokens_per_s"] if "tokens_per_s" in ref_train else float("nan")
        print(
            f"{name:12} {v['tokens_per_s']:8.0f} {v['samples_per_s']:7.1f} {ratio:6.2f} {v['mfu'] or 0:6.3f} "
            f"{v.get('peak_allocated_gib', 0):9.2f} {v['final_loss'] or float('nan'):7.3f} "
            f"{v['graph_breaks']['total']:6d}"
        )
    for name, prof in result["profiles"].items():
        if prof and "error" not in prof:
            print(
                f"profile {name}: {prof['wall_ms_per_step']} ms a step, "
                f"{prof['gpu_kernel_ms_per_step']} ms of kernels (busy {prof['gpu_busy_share']:.0%}): "
                f"{prof['kernel_ms_per_step_by_kind']}; host ops {prof['host_ms_per_step']} ms a step, "
                f"busiest "
                f"{[(op['name'][:40], op['ms_per_step']) for op in prof['top_host_ops'][:6]]}"
            )
    print(
        f"\nbf16 ceiling {result['guessing_ceiling']['bf16_items_per_s']} items/s "
        f"({result['guessing_ceiling']['prompt_tokens_mean']} tokens a prompt)"
    )
    print(
        f"{'guessing':16} {'items/s':>8} {'ceiling':>8} {'peak GiB':>9} {'max|dP|':>8} {'mean|dP|':>9} "
        f"{'top1':>5}"
    )
    for name, v in result["guessing"].items():
        if "error" in v:
            print(f"{name:16} ERROR {v['error'][:100]}")
            continue
        a = v.get("agreement_vs_reference_predictor", {})
        nan = float("nan")
        print(
            f"{name:16} {v['items_per_s']:8.1f} {v.get('share_of_bf16_ceiling') or nan:8.3f} "
            f"{v.get('peak_allocated_gib', 0):9.2f} "
            f"{a.get('max_abs_price_diff', nan):8.2f} {a.get('mean_abs_price_diff', nan):9.3f} "
            f"{a.get('top1_agreement', nan):5.2f}"
        )
    save()


if __name__ == "__main__":
    main()
