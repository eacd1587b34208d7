"""Command line for the engine; every subcommand works alone on files.

Run: ``python -m training.engine {build-base,build-dataset,train,predict,evaluate,baselines} --help``

Typical offline loop (catalogue JSONL rows have ``id, text, price``):

    python -m training.engine build-base --items items.jsonl --holdout 0.2 --size tiny --out var/base
    python -m training.engine build-dataset --kind sft --items items.jsonl --holdout 0.2 --base var/base \
        --out var/sft.jsonl
    python -m training.engine train --recipe tiny --model.base var/base --dataset var/sft.jsonl --out var/run1
    python -m training.engine evaluate --items items.jsonl --holdout 0.2 --base var/base \
        --adapter var/run1/adapter --chart var/scatter.png
    python -m training.engine baselines --items items.jsonl --holdout 0.2 --chart var/podium.png

``--holdout F`` puts a stable share F of the items (by a hash of their id) in the test part: build-base and
build-dataset use the rest, evaluate and baselines score on the test part only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.engine.bootstrap import SIZES
from training.engine.config import recipe_fields
from training.engine.split import in_holdout


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise SystemExit(f"{path}:{number}: not JSON ({exc})") from None
    return rows


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def split_items(
    items: list[dict[str, Any]], share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train part, test part) by id hash; ``share == 0`` puts everything in both (no holdout)."""
    if share <= 0:
        return items, items
    test = [i for i in items if in_holdout(i.get("id"), share)]
    train = [i for i in items if not in_holdout(i.get("id"), share)]
    return train, test


def _items(args: argparse.Namespace, part: str) -> list[dict[str, Any]]:
    if args.items:
        items = read_jsonl(args.items)
    else:
        from training.engine.synthetic import generate_products

        items = list(generate_products(args.synthetic, seed=args.seed))
    missing = [i for i, row in enumerate(items, 1) if "text" not in row or "price" not in row]
    if missing:
        raise SystemExit(f"item {missing[0]} lacks text or price")
    train, test = split_items(items, args.holdout)
    return train if part == "train" else test


def _add_items_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    source = p.add_mutually_exclusive_group(required=required)
    source.add_argument("--items", help="catalogue JSONL (id, text, price)")
    source.add_argument("--synthetic", type=int, metavar="N", help="use N generated products instead")
    p.add_argument("--holdout", type=float, default=0.0, help="share of items (by id hash) kept for testing")
    p.add_argument("--seed", type=int, default=0, help="seed (synthetic catalogue, base pretraining)")


class _Bar:
    """A tqdm bar fed by engine progress callbacks."""

    def __init__(self, desc: str, *, disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=desc, unit="step", disable=disable)

    def update(self, step: int, total: int, **postfix: Any) -> None:
        self.bar.total = total
        self.bar.n = step
        self.bar.set_postfix({k: v for k, v in postfix.items() if v is not None}, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def cmd_build_base(args: argparse.Namespace) -> int:
    from training.engine.bootstrap import build_base

    bar = _Bar("pretrain")
    try:
        out = build_base(
            _items(args, "train"),
            Path(args.out),
            size=args.size,
            seed=args.seed,
            steps=args.steps,
            progress=lambda step, total, loss: bar.update(step, total, loss=f"{loss:.3f}"),
        )
    finally:
        bar.close()
    print(json.dumps({"base": str(out), **json.loads((out / "bootstrap.json").read_text())}, indent=2))
    return 0


def cmd_build_dataset(args: argparse.Namespace) -> int:
    from training.engine import datasets
    from training.engine.model_io import load_tokenizer
    from training.engine.prompts import COMPLETION_RESERVE

    if args.labels:
        rows = [datasets.LabelRow(**r) for r in read_jsonl(args.labels)]
        test_ids = set(Path(args.test_ids).read_text().split()) if args.test_ids else set()
    else:
        train_items = _items(args, "train")
        # Catalogue prices stand in for accepted human labels (bootstrap / benchmark data).
        rows = [
            datasets.LabelRow(
                product_id=str(i["id"]),
                text=i["text"],
                price=float(i["price"]),
                guess_price=float(i["price"]),
                verdict="accept",
            )
            for i in train_items
        ]
        test_ids = {str(i["id"]) for i in _items(args, "test")} if args.holdout > 0 else set()
    tokenizer = load_tokenizer(args.base) if args.base else None
    manifest = datasets.BUILDERS[args.kind](
        rows,
        Path(args.out),
        test_ids=test_ids,
        tokenizer=tokenizer,
        max_prompt_tokens=args.max_length - COMPLETION_RESERVE if tokenizer else None,
        style=args.prompt_style,
    )
    print(json.dumps(manifest.to_dict(), indent=2))
    return 0


def _recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {}
    for key, _default, _help in recipe_fields():
        value = getattr(args, key.replace(".", "__"), None)
        if value is not None:
            overrides[key] = value
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from training.engine.config import load_recipe
    from training.engine.trainer import ProgressEvent, train

    recipe = load_recipe(args.recipe, _recipe_overrides(args))
    # Under torchrun/accelerate launch (RANK set) the main process alone shows and records progress.
    main_process = os.environ.get("RANK", "0") == "0"
    bar = _Bar(f"train {recipe.train.method}", disable=not main_process)
    events = None
    if args.progress_jsonl and main_process:
        events = open(args.progress_jsonl, "a", encoding="utf-8")  # noqa: SIM115 - closed below

    def progress(event: ProgressEvent) -> None:
        bar.update(
            event.step,
            event.total_steps,
            loss=None if event.loss is None else f"{event.loss:.4f}",
            lr=None if event.learning_rate is None else f"{event.learning_rate:.2e}",
            tok_s=None if event.tokens_per_s is None else f"{event.tokens_per_s:.0f}",
        )
        if events is not None:
            events.write(json.dumps(asdict(event)) + "\n")
            events.flush()

    try:
        result = train(
            recipe,
            Path(args.dataset),
            Path(args.out),
            base=args.base,
            parent_adapter=Path(args.parent) if args.parent else None,
            progress=progress,
            resume=not args.no_resume,
        )
    finally:
        bar.close()
        if events is not None:
            events.close()
    if args.result_json and main_process:
        target = Path(args.result_json)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(result.to_dict(), default=str))
        tmp.rename(target)
    summary = {k: v for k, v in vars(result).items() if k not in ("log_history", "run")}
    summary["recipe_sha256"] = result.run.get("recipe_sha256")
    summary["dataset_sha256"] = result.run.get("dataset_sha256")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _predictor(args: argparse.Namespace) -> Any:
    from training.engine.config import load_recipe
    from training.engine.predictor import Predictor

    recipe = load_recipe(args.recipe, {"model.base": args.base} if args.base else {})
    options: dict[str, Any] = {}
    if args.k is not None:
        options["k"] = args.k
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.quantization is not None:
        options["quantization"] = args.quantization
    return Predictor.from_recipe(recipe, args.adapter, **options)


def _add_predictor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="tiny", help="recipe for prompt style, quantization and k")
    p.add_argument("--base", help="base model id or folder (default: the recipe's)")
    p.add_argument("--adapter", help="LoRA adapter or version folder")
    p.add_argument("--k", type=int, help="top-k number tokens averaged")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--quantization", choices=["4bit", "8bit", "none"])


def cmd_predict(args: argparse.Namespace) -> int:
    if args.adapter:
        from training.engine.artifacts import MANIFEST, read_version

        if (Path(args.adapter) / MANIFEST).is_file():
            read_version(args.adapter)  # refuse a tampered or unsafe version before loading it
    predictor = _predictor(args)
    items = [{"text": t} for t in args.text] if args.text else read_jsonl(args.items)
    preds = predictor.predict([i["text"] for i in items], progress=True)
    rows = [{"id": i.get("id"), **p.to_dict()} for i, p in zip(items, preds, strict=True)]
    if args.out:
        write_jsonl(args.out, rows)
    else:
        for row in rows:
            print(json.dumps(row))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.engine.charts import scatter_chart
    from training.engine.evaluator import evaluate

    if args.predictions:
        rows = read_jsonl(args.predictions)
        if not rows or any("truth" not in r or "price" not in r for r in rows):
            raise SystemExit(f"{args.predictions}: every row needs truth and price")
        truths = [float(r["truth"]) for r in rows]
        guesses = [float(r["price"]) for r in rows]
    else:
        if not (args.items or args.synthetic):
            raise SystemExit("evaluate needs --predictions, --items or --synthetic")
        items = _items(args, "test")
        predictor = _predictor(args)
        guesses = [p.price for p in predictor.predict([i["text"] for i in items], progress=True)]
        truths = [float(i["price"]) for i in items]
    metrics = evaluate(truths, guesses)
    if args.chart:
        scatter_chart(truths, guesses, args.chart)
    print(json.dumps(metrics.to_dict(), indent=2))
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from training.engine.baselines import mean_baseline, tfidf_ridge
    from training.engine.charts import podium_chart
    from training.engine.evaluator import evaluate

    train_items, test_items = _items(args, "train"), _items(args, "test")
    texts, prices = [i["text"] for i in train_items], [float(i["price"]) for i in train_items]
    truths = [float(i["price"]) for i in test_items]
    results = {}
    for model in (mean_baseline(prices), tfidf_ridge(texts, prices)):
        results[model.name] = evaluate(truths, model.predict([i["text"] for i in test_items])).to_dict()
    if args.chart:
        entries = [{"name": name, "mae": m["mae"], "kind": "baseline"} for name, m in results.items()]
        podium_chart(entries, args.chart)
    print(json.dumps(results, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.engine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-base", help="train a tokenizer and pretrain a small Llama on a catalogue")
    _add_items_args(p)
    p.add_argument("--out", required=True, help="folder to write the base into")
    p.add_argument(
        "--size", choices=list(SIZES), default="tiny", help="tiny: CPU seconds; small: GPU minutes"
    )
    p.add_argument("--steps", type=int, help="pretraining steps (default: by size)")
    p.set_defaults(func=cmd_build_base)

    p = sub.add_parser("build-dataset", help="write an SFT/DPO/KTO JSONL with its manifest")
    p.add_argument("--kind", choices=["sft", "dpo", "kto"], default="sft")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", help="JSONL of resolved labels (LabelRow fields)")
    source.add_argument("--items", help="catalogue JSONL; prices become accepted labels")
    source.add_argument("--synthetic", type=int, metavar="N")
    p.add_argument("--test-ids", help="with --labels: file of test-split product ids (one per line)")
    p.add_argument("--holdout", type=float, default=0.0, help="with --items: share kept out as test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", help="tokenizer source for cutting prompts to --max-length")
    p.add_argument("--max-length", type=int, default=182)
    p.add_argument("--prompt-style", choices=["base", "chat"], default="base")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_build_dataset)

    p = sub.add_parser("train", help="fine-tune a LoRA adapter (flags override the recipe)")
    p.add_argument("--recipe", default="tiny", help="recipe name or YAML path")
    p.add_argument("--dataset", required=True, help="JSONL from build-dataset")
    p.add_argument("--out", required=True, help="run folder (checkpoints, adapter/)")
    p.add_argument("--base", help="base model id or folder (overrides model.base)")
    p.add_argument("--parent", help="continue this adapter instead of starting a new one")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    p.add_argument("--progress-jsonl", help="append each progress event here as a JSON line")
    p.add_argument("--result-json", help="write the full training result here as JSON when done")
    for key, default, help_text in recipe_fields():
        p.add_argument(
            f"--{key}", dest=key.replace(".", "__"), metavar="V", help=f"{help_text} [{default!r}]"
        )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="guess prices for texts or a JSONL of items")
    _add_predictor_args(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--items", help="JSONL with a text field")
    source.add_argument("--text", action="append", help="a product text (repeatable)")
    p.add_argument("--out", help="write predictions JSONL here instead of stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a model (or a predictions file) with the Tester metrics")
    _add_items_args(p, required=False)
    _add_predictor_args(p)
    p.add_argument("--predictions", help="JSONL with truth and price; skips prediction")
    p.add_argument("--chart", help="write the scatter chart PNG here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("baselines", help="training-mean and TF-IDF ridge baselines on the test part")
    _add_items_args(p)
    p.add_argument("--chart", help="write the podium chart PNG here")
    p.set_defaults(func=cmd_baselines)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from training.engine.model_io import BaseModelError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BaseModelError as exc:
        # A cause the user can fix: one line saying what and how, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
