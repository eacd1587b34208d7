"""Shared pieces of the GPU benchmarks: the 8B-shaped model, the prompts, the bf16 matmul rate.

Not run by itself; imported by bench_train_gpu.py, bench_guess_gpu.py and gpu_quality.py.

The model is Llama-3.1-8B's shape (vocab 128,256, 32 layers, hidden 4,096, GQA 32/8 heads, MLP 14,336) with
random weights: speed does not depend on the values. It is written once as safetensors and loaded through
``from_pretrained`` with a ``BitsAndBytesConfig`` (nf4, double quantization, bf16 compute), which is the
loading path a real ``meta-llama/Llama-3.1-8B`` takes. The tokenizer is PriceLoop's own bootstrap BPE
(training/engine/bootstrap.py, 8,000 merges trained on the catalogue, numbers 0-999 single tokens); its ids
are a subset of the model's 128,256 rows, and prompts are cut to the recipe's max length exactly as the
engine cuts them, which gives ~180 tokens per item like the reference's Llama tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

VOCAB = 128_256
MAX_LENGTH = 182


def load_items(path: Path) -> list[dict[str, Any]]:
    """The catalogue records (a ``.jsonl`` or ``.jsonl.gz`` file)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def id_bucket(item_id: str) -> int:
    """0..99 from the sha256 of the id: the stable hash that splits test from pool."""
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 100


def environment() -> dict[str, Any]:
    import peft
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    for name in ("trl", "bitsandbytes", "liger_kernel", "accelerate", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # a missing optional package is recorded, not fatal
            info[name] = f"unavailable: {exc}"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def matmul_tflops(n: int = 8192, iters: int = 30) -> float:
    """Measured bf16 n×n×n matrix-product rate (median of ``iters`` event-timed products, random data)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / times[len(times) // 2] / 1e12


def bench_tokenizer(items: list[dict[str, Any]], out_dir: Path) -> Any:
    """PriceLoop's bootstrap tokenizer (8k BPE, single-token numbers) trained on the catalogue texts."""
    from transformers import AutoTokenizer

    from training.engine.bootstrap import train_tokenizer

    if (out_dir / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(out_dir)
    tok = train_tokenizer((it["text"] for it in items), vocab_size=8000)
    tok.save_pretrained(out_dir)
    return tok


def sft_rows(items: list[dict[str, Any]], tokenizer: Any, n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/completion rows in the reference format, prompts cut to fit ``MAX_LENGTH``."""
    from training.engine.prompts import COMPLETION_RESERVE, build_prompt, completion, price_trainable

    pool = [it for it in items if price_trainable(float(it["price"]))]
    random.Random(seed).shuffle(pool)
    rows = []
    for it in pool[:n]:
        prompt = build_prompt(it["text"], tokenizer=tokenizer, max_tokens=MAX_LENGTH - COMPLETION_RESERVE)
        rows.append(
            {"prompt": prompt, "completion": completion(float(it["price"])), "price": float(it["price"])}
        )
    return rows


def llama8b_config(tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def write_random_model(out_dir: Path, tokenizer: Any) -> dict[str, float]:
    """Random bf16 weights of the 8B shape, saved as safetensors (built on the GPU: seconds, not minutes)."""
    from transformers import LlamaForCausalLM

    if (out_dir / "config.json").exists():
        return {}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(llama8b_config(tokenizer))
    finally:
        torch.set_default_dtype(old)
    n_params = sum(p.numel() for p in model.parameters())
    t1 = time.perf_counter()
    model.save_pretrained(out_dir, max_shard_size="4GB")
    tokenizer.save_pretrained(out_dir)
    t2 = time.perf_counter()
    del model
    torch.cuda.empty_cache()
    return {"params": n_params, "init_s": t1 - t0, "save_s": t2 - t1}


def load_4bit(path: Path, *, attn: str = "sdpa", device: int = 0) -> Any:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb, dtype=torch.bfloat16, device_map={"": device}, attn_implementation=attn
    )


def n_params_8b() -> int:
    """Parameters of Llama-3.1-8B (embeddings and head included), the N in MFU = 4·N·tokens/s ÷ rate."""
    return 8_030_261_248


def gib(nbytes: float) -> float:
    return round(nbytes / 2**30, 2)


def scratch_dir() -> Path:
    path = Path(os.environ.get("BENCH_SCRATCH", "/tmp/priceloop-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path
