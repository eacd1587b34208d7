"""Prompt building for guessing, one text at a time vs whole lists (training/engine/prompts.py).

    .venv/bin/python tests/benchmarks/bench_prompts.py --items ../shared/data/amazon_items.jsonl \
        --out var/bench-prompts.json

The last ``--n`` catalogue texts, cut to ``--max-tokens`` with the GPU benchmarks' tokenizer (gpu_common.py:
a BPE trained on the catalogue, numbers 0-999 as single tokens), built and encoded both ways; each is timed
``--repeat`` times and the best run is kept. Both must give the same prompts and token ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import bench_tokenizer, load_items

from training.engine.prompts import build_prompt, build_prompts, encode_prompt, encode_prompts


def best_of(repeat: int, fn: object) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=178, help="the 8B recipes' max_length less 4")
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()

    items = load_items(opts.items)
    with tempfile.TemporaryDirectory() as scratch:
        tok = bench_tokenizer(items, Path(scratch) / "tokenizer")
    texts = [it["text"] for it in items[-opts.n :]]
    budget = opts.max_tokens

    def one_by_one() -> list[list[int]]:
        return [encode_prompt(tok, build_prompt(t, tokenizer=tok, max_tokens=budget)) for t in texts]

    def whole_lists() -> list[list[int]]:
        return encode_prompts(tok, build_prompts(texts, tokenizer=tok, max_tokens=budget))

    single_s, single = best_of(opts.repeat, one_by_one)
    batched_s, batched = best_of(opts.repeat, whole_lists)
    result = {
        "items": opts.items.name,
        "n": len(texts),
        "max_tokens": budget,
        "cpus": os.cpu_count(),
        "one_by_one_s": round(single_s, 4),
        "whole_lists_s": round(batched_s, 4),
        "speedup": round(single_s / batched_s, 2),
        "same_token_ids": single == batched,
        "per_batch_of_128_ms": {
            "one_by_one": round(single_s / len(texts) * 128e3, 1),
            "whole_lists": round(batched_s / len(texts) * 128e3, 1),
        },
    }
    print(f"{'way':12} {'seconds':>8} {'ms/128':>7}")
    print(f"{'one by one':12} {single_s:8.3f} {result['per_batch_of_128_ms']['one_by_one']:7.1f}")
    print(f"{'whole lists':12} {batched_s:8.3f} {result['per_batch_of_128_ms']['whole_lists']:7.1f}")
    print(
        f"speed-up {result['speedup']}x on {result['cpus']} CPUs; same token ids: {result['same_token_ids']}"
    )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1))
    if not result["same_token_ids"]:
        raise SystemExit("the two ways built different prompts")


if __name__ == "__main__":
    main()
