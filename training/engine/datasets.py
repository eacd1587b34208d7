"""Training-set builders: resolved labels → SFT / DPO / KTO JSONL with a manifest (DESIGN.md §4).

    manifest = build_sft(rows, Path("runs/7/sft.jsonl"), test_ids=test_product_ids)
    ds = load_dataset_jsonl(manifest_path)  # or the .jsonl itself

Rules (rule set ``RULE_SET``):
- every row's ``product_id`` is checked against ``test_ids`` first; any overlap raises ``TestSplitLeak``
  and nothing is written (the frozen test split never enters a training set);
- prices outside PRICE_MIN..PRICE_MAX are excluded (one token per price), and counted in the manifest;
- the same product twice: the last row wins; then the same prompt twice: the last row wins;
- SFT: accepted and corrected rows, completion = the human price;
- DPO: corrected rows whose human price is outside the green tolerance of the model's guess
  (``evaluator.is_green``): chosen = human price, rejected = the guess;
- KTO: accept → guess label true; reject → guess label false; correct → human price true and the
  guess false (the latter skipped when both round to the same completion);
- output is sorted, so the same rows give byte-identical files and the same sha256;
- each record also carries ``meta`` (product id, batch id, the model version whose guess the label
  answered): lineage for exports and readers; the trainer reads only the training columns.

Files are written to a temporary name and renamed into place; the manifest is written last, so a data
file with a manifest next to it is complete.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from training.engine.evaluator import is_green
from training.engine.files import write_atomically
from training.engine.prompts import build_prompt, completion, price_trainable

if TYPE_CHECKING:
    import datasets as hf_datasets

Verdict = Literal["accept", "correct", "reject"]
DatasetKind = Literal["sft", "dpo", "kto"]
VERDICTS: frozenset[str] = frozenset({"accept", "correct", "reject"})

# Bump the version whenever a rule above changes what a given set of labels turns into.
RULE_SET: dict[str, Any] = {"name": "priceloop-labels", "version": 1}

T = TypeVar("T")


class TestSplitLeak(ValueError):  # noqa: N818 - the name is in the engine contract
    """A row belongs to the frozen test split; the builder refuses and writes nothing."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, product_ids: Iterable[str]) -> None:
        self.product_ids = sorted(set(product_ids))
        shown = ", ".join(self.product_ids[:20])
        more = f" and {len(self.product_ids) - 20} more" if len(self.product_ids) > 20 else ""
        super().__init__(
            f"{len(self.product_ids)} test-split product(s) in the training rows: {shown}{more}. "
            "Test items must never be trained on; remove them from the batch."
        )


class EmptyDatasetError(ValueError):
    """Every row was excluded: training on an empty set would fail later with a worse message."""


@dataclass(frozen=True)
class LabelRow:
    """One resolved label as the Django side hands it over.

    ``price`` is the human price (for ``accept`` it equals the guess; for ``reject`` there is none and
    builders ignore it). ``guess_price`` is the model's guess, ``None`` for blind items.
    """

    product_id: str
    text: str
    price: float
    guess_price: float | None
    verdict: Verdict
    codebook_version: int | None = None
    batch_id: int | None = None
    guess_model_version: int | None = None  # the N of the version vN that made the guess (None: a baseline)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"LabelRow {self.product_id}: verdict must be one of {sorted(VERDICTS)}, got {self.verdict!r}"
            )


@dataclass(frozen=True)
class DatasetManifest:
    """Describes one dataset file; stored as ``<name>.manifest.json`` next to it."""

    kind: DatasetKind
    file: str
    rows: int
    input_rows: int
    sha256: str
    batch_ids: list[int]
    codebook_versions: list[int]
    rule_set: dict[str, Any]
    excluded: dict[str, int]
    created: str
    prompt_style: str = "base"
    labels: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetManifest:
        """Inverse of ``to_dict``; keys this version does not know (a newer writer's) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def manifest_path_for(path: str | Path) -> Path:
    """``sft.jsonl`` → ``sft.manifest.json`` (same folder)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.manifest.json")


def _check_test_split(rows: Sequence[LabelRow], test_ids: Collection[str]) -> None:
    if test_ids is None:  # a caller passing None explicitly must not silently skip the check
        raise TypeError("test_ids is required: pass the ids of the frozen test split")
    # Compare as strings: ids that arrive as ints on one side and strings on the other must still match,
    # or a leak would pass silently.
    test = {str(pid) for pid in test_ids}
    leaked = {str(r.product_id) for r in rows if str(r.product_id) in test}
    if leaked:
        raise TestSplitLeak(leaked)


def _latest_per_product(rows: Sequence[LabelRow], excluded: Counter[str]) -> list[LabelRow]:
    """Keep the last row of each product, in order of last appearance (a later label supersedes)."""
    latest: dict[str, LabelRow] = {}
    for row in rows:
        if row.product_id in latest:
            excluded["duplicate_product"] += 1
            del latest[row.product_id]  # re-insert so dict order follows the last occurrence
        latest[row.product_id] = row
    return list(latest.values())


def _prompt(row: LabelRow, prompt_kwargs: dict[str, Any]) -> str:
    return build_prompt(row.text, **prompt_kwargs)


def _meta(row: LabelRow) -> dict[str, Any]:
    """Where a record came from: read by exports and people, never trained on (the trainer selects the
    training columns), so it changes no prompt or completion."""
    return {
        "product_id": row.product_id,
        "batch_id": row.batch_id,
        "guess_model_version": row.guess_model_version,
    }


def _sft_records(
    rows: Sequence[LabelRow], excluded: Counter[str], pk: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row.verdict == "reject":
            excluded["reject_without_price"] += 1
        elif not price_trainable(row.price):
            excluded["price_out_of_range"] += 1
        else:
            out.append({"prompt": _prompt(row, pk), "completion": completion(row.price), "meta": _meta(row)})
    return out


def _dpo_records(
    rows: Sequence[LabelRow], excluded: Counter[str], pk: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row.verdict != "correct":
            # accept: human price = guess, no preference; reject: no human price to prefer.
            excluded[f"{row.verdict}_not_a_preference"] += 1
        elif row.guess_price is None:
            excluded["no_guess"] += 1
        elif not price_trainable(row.price):
            excluded["price_out_of_range"] += 1
        elif not price_trainable(row.guess_price):
            excluded["guess_out_of_range"] += 1
        elif is_green(row.guess_price, row.price):
            excluded["within_green_tolerance"] += 1
        else:
            out.append(
                {
                    "prompt": _prompt(row, pk),
                    "chosen": completion(row.price),
                    "rejected": completion(row.guess_price),
                    "meta": _meta(row),
                }
            )
    return out


def _kto_records(
    rows: Sequence[LabelRow], excluded: Counter[str], pk: dict[str, Any]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        guess_ok = row.guess_price is not None and price_trainable(row.guess_price)
        if row.verdict == "correct":
            if not price_trainable(row.price):
                excluded["price_out_of_range"] += 1
                continue
            prompt = _prompt(row, pk)
            out.append(
                {"prompt": prompt, "completion": completion(row.price), "label": True, "meta": _meta(row)}
            )
            if guess_ok:
                assert row.guess_price is not None  # narrowed by guess_ok
                # A correction that rounds to the guess's own completion would label one string both ways.
                if completion(row.guess_price) != completion(row.price):
                    out.append(
                        {
                            "prompt": prompt,
                            "completion": completion(row.guess_price),
                            "label": False,
                            "meta": _meta(row),
                        }
                    )
        elif row.guess_price is None:
            excluded["no_guess"] += 1
        elif not guess_ok:
            excluded["guess_out_of_range"] += 1
        else:
            label = row.verdict == "accept"
            out.append(
                {
                    "prompt": _prompt(row, pk),
                    "completion": completion(row.guess_price),
                    "label": label,
                    "meta": _meta(row),
                }
            )
    return out


def _dedupe_and_sort(
    records: list[dict[str, Any]], key_fields: tuple[str, ...], excluded: Counter[str]
) -> list[dict[str, Any]]:
    # Two products with the same text give the same prompt; the later label wins, as for products.
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        key = tuple(rec[f] for f in key_fields)
        if key in by_key:
            excluded["duplicate_prompt"] += 1
        by_key[key] = rec
    # Sorting by the serialized record makes the file independent of input order, so equal inputs give
    # equal hashes. (The trainer shuffles, so this order never reaches the optimizer.)
    return sorted(by_key.values(), key=lambda r: (r["prompt"], json.dumps(r, sort_keys=True)))


def _build(
    kind: DatasetKind,
    rows: Iterable[LabelRow],
    out_path: str | Path,
    *,
    test_ids: Collection[str],
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    style: str = "base",
) -> DatasetManifest:
    rows = list(rows)
    # Refuse before anything else happens, so a leak leaves no file behind.
    _check_test_split(rows, test_ids)
    excluded: Counter[str] = Counter()
    latest = _latest_per_product(rows, excluded)
    pk: dict[str, Any] = {"tokenizer": tokenizer, "max_tokens": max_prompt_tokens, "style": style}
    if kind == "sft":
        records = _dedupe_and_sort(_sft_records(latest, excluded, pk), ("prompt",), excluded)
    elif kind == "dpo":
        records = _dedupe_and_sort(_dpo_records(latest, excluded, pk), ("prompt",), excluded)
    else:
        records = _dedupe_and_sort(_kto_records(latest, excluded, pk), ("prompt", "completion"), excluded)
    if not records:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(excluded.items())) or "no rows given"
        raise EmptyDatasetError(
            f"{kind.upper()} dataset would be empty ({len(rows)} rows in; excluded: {reasons})"
        )

    content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    out = Path(out_path)
    labels = {}
    if kind == "kto":
        labels = {"true": sum(r["label"] for r in records), "false": sum(not r["label"] for r in records)}
    manifest = DatasetManifest(
        kind=kind,
        file=out.name,
        rows=len(records),
        input_rows=len(rows),
        sha256=hashlib.sha256(content).hexdigest(),
        # Lineage covers every row handed in (a batch whose rows were all excluded was still consumed).
        batch_ids=sorted({r.batch_id for r in rows if r.batch_id is not None}),
        codebook_versions=sorted({r.codebook_version for r in rows if r.codebook_version is not None}),
        rule_set=dict(RULE_SET),
        excluded=dict(sorted(excluded.items())),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        prompt_style=style,
        labels=labels,
    )
    write_atomically(out, content)
    write_atomically(
        manifest_path_for(out), (json.dumps(manifest.to_dict(), indent=2) + "\n").encode("utf-8")
    )
    return manifest


def build_sft(
    rows: Iterable[LabelRow],
    out_path: str | Path,
    *,
    test_ids: Collection[str],
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    style: str = "base",
) -> DatasetManifest:
    """Write ``{"prompt", "completion"}`` rows (accepted and corrected labels) and their manifest.

    Raises ``TestSplitLeak`` if any row is in ``test_ids`` and ``EmptyDatasetError`` if nothing remains.
    ``tokenizer``/``max_prompt_tokens``/``style`` are passed to ``prompts.build_prompt``.
    """
    return _build(
        "sft",
        rows,
        out_path,
        test_ids=test_ids,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        style=style,
    )


def build_dpo(
    rows: Iterable[LabelRow],
    out_path: str | Path,
    *,
    test_ids: Collection[str],
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    style: str = "base",
) -> DatasetManifest:
    """Write ``{"prompt", "chosen", "rejected"}`` rows for corrections outside the green tolerance."""
    return _build(
        "dpo",
        rows,
        out_path,
        test_ids=test_ids,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        style=style,
    )


def build_kto(
    rows: Iterable[LabelRow],
    out_path: str | Path,
    *,
    test_ids: Collection[str],
    tokenizer: Any = None,
    max_prompt_tokens: int | None = None,
    style: str = "base",
) -> DatasetManifest:
    """Write ``{"prompt", "completion", "label"}`` rows from accept/reject/correct verdicts."""
    return _build(
        "kto",
        rows,
        out_path,
        test_ids=test_ids,
        tokenizer=tokenizer,
        max_prompt_tokens=max_prompt_tokens,
        style=style,
    )


BUILDERS = {"sft": build_sft, "dpo": build_dpo, "kto": build_kto}


def read_manifest(path: str | Path) -> DatasetManifest:
    """Read the manifest of a dataset (pass the ``.jsonl`` or the ``.manifest.json``)."""
    p = Path(path)
    mpath = p if p.name.endswith(".manifest.json") else manifest_path_for(p)
    return DatasetManifest.from_dict(json.loads(mpath.read_text(encoding="utf-8")))


def verify_dataset(path: str | Path) -> DatasetManifest:
    """Check that a dataset file matches its manifest (row count and sha256); return the manifest."""
    p = Path(path)
    manifest = read_manifest(p)
    data_path = p.with_name(manifest.file) if p.name.endswith(".manifest.json") else p
    content = data_path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest != manifest.sha256:
        raise ValueError(f"{data_path}: sha256 {digest} does not match its manifest ({manifest.sha256})")
    rows = content.count(b"\n")
    if rows != manifest.rows:
        raise ValueError(f"{data_path}: {rows} rows, manifest says {manifest.rows}")
    return manifest


def load_dataset_jsonl(path: str | Path) -> hf_datasets.Dataset:
    """Load a dataset JSONL as a ``datasets.Dataset`` (one split, rows in file order)."""
    import datasets as hf_datasets  # the HF library is slow to import; only loading needs it

    p = Path(path)
    if p.name.endswith(".manifest.json"):
        p = p.with_name(read_manifest(p).file)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file {p} does not exist")
    # Loading from in-memory rows avoids the HF file cache (a stale cache entry could mask a rewrite).
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return hf_datasets.Dataset.from_list(rows)


def mix_replay(new_rows: Sequence[T], old_rows: Sequence[T], share: float, seed: int = 0) -> list[T]:
    """Mix a replay sample of earlier labels into new ones to limit forgetting.

    ``share`` is the fraction of the result drawn from ``old_rows`` (0 ≤ share < 1), capped by how many
    old rows exist. Old rows come first, so with ``LabelRow`` inputs a product that also has a new
    label is superseded by it (the builders keep the last row per product). Same inputs and seed →
    same result.
    """
    if not 0 <= share < 1:
        raise ValueError(f"replay share must be in [0, 1), got {share}")
    if share == 0 or not old_rows:
        return list(new_rows)
    wanted = round(share / (1 - share) * len(new_rows))
    k = min(len(old_rows), wanted)
    picked = sorted(random.Random(seed).sample(range(len(old_rows)), k))
    return [old_rows[i] for i in picked] + list(new_rows)
