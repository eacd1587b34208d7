"""Prompt and completion formats shared by training, prediction and evaluation (DESIGN.md §4).

Used as a library: ``from training.engine.prompts import build_prompt, completion``.

The base format is the reference pricer's, byte for byte. The chat variant wraps the same question in the
tokenizer's own chat template (with a fixed system prompt) and still ends on ``PRICE_PREFIX``, so the price
is always the first token the model writes and the predictor reads it at the same position in both styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

QUESTION = "How much does this cost to the nearest dollar?"
PRICE_PREFIX = "Price is $"
SYSTEM_PROMPT = "You estimate the retail price of products. Reply with the price only."
PRICE_MIN = 0.5
PRICE_MAX = 999.49

PromptStyle = Literal["base", "chat"]
PROMPT_STYLES: tuple[str, ...] = ("base", "chat")

# Room kept after the prompt for the completion ("129" "." "00" + end of sequence) when a prompt is
# truncated to a recipe's max length.
COMPLETION_RESERVE = 4


def price_trainable(price: float) -> bool:
    """True when the rounded price is one of the single number tokens 0..999 (see DESIGN.md §4)."""
    return PRICE_MIN <= price <= PRICE_MAX


def completion(price: float) -> str:
    """The training target for a price: ``"129.00"``."""
    return f"{round(price)}.00"


def _format(text: str, *, tokenizer: Any, style: str) -> str:
    if style == "base":
        return f"{QUESTION}\n\n{text}\n\n{PRICE_PREFIX}"
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "style='chat' needs a tokenizer with a chat template; use style='base' otherwise"
            )
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{QUESTION}\n\n{text}"},
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # Llama-3-Instruct templates write the BOS text themselves; the tokenizer adds BOS too, so a
        # prompt carrying it would train (TRL tokenizes with special tokens) on a doubled BOS.
        bos = getattr(tokenizer, "bos_token", None)
        if bos and rendered.startswith(bos):
            rendered = rendered[len(bos) :]
        return f"{rendered}{PRICE_PREFIX}"
    raise ValueError(f"unknown prompt style {style!r}; expected one of {', '.join(PROMPT_STYLES)}")


def count_tokens(tokenizer: Any, prompt: str) -> int:
    """Tokens the model sees for ``prompt``, counting a BOS the tokenizer adds exactly once."""
    return len(encode_prompt(tokenizer, prompt))


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt. Chat templates that already write the BOS text must not get a second BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def build_prompt(
    text: str,
    *,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    style: PromptStyle | str = "base",
) -> str:
    """The prompt for one product.

    With ``tokenizer`` and ``max_tokens`` the product text is cut (on token boundaries, from the end) so
    that the whole prompt is at most ``max_tokens`` tokens; the question and ``PRICE_PREFIX`` are never cut.
    """
    text = text.strip()
    prompt = _format(text, tokenizer=tokenizer, style=style)
    if max_tokens is None:
        return prompt
    if tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer to count tokens")
    if count_tokens(tokenizer, prompt) <= max_tokens:
        return prompt
    overhead = count_tokens(tokenizer, _format("", tokenizer=tokenizer, style=style))
    if overhead >= max_tokens:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the product text ({overhead} tokens)")
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return _longest_cut(
        text_ids, max_tokens - overhead, tokenizer=tokenizer, max_tokens=max_tokens, style=style
    )


def _longest_cut(text_ids: list[int], keep: int, *, tokenizer: Any, max_tokens: int, style: str) -> str:
    """The prompt of the text's first ``keep`` tokens, or of fewer: decoding a cut and re-encoding it can
    merge differently at the edges, so it shrinks one token at a time until the prompt fits."""
    while keep > 0:
        cut = tokenizer.decode(text_ids[:keep], skip_special_tokens=True).strip()
        prompt = _format(cut, tokenizer=tokenizer, style=style)
        if count_tokens(tokenizer, prompt) <= max_tokens:
            return prompt
        keep -= 1
    return _format("", tokenizer=tokenizer, style=style)


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """``encode_prompt`` for many prompts, in one tokenizer call where no prompt carries the BOS text."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and any(p.startswith(bos) for p in prompts):
        return [encode_prompt(tokenizer, p) for p in prompts]
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]


def build_prompts(
    texts: Sequence[str],
    *,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    style: PromptStyle | str = "base",
) -> list[str]:
    """``build_prompt`` for many texts: the same strings, but the tokenizer is called on whole lists (a fast
    tokenizer encodes and decodes a list in parallel, outside the GIL) rather than several times per text.

    Measured on 1,024 catalogue texts cut to 178 tokens: see docs/benchmarks.md §6. A text whose first cut
    still does not fit (a re-encoding that merges differently) goes on shrinking one token at a time, as it
    would alone.
    """
    stripped = [t.strip() for t in texts]
    prompts = [_format(t, tokenizer=tokenizer, style=style) for t in stripped]
    if max_tokens is None or not prompts:
        return prompts
    if tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer to count tokens")
    over = [i for i, ids in enumerate(encode_prompts(tokenizer, prompts)) if len(ids) > max_tokens]
    if not over:
        return prompts
    overhead = count_tokens(tokenizer, _format("", tokenizer=tokenizer, style=style))
    if overhead >= max_tokens:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the product text ({overhead} tokens)")
    keep = max_tokens - overhead
    text_ids = tokenizer([stripped[i] for i in over], add_special_tokens=False)["input_ids"]
    cuts = tokenizer.batch_decode([ids[:keep] for ids in text_ids], skip_special_tokens=True)
    candidates = [_format(cut.strip(), tokenizer=tokenizer, style=style) for cut in cuts]
    for i, ids, candidate, candidate_ids in zip(
        over, text_ids, candidates, encode_prompts(tokenizer, candidates), strict=True
    ):
        fits = len(candidate_ids) <= max_tokens
        prompts[i] = (
            candidate
            if fits
            else _longest_cut(ids, keep - 1, tokenizer=tokenizer, max_tokens=max_tokens, style=style)
        )
    return prompts
