"""Quality on real data: the ``small`` bootstrap base, QLoRA-tuned, against the built-in baselines.

Run on a CUDA host (see docs/benchmarks.md):
    python tests/benchmarks/gpu_quality.py --items ../shared/data/amazon_items.jsonl \
        --out docs/bench-results/quality-h100.json

Split: an item is in the test part when sha256(id) % 100 < 20 (20%, stable across runs and machines).
The base (tokenizer and model) is built from the pool part only, so no test price is ever seen in
pretraining. Then the engine's own path: ``build_sft`` (refuses test ids) → ``train`` (TRL SFT, 4-bit
nf4 QLoRA, LoRA r32/α64 on q/k/v/o) → ``Predictor`` (one forward pass, top-3 expected value) on the test
part, scored with ``evaluate`` next to the training-mean and TF-IDF ridge baselines fitted on the pool.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import environment, id_bucket, load_items, scratch_dir

from training.engine import speed
from training.engine.baselines import mean_baseline, tfidf_ridge
from training.engine.bootstrap import build_base
from training.engine.config import load_recipe
from training.engine.datasets import LabelRow, build_sft
from training.engine.evaluator import evaluate
from training.engine.predictor import Predictor, expected_price
from training.engine.prompts import price_trainable
from training.engine.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base-steps", type=int, default=None, help="pretraining steps (size default)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--limit", type=int, default=0, help="smoke test: use only this many items")
    opts = parser.parse_args()

    result: dict[str, Any] = {"environment": environment()}
    items = [it for it in load_items(opts.items) if price_trainable(float(it["price"]))]
    if opts.limit:
        items = items[: opts.limit]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    test = [it for it in items if id_bucket(it["id"]) < 20]
    pool = [it for it in items if id_bucket(it["id"]) >= 20]
    test_ids = {it["id"] for it in test}
    result["split"] = {"pool": len(pool), "test": len(test), "rule": "sha256(id) % 100 < 20 -> test"}
    print(result["split"], flush=True)
    work = scratch_dir() / "quality"
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    base = build_base(pool, work / "base-small", size="small", steps=opts.base_steps, device=device)
    result["base"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        **json.loads((base / "bootstrap.json").read_text()),
    }
    print("base", result["base"], flush=True)

    recipe = load_recipe(
        "llama-3.1-8b-qlora",
        {
            "model.base": str(base),
            "train.learning_rate": opts.lr,
            "train.epochs": opts.epochs,
            "train.gradient_checkpointing": False,
            "train.logging_steps": 25,
            "train.save_steps": 100000,
            "predict.batch_size": 128,
        },
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = [
        LabelRow(
            product_id=it["id"],
            text=it["text"],
            price=float(it["price"]),
            guess_price=None,
            verdict="correct",
        )
        for it in pool
    ]
    dataset = work / "sft.jsonl"
    manifest = build_sft(
        rows, dataset, test_ids=test_ids, tokenizer=tokenizer, max_prompt_tokens=recipe.train.max_length - 4
    )
    result["dataset_rows"] = manifest.rows
    t0 = time.perf_counter()
    trained = train(recipe, dataset, work / "run", base=str(base), resume=False)
    result["train"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": trained.steps,
        "final_loss": trained.final_loss,
        "tokens": trained.tokens,
        "recipe_overrides": {
            "learning_rate": opts.lr,
            "epochs": opts.epochs,
            "gradient_checkpointing": False,
        },
    }
    print("train", result["train"], flush=True)

    truths = [float(it["price"]) for it in test]
    texts = [it["text"] for it in test]
    scores: dict[str, Any] = {}
    mean = mean_baseline([float(it["price"]) for it in pool])
    scores["training mean"] = evaluate(truths, mean.predict(texts)).to_dict()
    ridge = tfidf_ridge([it["text"] for it in pool], [float(it["price"]) for it in pool])
    scores["TF-IDF ridge"] = evaluate(truths, ridge.predict(texts)).to_dict()
    for label, adapter in (
        ("small base, no adapter (4-bit)", None),
        ("small base + QLoRA (4-bit)", trained.adapter_dir),
    ):
        predictor = Predictor.from_recipe(recipe, adapter, base=str(base))
        t0 = time.perf_counter()
        preds = predictor.predict(texts)
        seconds = time.perf_counter() - t0
        scores[label] = {
            **evaluate(truths, [p.price for p in preds]).to_dict(),
            "items_per_s": round(len(texts) / seconds, 1),
        }
        if adapter is not None:
            result["ev_check_trained"] = check_expected_value(predictor, texts[:64], preds[:64])
    result["scores"] = scores
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{'model':34} {'MAE':>8} {'RMSLE':>6} {'hits':>6}")
    for name, m in scores.items():
        print(f"{name:34} {m['mae']:8.2f} {m['rmsle']:6.3f} {m['hit_rate']:6.3f}")
    print("ev_check_trained", result.get("ev_check_trained"))


def check_expected_value(predictor: Predictor, texts: list[str], preds: list[Any]) -> dict[str, Any]:
    """On the trained model: the Predictor's batched price vs the top-3 formula from each item alone,
    and vs the speed path's last-position head over the number tokens."""
    ids = torch.tensor(predictor.number_ids, device=next(predictor.model.parameters()).device)
    prompts = predictor.prompts(texts)
    alone, fast = [], []
    for prompt in prompts:
        enc = predictor._encode([prompt])
        with torch.inference_mode():
            logits = predictor.model(**enc, use_cache=False).logits[0, -1].double()
            numbers = torch.softmax(logits[ids], -1)
            top_p, top_n = numbers.topk(3)
            alone.append(expected_price(top_n.tolist(), top_p.tolist()))
    enc = predictor._encode(prompts)
    with torch.inference_mode():
        logits = speed.last_position_logits(predictor.model, enc["input_ids"], enc["attention_mask"], ids)
        top_p, top_n = torch.softmax(logits.double(), -1).topk(3, dim=-1)
        fast = ((top_p * top_n.double()).sum(-1) / top_p.sum(-1)).tolist()
    engine = [p.price for p in preds]
    return {
        "n": len(texts),
        "max_abs_diff_engine_batched_vs_alone": max(abs(a - b) for a, b in zip(engine, alone, strict=True)),
        "max_abs_diff_fast_vs_alone": max(abs(a - b) for a, b in zip(fast, alone, strict=True)),
        "examples": [
            [round(a, 2), round(b, 2), round(c, 2)]
            for a, b, c in zip(engine[:5], fast[:5], alone[:5], strict=True)
        ],
    }


if __name__ == "__main__":
    main()
