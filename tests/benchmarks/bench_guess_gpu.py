"""Guessing throughput on a Llama-3.1-8B-shaped model in 4-bit: generate() vs one batched forward pass.

Run on a CUDA host (see docs/benchmarks.md):
    python tests/benchmarks/bench_guess_gpu.py --items ../shared/data/amazon_items.jsonl \
        --out docs/bench-results/guess-h100.json

Same random-weight 8B model and prompts as bench_train_gpu.py (gpu_common.py), loaded in 4-bit nf4:
- ``generate_1``: the reference, ``generate(max_new_tokens=3)`` one item at a time, greedy.
- ``generate_bN``: the same, batched (left padding).
- ``engine_bN``: PriceLoop's ``Predictor`` as the reference-speed path runs it (full logits, every position).
- ``fast_bN``: the speed path (training/engine/speed.py): Liger kernels, the LM head at the last position
  only, prompts sorted by length so a batch carries little padding.
The single-pass prices are checked against the expected-value formula computed here, independently, from
each item's own unbatched forward pass (softmax over the 1,000 number tokens, top-3, renormalised).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import (
    bench_tokenizer,
    environment,
    gib,
    load_4bit,
    load_items,
    matmul_tflops,
    scratch_dir,
    write_random_model,
)

from training.engine import speed
from training.engine.predictor import Predictor, number_token_ids
from training.engine.prompts import COMPLETION_RESERVE, build_prompt, encode_prompt

MAX_LENGTH = 182


def encode_left(tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    rows = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device="cuda")
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device="cuda")
    return {"input_ids": ids, "attention_mask": mask}


def timed(fn: Any) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_generate(model: Any, tokenizer: Any, prompts: list[str], batch: int) -> float:
    def go() -> None:
        for i in range(0, len(prompts), batch):
            enc = encode_left(tokenizer, prompts[i : i + batch])
            with torch.inference_mode():
                model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    go_small = prompts[: min(len(prompts), batch)]
    enc = encode_left(tokenizer, go_small)
    with torch.inference_mode():  # warm-up
        model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return len(prompts) / timed(go)


def topk_expectation(logits: torch.Tensor, k: int = 3) -> torch.Tensor:
    """The speed path's price: softmax over the number tokens, top-k, renormalised expected value."""
    values = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    top_p, top_n = torch.softmax(logits.float(), -1).topk(k, dim=-1)
    return (top_p * values[top_n]).sum(-1) / top_p.sum(-1)


def independent_ev(logits: np.ndarray, k: int = 3) -> float:
    """The formula again, in float64 NumPy, written without the code above."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    idx = np.argsort(-p, kind="stable")[:k]
    return float((p[idx] * idx).sum() / p[idx].sum())


def fast_prices(
    model: Any, tokenizer: Any, prompts: list[str], batch: int, number_ids: torch.Tensor, k: int = 3
) -> tuple[list[float], float]:
    """The speed path: sorted by length, last-position head over the number tokens, top-k expectation."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    prices = [0.0] * len(prompts)

    def go() -> None:
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            enc = encode_left(tokenizer, [prompts[i] for i in idx])
            with torch.inference_mode():
                logits = speed.last_position_logits(
                    model, enc["input_ids"], enc["attention_mask"], number_ids
                )
                out = topk_expectation(logits, k)
            for i, p in zip(idx, out.tolist(), strict=True):
                prices[i] = p

    go()  # warm-up (also Triton compilation of the Liger kernels)
    rate = len(prompts) / timed(go)
    return prices, rate


def ev_check(model: Any, tokenizer: Any, prompts: list[str], number_ids: torch.Tensor) -> dict[str, Any]:
    """(1) the batched fast path's prices equal the formula recomputed in float64 from its own logits;
    (2) its number distribution matches each item's own unbatched full-vocabulary forward."""
    enc = encode_left(tokenizer, prompts)
    with torch.inference_mode():
        logits = speed.last_position_logits(model, enc["input_ids"], enc["attention_mask"], number_ids)
        prices = topk_expectation(logits).tolist()
    own = logits.cpu().numpy()
    formula = [independent_ev(row) for row in own]
    max_dp, top1_same = 0.0, 0
    for i, p in enumerate(prompts):
        one = encode_left(tokenizer, [p])
        with torch.inference_mode():
            full = model(**one, use_cache=False).logits[0, -1].float()
        alone = torch.softmax(full[number_ids].double(), -1).cpu().numpy()
        batched = torch.softmax(logits[i].double(), -1).cpu().numpy()
        max_dp = max(max_dp, float(np.abs(alone - batched).max()))
        top1_same += int(alone.argmax() == batched.argmax())
    return {
        "n": len(prompts),
        "max_abs_price_diff_vs_float64_formula": max(
            abs(a - b) for a, b in zip(prices, formula, strict=True)
        ),
        "max_abs_prob_diff_batched_vs_unbatched_full_head": max_dp,
        "top1_agreement_batched_vs_unbatched": top1_same / len(prompts),
        "examples": [[round(a, 3), round(b, 3)] for a, b in zip(prices[:5], formula[:5], strict=True)],
    }


def profile_forward(
    model: Any, tokenizer: Any, prompts: list[str], number_ids: torch.Tensor
) -> dict[str, Any]:
    """Kernel time of one fast batch by kind: how close the pass is to pure matmul time."""
    enc = encode_left(tokenizer, prompts)
    with (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof,
        torch.inference_mode(),
    ):
        speed.last_position_logits(model, enc["input_ids"], enc["attention_mask"], number_ids)
        torch.cuda.synchronize()
    kinds = {
        "gemm": ("gemm", "nvjet", "cutlass", "xmma"),
        "dequant_4bit": ("dequant",),
        "attention": ("fmha", "flash", "attention", "sdpa"),
    }
    by_kind = dict.fromkeys([*kinds, "other"], 0.0)
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = evt.key.lower()
        kind = next((k for k, keys in kinds.items() if any(s in name for s in keys)), "other")
        by_kind[kind] += evt.self_device_time_total / 1e3
    return {"batch": len(prompts), "kernel_ms_by_kind": {k: round(v, 1) for k, v in by_kind.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1024, help="prompts for the batched paths")
    parser.add_argument("--n-single", type=int, default=32, help="prompts for generate one at a time")
    parser.add_argument("--batches", default="64,128,256")
    opts = parser.parse_args()

    result: dict[str, Any] = {"environment": environment()}
    result["bf16_matmul_tflops"] = round(matmul_tflops(), 1)
    scratch = scratch_dir()
    items = load_items(opts.items)
    tokenizer = bench_tokenizer(items, scratch / "tokenizer")
    tokenizer.padding_side = "left"
    model_dir = scratch / "llama8b-random"
    write_random_model(model_dir, tokenizer)
    model = load_4bit(model_dir)
    model.eval()
    texts = [it["text"] for it in items[: opts.n]]
    prompts = [
        build_prompt(t, tokenizer=tokenizer, max_tokens=MAX_LENGTH - COMPLETION_RESERVE) for t in texts
    ]
    lengths = [len(encode_prompt(tokenizer, p)) for p in prompts]
    result["prompts"] = {"n": len(prompts), "mean_tokens": round(sum(lengths) / len(lengths), 1)}
    batches = [int(b) for b in opts.batches.split(",")]
    rates: dict[str, float] = {}

    rates["generate_1"] = run_generate(model, tokenizer, prompts[: opts.n_single], 1)
    print("generate_1", rates["generate_1"], flush=True)
    rates["generate_b64"] = run_generate(model, tokenizer, prompts[:256], 64)
    print("generate_b64", rates["generate_b64"], flush=True)

    ids_list = number_token_ids(tokenizer)
    assert ids_list is not None, "the bench tokenizer must have single-token numbers"
    number_ids = torch.tensor(ids_list, device="cuda")
    predictor = Predictor(
        "unused", model=model, tokenizer=tokenizer, k=3, batch_size=64, max_length=MAX_LENGTH
    )
    predictor.predict(texts[:64])
    t = timed(lambda: predictor.predict(texts[:512]))
    rates["engine_b64"] = 512 / t
    result["engine_prompt_build_s_per_512"] = round(timed(lambda: predictor.prompts(texts[:512])), 2)
    print("engine_b64", rates["engine_b64"], flush=True)

    torch.cuda.reset_peak_memory_stats()
    _, rates["fast_noliger_b128"] = fast_prices(model, tokenizer, prompts, 128, number_ids)
    print("fast_noliger_b128", rates["fast_noliger_b128"], flush=True)
    result["liger_applied"] = speed.apply_liger(model)
    peaks = {}
    for b in batches:
        torch.cuda.reset_peak_memory_stats()
        _, rates[f"fast_b{b}"] = fast_prices(model, tokenizer, prompts, b, number_ids)
        peaks[f"fast_b{b}"] = gib(torch.cuda.max_memory_allocated())
        print(f"fast_b{b}", rates[f"fast_b{b}"], peaks[f"fast_b{b}"], flush=True)

    result["ev_check"] = ev_check(model, tokenizer, prompts[:64], number_ids)
    print("ev_check", result["ev_check"], flush=True)
    result["profile_fast_b128"] = profile_forward(model, tokenizer, prompts[:128], number_ids)
    tokens_per_item = result["prompts"]["mean_tokens"]
    flop_per_item = 2 * 7.50e9 * tokens_per_item  # non-embedding params; the head runs on one position
    result["ceiling_items_per_s_bf16"] = round(result["bf16_matmul_tflops"] * 1e12 / flop_per_item, 1)
    result["items_per_s"] = {k: round(v, 2) for k, v in rates.items()}
    result["peak_allocated_gib"] = peaks
    best = max(v for k, v in rates.items() if k.startswith("fast_b"))
    result["ratio_fast_vs_generate_1"] = round(best / rates["generate_1"], 2)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
