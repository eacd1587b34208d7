"""QLoRA training throughput on a Llama-3.1-8B-shaped model: the reference recipe vs PriceLoop's fast path.

Run on a CUDA host (one process, one run; see docs/benchmarks.md):
    python tests/benchmarks/bench_train_gpu.py --items ../shared/data/amazon_items.jsonl \
        --out docs/bench-results/train-h100.json --steps 40

Every variant trains a fresh 4-bit (nf4, double quant) copy of the same random-weight 8B model with LoRA
r32/α64 on q/k/v/o over the same rows in the same order, so each sees the same tokens:
- ``reference``: TRL SFTTrainer exactly as the reference pricer ran it (batch 16, max length 182, padding to
  the longest item of the batch, no packing, SDPA attention, gradient checkpointing on as in TRL's defaults,
  paged_adamw_32bit, lr 1e-4 cosine, warmup 3%).
- ``fast*``: the same trainer and hyperparameters with PriceLoop's speed path (training/engine/speed.py):
  Liger RMSNorm/RoPE/SwiGLU kernels, checkpointing off or selective, larger batches where named.
Tokens/s counts real (non-padding) tokens of the timed steps (after ``--warmup`` steps); MFU is
4 × 8.03e9 × tokens/s ÷ the bf16 matmul rate measured at the start of the same process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
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
    load_4bit,
    load_items,
    matmul_tflops,
    n_params_8b,
    scratch_dir,
    sft_rows,
    write_random_model,
)

from training.engine import speed
from training.engine.config import SpeedSection

VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"speed": "reference"},
    "fast_nockpt": {"speed": "fast", "liger": False, "checkpointing": "off"},
    "fast_paged": {"speed": "fast", "liger": True, "checkpointing": "off", "optim": "paged_adamw_32bit"},
    "fast": {"speed": "fast", "liger": True, "checkpointing": "off"},
    "fast_selective": {"speed": "fast", "liger": True, "checkpointing": "selective"},
    "fast_b32": {"speed": "fast", "liger": True, "checkpointing": "off", "batch": 32},
    "fast_b64": {"speed": "fast", "liger": True, "checkpointing": "off", "batch": 64},
    "fast_b32_lr2x": {"speed": "fast", "liger": True, "checkpointing": "off", "batch": 32, "lr": 2e-4},
    "fast_compile": {"speed": "fast", "liger": False, "checkpointing": "off", "compile": True},
    "fast_compile_liger": {"speed": "fast", "liger": True, "checkpointing": "off", "compile": True},
    "fast_compile_pad8": {
        "speed": "fast",
        "liger": True,
        "checkpointing": "off",
        "compile": True,
        "pad8": True,
    },
}


def _sync() -> None:
    if torch.cuda.is_available():  # CPU wiring checks (bench_engine_gpu.py --cpu-base) profile too
        torch.cuda.synchronize()


def _step_clock(profile_steps: tuple[int, int] | None) -> Any:
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Wall time at the end of each step (after a device sync) and an optional 2-step profile."""

    clock = StepClock()
    clock.__dict__.update(_ClockState(profile_steps).__dict__)
    for hook in ("on_train_begin", "on_step_begin", "on_step_end"):
        setattr(clock, hook, getattr(_ClockState, hook).__get__(clock))
    return clock


class _ClockState:
    def __init__(self, profile_steps: tuple[int, int] | None) -> None:
        self.ends: list[float] = []
        self.start = 0.0
        self.profile_steps = profile_steps
        self.profiler: Any = None
        self.profile: dict[str, Any] | None = None
        self.done_profiler: Any = None
        self.prof_wall = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        _sync()
        self.start = time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.profile_steps and state.global_step == self.profile_steps[0]:
            _sync()
            self.profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            )
            self.profiler.__enter__()
            self.prof_t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        _sync()
        self.ends.append(time.perf_counter())
        if self.profiler is not None and self.profile_steps and state.global_step == self.profile_steps[1]:
            self.prof_wall = time.perf_counter() - self.prof_t0
            self.profiler.__exit__(None, None, None)
            self.done_profiler = self.profiler
            self.profiler = None


def summarize_profile(prof: Any, wall_s: float, steps: int) -> dict[str, Any]:
    """Where the step time goes: GPU kernel time by kind and the share of wall time the GPU was busy."""
    kinds = {
        "gemm": ("gemm", "cutlass", "sm90_xmma", "nvjet", "ampere", "matmul"),
        "dequant_4bit": ("dequant", "kdequant"),
        "attention": ("flash", "attention", "fmha", "efficient"),
        "optimizer": ("optimizer", "adam", "paged"),
        "liger_triton": ("_rms_norm", "_swiglu", "_rope", "liger"),
    }
    by_kind: dict[str, float] = dict.fromkeys([*kinds, "other"], 0.0)
    kernel_total = 0.0
    top = []
    for evt in prof.key_averages():
        # Kernels only: an aten op's own device time repeats the time of the kernels it launched.
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        dev_us = evt.self_device_time_total
        if not dev_us:
            continue
        name = evt.key.lower()
        kernel_total += dev_us
        kind = next((k for k, keys in kinds.items() if any(s in name for s in keys)), "other")
        by_kind[kind] += dev_us
        top.append((dev_us, evt.key[:90], evt.count))
    top.sort(reverse=True)
    # Host side: the operators and runtime calls with the most CPU time of their own (the profiler slows the
    # host, so these are shares, not timings).
    host = sorted(
        (
            (evt.self_cpu_time_total, evt.key[:90], evt.count)
            for evt in prof.key_averages()
            if evt.device_type == torch.autograd.DeviceType.CPU and evt.self_cpu_time_total
        ),
        reverse=True,
    )
    return {
        "steps": steps,
        "wall_ms_per_step": round(wall_s * 1e3 / steps, 1),
        "gpu_kernel_ms_per_step": round(kernel_total / 1e3 / steps, 1),
        "gpu_busy_share": round(kernel_total / 1e6 / wall_s, 3),
        "kernel_ms_per_step_by_kind": {k: round(v / 1e3 / steps, 1) for k, v in by_kind.items()},
        "top_kernels": [
            {"ms_per_step": round(us / 1e3 / steps, 2), "name": n, "calls": c} for us, n, c in top[:15]
        ],
        "host_ms_per_step": round(sum(us for us, _, _ in host) / 1e3 / steps, 1),
        "top_host_ops": [
            {"ms_per_step": round(us / 1e3 / steps, 2), "name": n, "calls": c} for us, n, c in host[:20]
        ],
    }


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_variant(
    name: str,
    spec: dict[str, Any],
    model_dir: Path,
    tokenizer: Any,
    rows: list[dict[str, str]],
    *,
    warmup: int,
    rate_tflops: float,
    profile: bool,
) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    batch = int(spec.get("batch", 16))
    section = SpeedSection(
        mode=spec["speed"],
        liger=bool(spec.get("liger", spec["speed"] == "fast")),
        checkpointing=spec.get("checkpointing", "recipe"),
    )
    torch.manual_seed(42)
    t_load = time.perf_counter()
    model = load_4bit(model_dir, device=local_rank())
    load_s = time.perf_counter() - t_load
    applied: list[str] = []
    if section.mode == "fast" and section.liger:
        applied = speed.apply_liger(model)
    torch.cuda.reset_peak_memory_stats()

    token_counts: list[int] = []
    lora = LoraConfig(
        r=32,
        lora_alpha=64,
        lora_dropout=0.1,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    kwargs: dict[str, Any] = {
        "output_dir": tempfile.mkdtemp(prefix=f"bench-{name}-"),
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "learning_rate": float(spec.get("lr", 1e-4)),
        "lr_scheduler_type": "cosine",
        "optim": "paged_adamw_32bit",
        "weight_decay": 0.001,
        "max_grad_norm": 0.3,
        "num_train_epochs": 1,
        "max_length": 182,
        "bf16": True,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 42,
        "dataloader_pin_memory": True,
    }
    if world_size() > 1:
        # PEFT models are not PreTrainedModels, so Trainer would default to the slower unused-parameter scan.
        kwargs["ddp_find_unused_parameters"] = False
    fields = SFTConfig.__dataclass_fields__
    # transformers 5.x renamed warmup_ratio into a fractional warmup_steps; both mean 3% of the steps.
    kwargs["warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"] = 0.03
    if "train_sampling_strategy" in fields:
        kwargs["train_sampling_strategy"] = "sequential"  # same rows in the same order for every variant
    kwargs.update(
        speed.sft_config_overrides(section, gradient_checkpointing=True, optimizer="paged_adamw_32bit")
    )
    if spec.get("pad8"):
        # Batch widths 176 or 184 only: two compiled shapes instead of one per longest-item length.
        kwargs["pad_to_multiple_of"] = 8
    if spec.get("optim"):
        kwargs["optim"] = spec["optim"]
    args = SFTConfig(**kwargs)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    collate = trainer.data_collator

    def counting_collator(examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = collate(examples)
        token_counts.append(
            int(out["attention_mask"].sum()) if "attention_mask" in out else out["input_ids"].numel()
        )
        return out

    trainer.data_collator = counting_collator
    compiled = speed.compile_layers(trainer.model) if spec.get("compile") else 0
    steps = len(rows) // (batch * world_size())
    clock = _step_clock((warmup + 2, warmup + 4) if profile else None)
    trainer.add_callback(clock)
    t0 = time.perf_counter()
    trainer.train()
    total_s = time.perf_counter() - t0
    if clock.done_profiler is not None:
        clock.profile = summarize_profile(clock.done_profiler, clock.prof_wall, 2)
    ends = clock.ends
    timed = ends[-1] - ends[warmup - 1]
    timed_tokens = sum(token_counts[warmup:steps]) * world_size()
    timed_samples = batch * (steps - warmup) * world_size()
    if clock.profile is not None:
        # The profiled steps run slower; take them out of the throughput window.
        p0, p1 = warmup + 2, warmup + 4
        timed -= ends[p1 - 1] - ends[p0 - 1]
        timed_tokens -= sum(token_counts[p0:p1]) * world_size()
        timed_samples -= batch * (p1 - p0) * world_size()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tps = timed_tokens / timed
    result = {
        "variant": name,
        "spec": spec,
        "liger_applied": applied,
        "compiled_layers": compiled,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "gradient_checkpointing_kwargs": args.gradient_checkpointing_kwargs,
        "batch": batch,
        "steps": steps,
        "warmup_steps_excluded": warmup,
        "world_size": world_size(),
        "tokens_total": sum(token_counts[:steps]) * world_size(),
        "tokens_per_s": round(tps, 1),
        "samples_per_s": round(timed_samples / timed, 2),
        "s_per_step": round(timed / (steps - warmup - (2 if clock.profile else 0)), 4),
        "mfu": round(4 * n_params_8b() * tps / (rate_tflops * 1e12), 4),
        "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
        "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
        "loss_log": losses,
        "final_loss": losses[-1] if losses else None,
        "train_wall_s": round(total_s, 1),
        "load_s": round(load_s, 1),
        "profile": clock.profile,
    }
    del trainer, model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per variant at batch 16")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the timing")
    parser.add_argument("--variants", default="reference,fast", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--profile", default="", help="comma list of variants to profile (2 steps)")
    opts = parser.parse_args()

    torch.cuda.set_device(local_rank())
    main_rank = local_rank() == 0
    # Under DDP (accelerate launch) each rank takes its own rows, so every GPU count runs the same steps;
    # tokens/s counts all ranks (each rank's real tokens × world size, equal batches within 1%).
    result: dict[str, Any] = {"environment": environment(), "variants": [], "world_size": world_size()}
    print(json.dumps(result["environment"]), flush=True)
    result["bf16_matmul_tflops"] = round(matmul_tflops(), 1)
    print("bf16 8192^3:", result["bf16_matmul_tflops"], "TFLOP/s", flush=True)

    scratch = scratch_dir()
    items = load_items(opts.items)
    from accelerate import PartialState

    state = PartialState()
    t0 = time.perf_counter()
    with state.main_process_first():
        tokenizer = bench_tokenizer(items, scratch / "tokenizer")
    result["tokenizer_s"] = round(time.perf_counter() - t0, 1)
    rows = sft_rows(items, tokenizer, 16 * opts.steps * world_size())
    lengths = [len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1 for r in rows]
    result["rows"] = {
        "n": len(rows),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "max": max(lengths),
    }
    print("rows", result["rows"], flush=True)
    model_dir = scratch / "llama8b-random"
    with state.main_process_first():
        result["model_write"] = write_random_model(model_dir, tokenizer)
    print("model", result["model_write"], flush=True)

    profiled = set(filter(None, opts.profile.split(",")))
    for name in filter(None, opts.variants.split(",")):
        try:
            res = run_variant(
                name,
                VARIANTS[name],
                model_dir,
                tokenizer,
                rows,
                warmup=opts.warmup,
                rate_tflops=result["bf16_matmul_tflops"],
                profile=name in profiled,
            )
        except Exception as exc:
            traceback.print_exc()
            res = {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            gc.collect()
            torch.cuda.empty_cache()
        result["variants"].append(res)
        if not main_rank:
            continue
        brief = {
            k: res.get(k)
            for k in ("variant", "tokens_per_s", "mfu", "peak_allocated_gib", "final_loss", "error")
        }
        print(json.dumps(brief), flush=True)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=1))

    if not main_rank:
        return
    ref = next((v for v in result["variants"] if v["variant"] == "reference" and "tokens_per_s" in v), None)
    print(f"\n{'variant':16} {'tok/s':>8} {'x ref':>6} {'MFU':>6} {'peak GiB':>9} {'loss':>7} {'s/step':>7}")
    for v in result["variants"]:
        if "tokens_per_s" not in v:
            print(f"{v['variant']:16} ERROR {v['error'][:80]}")
            continue
        ratio = v["tokens_per_s"] / ref["tokens_per_s"] if ref else float("nan")
        print(
            f"{v['variant']:16} {v['tokens_per_s']:8.0f} {ratio:6.2f} {v['mfu']:6.3f} "
            f"{v['peak_allocated_gib']:9.2f} {v['final_loss'] or float('nan'):7.3f} {v['s_per_step']:7.3f}"
        )
    if ref:
        for v in result["variants"]:
            if "tokens_per_s" in v:
                v["ratio_vs_reference"] = round(v["tokens_per_s"] / ref["tokens_per_s"], 3)
    opts.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
