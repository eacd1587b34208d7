"""Offline base model: a catalogue-trained tokenizer and a small Llama, built without any model hub.

Run: ``python -m training.engine build-base --items catalogue.jsonl --out data/base-tiny --size tiny``
Library: ``build_base(items, out_dir, size="tiny")`` (items are dicts with a ``text``; no price is read).

The tokenizer follows the Llama-3 design that the price predictor depends on: digits are split into
groups of at most three before BPE and every group "0".."999" (and zero-padded "00".."999") is one token,
so the completion ``129.00`` starts with the single token ``129`` right after the prompt's ``$``. The model
is a ``LlamaForCausalLM`` saved with ``save_pretrained`` (safetensors), so it loads through the same code
path as ``meta-llama/Llama-3.1-8B``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.engine.prompts import COMPLETION_RESERVE, build_prompt, completion, price_trainable

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
HEADER_START, HEADER_END, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, HEADER_START, HEADER_END, EOT]

# Letters may carry one leading space or symbol; digits come in groups of 1-3 and never carry a prefix,
# so "$129" and " 129" both yield the group "129"; other symbols keep an optional leading space.
PRETOKENIZE_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama-3 style headers; the BOS comes from the tokenizer's post-processor, not from the template, so
# that a chat prompt tokenizes with exactly one BOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{ message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BaseSize:
    bpe_vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int
    steps: int
    batch_size: int
    seq_len: int
    learning_rate: float
    vocab_size: int = 0  # 0: exactly the tokenizer's; more pads the embedding to a real model's shape
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    dtype: str = "float32"


SIZES: dict[str, BaseSize] = {
    # ~1M parameters: builds and pretrains in about a minute on two CPU cores (tests, embedded demo).
    # Chosen by measurement (tests/benchmarks/offline_recipe_search.py, docs/learning-loop.md): the
    # earlier 64-wide, 2-layer, 60-step base could not learn prices from a few hundred labels at all
    # (one guess for every product); 128 wide x 4 layers with 300 steps of text can.
    "tiny": BaseSize(512, 128, 4, 4, 2, 384, 256, 300, 8, 80, 3e-3),
    # ~30M parameters: minutes on one GPU; big enough to learn prices from a few thousand items.
    "small": BaseSize(8000, 512, 8, 8, 4, 1408, 512, 3000, 64, 192, 6e-4),
    # Llama-3.1-8B's exact shapes with random weights and no pretraining: for speed and memory
    # measurements of the reference recipe without downloading the real weights (GPU only, ~16 GB).
    "llama-3.1-8b-shape": BaseSize(
        8000,
        4096,
        32,
        32,
        8,
        14336,
        8192,
        0,
        1,
        182,
        0.0,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_embeddings=False,
        dtype="bfloat16",
    ),
}


def _digit_groups() -> list[str]:
    groups = [str(d) for d in range(10)]
    groups += [f"{n:02d}" for n in range(100)]
    groups += [f"{n:03d}" for n in range(1000)]
    groups += [str(n) for n in range(10, 1000)]
    return list(dict.fromkeys(groups))


def _add_number_tokens(tokenizer_json: dict[str, Any]) -> dict[str, Any]:
    """Make every digit group of length 1-3 a single BPE token.

    BPE applies merges by priority, so a three-digit group may first merge its left or its right pair;
    both continuations are added, which guarantees the whole group ends as one token whatever the order.
    """
    model = tokenizer_json["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    known = set(merges)
    new_merges: list[tuple[str, str]] = []

    def add_merge(left: str, right: str) -> None:
        if (left, right) not in known:
            known.add((left, right))
            new_merges.append((left, right))

    for group in _digit_groups():
        if len(group) == 2:
            add_merge(group[0], group[1])
        elif len(group) == 3:
            add_merge(group[:2], group[2])
            add_merge(group[0], group[1:])
        if group not in vocab:
            vocab[group] = len(vocab)
    model["merges"] = [list(m) for m in merges + new_merges]
    return tokenizer_json


def train_tokenizer(texts: Iterable[str], *, vocab_size: int) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` with single-token numbers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok = Tokenizer.from_str(json.dumps(_add_number_tokens(json.loads(tok.to_str()))))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, chat_template=CHAT_TEMPLATE
    )
    fast.add_special_tokens({"additional_special_tokens": [HEADER_START, HEADER_END, EOT]})
    fast.model_max_length = 4096
    return fast


# By default the base is pretrained on catalogue *text* only (titles and descriptions, language-model loss on
# every token), like a real pretrained LM: it knows products and how numbers appear in text ("4 pack",
# "12 inch"), but not our prices, so every bit of price knowledge a version has comes from labels (a seed
# set for v1, then annotators). ``prices=True`` restores the old objective — whole catalogue prompts with
# their answers and the price token's loss added once more — for measuring how much a price-trained base
# leaves for feedback to add (docs/learning-loop.md).
PRICE_LOSS_WEIGHT = 1.0
# Position marker of "no price token" in a text-only example.
NO_PRICE = -1


def _training_examples(
    items: list[dict[str, Any]], tokenizer: Any, seq_len: int, *, prices: bool
) -> list[tuple[list[int], int]]:
    """(token ids, index of the price token or NO_PRICE) per usable item.

    Text-only: the item's text and EOS, cut to ``seq_len``. With prices: prompt + completion + EOS.
    """
    examples = []
    for item in items:
        if not prices:
            text = str(item.get("text") or "").strip()
            if not text:
                continue
            ids = tokenizer(text + tokenizer.eos_token)["input_ids"][:seq_len]
            examples.append((ids, NO_PRICE))
            continue
        price = float(item["price"])
        if not price_trainable(price):
            continue
        prompt = build_prompt(item["text"], tokenizer=tokenizer, max_tokens=seq_len - COMPLETION_RESERVE)
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(completion(price) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + answer_ids, len(prompt_ids)))
    return examples


def _init_number_embeddings(model: Any, tokenizer: Any) -> None:
    """Give the tokens "0".."999" embeddings that vary smoothly with the number's magnitude.

    A real pretrained LM has seen numbers in every context and knows that 129 lies between 120 and 140;
    a base pretrained for minutes on one catalogue has not (most numbers never occur in its texts, so
    their embeddings stay random and unrelated). Without that, a price learnt for one product says nothing
    about its neighbours and a few hundred labels cannot teach 1,000 unrelated classes. So each number
    token starts as sines and cosines of log(1 + n) at geometric frequencies (plus the usual small random
    part), scaled to the initialiser's spread. This is knowledge of *numbers*, not of prices: nothing
    here reads a price, and pretraining on text then adjusts these rows like any others.
    """
    import torch

    embeddings = model.get_input_embeddings().weight
    width = embeddings.shape[1]
    ids = [tokenizer.convert_tokens_to_ids(str(n)) for n in range(1000)]
    x = torch.log1p(torch.arange(1000, dtype=torch.float32)).unsqueeze(1)  # 0 .. 6.9
    pairs = width // 2
    # From one slow wave over the whole range (0..999) to ~1/8 of an octave resolution.
    freqs = torch.logspace(math.log10(0.4), math.log10(12.0), pairs).unsqueeze(0)
    features = torch.cat([torch.sin(x * freqs), torch.cos(x * freqs)], dim=1)[:, :width]
    # Unit-norm rows: the embeddings are tied to the output layer, and after the final RMSNorm a hidden
    # state has norm ~sqrt(width), so number logits can span ~±sqrt(width) — a peaked price distribution
    # is reachable by steering the hidden state alone (what a LoRA adapter can do), not only by rescaling
    # norms (what it cannot).
    std = float(model.config.initializer_range)
    with torch.no_grad():
        rows = features / math.sqrt(pairs) + torch.randn(1000, width) * std * 0.25
        embeddings[torch.tensor(ids, device=embeddings.device)] = rows.to(embeddings)


def _batch(examples: list[tuple[list[int], int]], pad_id: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in examples], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in examples], device=device)
    price_pos = torch.tensor([pos for _, pos in examples], device=device)
    return input_ids, mask, price_pos


def _pretrain(
    model: Any,
    tokenizer: Any,
    examples: list[tuple[list[int], int]],
    spec: BaseSize,
    *,
    seed: int,
    steps: int,
    device: str,
    progress: Callable[[int, int, float], None] | None,
) -> list[tuple[float, float]]:
    """Returns (language-model loss, price-token loss or NaN for a text-only batch) per step."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    if steps <= 0:  # a shape-only base (random weights)
        model.eval()
        return []
    rng = random.Random(seed)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matmuls: a from-scratch base
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    losses = []
    order: list[int] = []
    for step in range(steps):
        if len(order) < spec.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        chosen = [examples[order.pop()] for _ in range(min(spec.batch_size, len(examples)))]
        input_ids, mask, price_pos = _batch(chosen, tokenizer.pad_token_id, device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        # Position t predicts token t+1.
        token_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
        lm_loss = (token_loss * mask[:, 1:]).sum() / mask[:, 1:].sum()
        if bool((price_pos == NO_PRICE).all()):
            price_loss = torch.full((), float("nan"))
            lm_loss.backward()
        else:
            price_loss = token_loss.gather(1, (price_pos - 1).unsqueeze(1)).mean()
            (lm_loss + PRICE_LOSS_WEIGHT * price_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append((float(lm_loss.item()), float(price_loss.item())))
        if progress is not None:
            progress(step + 1, steps, losses[-1][0])
    model.eval()
    return losses


def _tail_mean(values: list[float], n: int = 10) -> float | None:
    return sum(values[-n:]) / len(values[-n:]) if values else None


def build_base(
    items: Iterable[dict[str, Any]],
    out_dir: Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    steps: int | None = None,
    device: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    prices: bool = False,
) -> Path:
    """Train the tokenizer, build and pretrain a small Llama on ``items``; save it to ``out_dir``.

    ``items`` need a ``text``; by default the model learns from the texts alone (no price is read).
    ``prices=True`` pretrains on whole prompts with their prices (items then need ``price`` too).

    The folder is written under a temporary name and renamed into place, so a crash never leaves a
    half-written base that later loads. Returns ``out_dir``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed

    if size not in SIZES:
        raise ValueError(f"unknown base size {size!r}; use one of {', '.join(SIZES)}")
    spec = SIZES[size]
    rows = [dict(item) for item in items]
    if not rows:
        raise ValueError("build_base needs at least one catalogue item with a text")
    set_seed(seed)
    tokenizer = train_tokenizer((r["text"] for r in rows), vocab_size=spec.bpe_vocab + len(SPECIAL_TOKENS))
    examples = _training_examples(rows, tokenizer, spec.seq_len, prices=prices)
    if not examples:
        need = "a price between 0.5 and 999.49" if prices else "a non-empty text"
        raise ValueError(f"no item has {need} among {len(rows)} items")
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), spec.vocab_size),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=spec.tie_embeddings,
        rope_theta=spec.rope_theta,
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.device(device):  # initialise in place: an 8B-shaped model would take minutes on CPU
        model = LlamaForCausalLM(config)
    steps = spec.steps if steps is None else steps
    if steps > 0:
        _init_number_embeddings(model, tokenizer)
    losses = _pretrain(
        model, tokenizer, examples, spec, seed=seed, steps=steps, device=device, progress=progress
    )
    model.to("cpu", dtype=getattr(torch, spec.dtype))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
        summary = {
            "size": size,
            "seed": seed,
            # What the base learned from: "text" (titles and descriptions only) or "text+prices".
            "objective": "text+prices" if prices else "text",
            "items": len(rows),
            "training_texts": len(examples),
            "steps": len(losses),
            "first_loss": losses[0][0] if losses else None,
            "final_loss": _tail_mean([lm for lm, _ in losses]),
            "first_price_loss": losses[0][1] if losses and prices else None,
            "final_price_loss": _tail_mean([price for _, price in losses]) if prices else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (tmp / "bootstrap.json").write_text(json.dumps(summary, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
