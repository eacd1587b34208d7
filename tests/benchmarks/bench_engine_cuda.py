"""CUDA smoke of the engine core (run explicitly on a GPU machine, never in the default test run).

Run: ``OUT=/tmp/out python tests/benchmarks/bench_engine_cuda.py`` (needs trl, peft, bitsandbytes, datasets)

Checks what CPU tests cannot: 4-bit QLoRA SFT with the paged optimizer in bf16, crash + resume from the
pickle-free checkpoints (bitsandbytes optimizer state), DPO from the SFT adapter, KTO, the 4-bit predictor
batched vs one by one, and the ``small`` base's build time and base-only Tester metrics. Writes
``$OUT/report.json``.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import contextlib

import torch
from safetensors.torch import load_file

from training.engine.bootstrap import build_base
from training.engine.config import load_recipe
from training.engine.datasets import LabelRow, Verdict, build_dpo, build_kto, build_sft
from training.engine.evaluator import evaluate
from training.engine.model_io import load_tokenizer
from training.engine.predictor import Predictor
from training.engine.synthetic import generate_products
from training.engine.trainer import ProgressEvent, train

out = Path(os.environ.get("OUT", "/tmp/out"))
work = Path("/tmp/work")
work.mkdir(exist_ok=True)
report = {"device": torch.cuda.get_device_name(0)}
items = list(generate_products(1200, 0))
pool, test = items[:1000], items[1000:]
t = time.time()
base = build_base(pool, work / "tiny", size="tiny")
report["tiny_build_s"] = time.time() - t
tok = load_tokenizer(base)
rows = []
for n, it in enumerate(pool):
    v: Verdict = ("accept", "correct", "reject")[n % 3]
    rows.append(
        LabelRow(
            product_id=str(it["id"]),
            text=it["text"],
            price=it["price"],
            guess_price=it["price"] if v == "accept" else min(999.0, it["price"] * 2.5 + 50),
            verdict=v,
        )
    )
opts = {"test_ids": {str(i["id"]) for i in test}, "tokenizer": tok, "max_prompt_tokens": 92}
for kind, fn in (("sft", build_sft), ("dpo", build_dpo), ("kto", build_kto)):
    fn(rows, work / f"{kind}.jsonl", **opts)
q = {
    "model.base": str(base),
    "quant.mode": "4bit",
    "train.optimizer": "paged_adamw_32bit",
    "train.precision": "bf16",
    "train.max_steps": 8,
    "train.save_steps": 4,
    "train.batch_size": 16,
}
recipe = load_recipe("tiny", q)
ev: list[ProgressEvent] = []
t = time.time()
straight = train(recipe, work / "sft.jsonl", work / "straight", progress=ev.append)
report["sft"] = {
    "s": time.time() - t,
    "steps": straight.steps,
    "loss": straight.final_loss,
    "tok_s": [round(e.tokens_per_s or 0) for e in ev],
}


def crash(e):
    if e.step == 6:
        raise RuntimeError("boom")


with contextlib.suppress(RuntimeError):
    train(recipe, work / "sft.jsonl", work / "crashed", progress=crash)
resumed = train(recipe, work / "sft.jsonl", work / "crashed")
a = load_file(straight.adapter_dir / "adapter_model.safetensors")
b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
report["resume"] = {
    "from": resumed.resumed_from_step,
    "steps": resumed.steps,
    "max_abs_diff": max(float((a[k].float() - b[k].float()).abs().max()) for k in a),
}
ckpt = sorted((work / "crashed" / "checkpoints").glob("checkpoint-*"))[-1]
report["checkpoint_files"] = sorted(p.name for p in ckpt.iterdir())
for m, bs in (("dpo", 8), ("kto", 8)):
    r = load_recipe("tiny", {**q, "train.method": m, "train.max_steps": 3, "train.batch_size": bs})
    res = train(r, work / f"{m}.jsonl", work / m, parent_adapter=straight.adapter_dir if m == "dpo" else None)
    report[m] = {"steps": res.steps, "loss": res.final_loss}
p = Predictor(base, straight.adapter_dir, quantization="4bit", max_length=96, batch_size=16)
texts = [i["text"][: 60 + 13 * n] for n, i in enumerate(test[:32])]
b1 = p.predict(texts)
p.batch_size = 1
s1 = p.predict(texts)
report["predict_4bit"] = {
    "max_price_diff": max(abs(x.price - y.price) for x, y in zip(b1, s1, strict=False)),
    "topk_same": sum(x.topk[0][0] == y.topk[0][0] for x, y in zip(b1, s1, strict=False)),
}
t = time.time()
small = build_base(pool, work / "small", size="small", steps=300)
report["small_300_steps_s"] = time.time() - t
report["small"] = json.loads((small / "bootstrap.json").read_text())
preds = Predictor(small, max_length=182, batch_size=64).predict([i["text"] for i in test])
report["small_base_only"] = evaluate([i["price"] for i in test], [x.price for x in preds]).to_dict()
report["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
(out / "report.json").write_text(json.dumps(report, indent=1, default=str))
print(json.dumps(report, indent=1, default=str))
