"""Single-pass price prediction: one forward pass per batch, read the price off the number tokens.

Library: ``Predictor(base, adapter_dir, k=3).predict(["product text", ...])``
CLI: ``python -m training.engine predict --base data/base-tiny --adapter runs/r1/adapter --items test.jsonl``

At the position after ``Price is $`` the model's next token is the (whole-dollar) price, because numbers
0..999 are single tokens. Instead of sampling it, we take the softmax over the 1000 number tokens, keep the
top-k, renormalise and return the expected value (the reference's "improved" predictor), plus the top-k
distribution and the entropy of the number distribution, which the annotation queue uses to route
uncertain items to people. Tokenizers without single-token numbers fall back to short greedy generation.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from training.engine.config import DENSE_WEIGHTS
from training.engine.model_io import default_device, load_for_inference
from training.engine.prompts import PRICE_PREFIX, build_prompts, encode_prompts
from training.engine.speed import attention_mask_for, dense_weights_fit, fold_to_dense

# How a price is read off the number distribution: "topk" is the reference's expected value over the
# top-k; "median" is the median of the whole distribution, the estimate that minimises the expected
# absolute error (our headline metric). They agree for a confident model; for a model that is still
# unsure (a young adapter on a small base) the top-k mean sits on the few most common prices, while the
# median moves with the whole distribution, so guesses track the product.
ESTIMATES = ("topk", "median")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Entropy of a uniform distribution over the 1000 prices: what an unparseable answer reports.
_MAX_ENTROPY = math.log(1000)


@dataclass
class Prediction:
    price: float
    topk: list[tuple[int, float]] = field(default_factory=list)
    entropy: float = 0.0
    # Probability the model puts on any number token at the answer position (1.0 = it surely answers a
    # number); low mass means the prompt or adapter is off, not that the price is uncertain.
    number_mass: float = 1.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "price": self.price,
            "topk": [[p, q] for p, q in self.topk],
            "entropy": self.entropy,
            "number_mass": self.number_mass,
            "seconds": self.seconds,
        }


def number_token_ids(tokenizer: Any, prefix: str = PRICE_PREFIX) -> list[int] | None:
    """Token id of each number 0..999 as it appears right after ``prefix``; None if any is not one token.

    Checked in context, not in isolation: SentencePiece-style tokenizers write "▁129" after a space, and
    some tokenizers merge "$" with the next digit, so only the in-context encoding is trustworthy.
    """
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for n in range(1000):
        full = tokenizer(f"{prefix}{n}", add_special_tokens=False)["input_ids"]
        if len(full) != len(head) + 1 or full[: len(head)] != head:
            return None
        ids.append(full[-1])
    if len(set(ids)) != 1000:
        return None
    return ids


def expected_price(values: Sequence[int], probs: Sequence[float]) -> float:
    total = sum(probs)
    return sum(v * p for v, p in zip(values, probs, strict=True)) / total


def _device_info(device: str) -> tuple[str, tuple[int, int] | None, str]:
    """(type, compute capability, name) of a device string such as 'cuda', 'cuda:1' or 'cpu'."""
    import torch

    kind = device.split(":")[0]
    if kind != "cuda" or not torch.cuda.is_available():
        return kind, None, ""
    index = torch.device(device).index or 0
    return kind, torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index)


class Predictor:
    """Predict prices for product texts with a base model, optionally with a LoRA adapter."""

    def __init__(
        self,
        base: str | Path,
        adapter_dir: str | Path | None = None,
        *,
        quantization: str = "none",
        k: int = 3,
        batch_size: int = 16,
        prompt_style: str = "base",
        max_length: int | None = 182,
        max_new_tokens: int = 6,
        revision: str | None = None,
        dtype: str = "bfloat16",
        device: str | None = None,
        model: Any = None,
        tokenizer: Any = None,
        fused_kernels: bool = False,
        compile: bool = False,
        matmul: str = "bf16",
        dense_weights: str = "off",
        estimate: str = "topk",
        pad_to_multiple_of: int = 1,
        sort_by_length: bool = False,
    ) -> None:
        if not 1 <= k <= 1000:
            raise ValueError(f"k={k}: must be between 1 and 1000")
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate={estimate!r}: use one of {', '.join(ESTIMATES)}")
        if dense_weights not in DENSE_WEIGHTS:
            raise ValueError(f"dense_weights={dense_weights!r}: use one of {', '.join(DENSE_WEIGHTS)}")
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of}: must be >= 1")
        if matmul != "bf16":
            from training.engine.config import MATMUL_MODES
            from training.engine.speed import fp8_refusal

            if matmul not in MATMUL_MODES:
                raise ValueError(f"matmul={matmul!r}: use one of {', '.join(MATMUL_MODES)}")
            # Refused before the (minutes-long) model load, naming the setting and the fix.
            where = device or (
                str(next(model.parameters()).device) if model is not None else default_device()
            )
            refusal = fp8_refusal(*_device_info(where))
            if refusal:
                from training.engine.config import RecipeError

                raise RecipeError(refusal)
        if model is None or tokenizer is None:
            model, tokenizer = load_for_inference(
                base, adapter_dir, quant=quantization, revision=revision, dtype=dtype, device=device
            )
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if fused_kernels:
            # speed.mode=fast: Liger RMSNorm/SwiGLU (CUDA only; a no-op elsewhere). docs/benchmarks.md
            from training.engine.speed import apply_liger

            apply_liger(model)
        self.dense = False  # decoder linears folded to dense weights (speed.fold_to_dense)
        if matmul == "fp8":
            from training.engine.speed import convert_to_fp8

            convert_to_fp8(model)  # dense FP8 weights, the adapter folded in
        elif dense_weights == "on" or (dense_weights == "auto" and dense_weights_fit(model)):
            self.dense = fold_to_dense(model) > 0
        if compile:
            from training.engine.speed import compile_layers

            # Explicitly asked for: compiled wherever the model is (from_recipe asks on CUDA only).
            compile_layers(model, on_cpu=True)
        self.model = model
        self.tokenizer = tokenizer
        self.k = k
        self.batch_size = batch_size
        self.prompt_style = prompt_style
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.matmul = matmul
        self.estimate = estimate
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sort_by_length = sort_by_length
        self.number_ids = number_token_ids(tokenizer)
        import torch

        # The number tokens' ids on the model's device, made once (not a host-to-device copy per batch).
        self._number_index = (
            None
            if self.number_ids is None
            else torch.tensor(self.number_ids, device=next(model.parameters()).device)
        )

    @classmethod
    def from_recipe(cls, recipe: Any, adapter_dir: str | Path | None = None, **kwargs: Any) -> Predictor:
        """A predictor with the recipe's base, quantization, prompt style and predict settings."""
        base = kwargs.pop("base", recipe.model.base)
        fast = recipe.speed.mode == "fast"
        # Compiled layers only on CUDA: on CPU Inductor's compile time outweighs a tiny model's pass.
        compiled = (
            fast and recipe.speed.compile and (kwargs.get("device") or default_device()).startswith("cuda")
        )
        options: dict[str, Any] = {
            "quantization": recipe.quant.mode,
            "k": recipe.predict.k,
            "batch_size": recipe.predict.batch_size,
            "prompt_style": recipe.model.prompt_style,
            "max_length": recipe.train.max_length,
            "max_new_tokens": recipe.predict.max_new_tokens,
            "revision": recipe.model.revision,
            "dtype": recipe.model.dtype,
            # Liger only where nothing is compiled: Inductor fuses the same RMSNorm/SwiGLU chains itself,
            # and Liger's Triton calls are opaque to it (H200: 220 items/s compiled without, 216 with).
            "fused_kernels": fast and recipe.speed.liger and not compiled,
            "compile": compiled,
            "matmul": recipe.predict.matmul,
            # Fast only: the reference guesses on the weights as loaded.
            "dense_weights": recipe.predict.dense_weights if fast else "off",
            "estimate": recipe.predict.estimate,
            # Few distinct widths for the compiled layers (speed.padded_width); plain runs need none.
            "pad_to_multiple_of": 8 if compiled else 1,
            # Batches of similar lengths carry less padding; the reference keeps the callers' order.
            "sort_by_length": fast,
        }
        options.update(kwargs)
        return cls(base, adapter_dir, **options)

    @property
    def single_pass(self) -> bool:
        return self.number_ids is not None

    def prompts(self, texts: Sequence[str]) -> list[str]:
        budget = None if self.max_length is None else self.max_length - 4
        return build_prompts(texts, tokenizer=self.tokenizer, max_tokens=budget, style=self.prompt_style)

    def predict(self, texts: Sequence[str], *, progress: bool = False) -> list[Prediction]:
        """A Prediction per text, in the texts' order.

        Single-pass guessing is a two-stage pipeline: while the device runs one batch, the host builds,
        tokenizes and sends the next (prompts are built per batch; inputs go through pinned memory without a
        device sync), and only then reads the finished batch's few numbers back. Until a batch's results are
        read, nothing waits for the device, so the host work hides behind the device's (issue 15).
        """
        chunks: Any = self.batches(texts)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="predict", unit="batch")
        out: list[Prediction | None] = [None] * len(texts)
        pending: tuple[list[int], dict[str, Any]] | None = None
        mark = time.perf_counter()

        def answer(done: list[int], preds: list[Prediction]) -> None:
            nonlocal mark
            now = time.perf_counter()
            for i, p in zip(done, preds, strict=True):
                p.seconds = (now - mark) / len(done)
                out[i] = p
            mark = now

        for chunk in itertools.chain(chunks, [None]):  # lazily, so a progress bar advances per batch
            if chunk is not None and not self.single_pass:
                # generate() reads its tokens back itself: nothing to overlap.
                answer(chunk, self._generate(self.prompts([texts[i] for i in chunk])))
                continue
            queued = None if chunk is None else (chunk, self._launch(self.prompts([texts[i] for i in chunk])))
            if pending is not None:  # the batch before, read once this one is queued
                answer(pending[0], self._collect(pending[1]))
            pending = queued
        return cast(list[Prediction], out)  # every index is in exactly one batch, and every batch answered

    def batches(self, texts: Sequence[str]) -> list[list[int]]:
        """The indices of ``texts`` in the batches ``predict`` runs, in its order."""
        order = list(range(len(texts)))
        if self.sort_by_length:
            # Batches of similar lengths carry less padding; the text's length stands in for its prompt's,
            # so the prompts need not all be built before the first batch starts.
            order.sort(key=lambda i: len(texts[i]))
        return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def _encode(self, prompts: list[str]) -> dict[str, Any]:
        import torch

        from training.engine.speed import padded_width

        rows = encode_prompts(self.tokenizer, prompts)
        width = padded_width(max(len(r) for r in rows), self.pad_to_multiple_of)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            # From pageable memory a copy waits for the device to finish its queue; from pinned memory it
            # joins the queue and the host goes on.
            return {
                "input_ids": input_ids.pin_memory().to(device, non_blocking=True),
                "attention_mask": mask.pin_memory().to(device, non_blocking=True),
            }
        return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}

    def _launch(self, prompts: list[str]) -> dict[str, Any]:
        """Queue one batch's forward pass and the reduction of its number distribution on the device; reads
        nothing back (``_collect`` does)."""
        return self._forward(self._encode(prompts))

    def _forward(self, enc: dict[str, Any]) -> dict[str, Any]:
        import torch

        padding = enc["attention_mask"]
        # Positions count real tokens only, so a left-padded row sees the same positions as it would
        # alone: this is what makes batched predictions equal unbatched ones.
        position_ids = (padding.cumsum(-1) - 1).clamp(min=0)
        # From a 2-D mask transformers first tests on the host whether any row is padded, which waits for the
        # device to finish the batch before (and so stalls the pipeline in ``predict``).
        mask = attention_mask_for(self.model, padding)
        with torch.inference_mode():
            # logits_to_keep=1: the LM head runs on the last position only (the same numbers, without a
            # batch x length x vocabulary tensor; see speed.last_position_logits and docs/benchmarks.md).
            logits = self.model(
                input_ids=enc["input_ids"],
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1, :]
            probs = torch.softmax(logits.float(), dim=-1)
            numbers = probs[:, self._number_index]
            mass = numbers.sum(-1)
            dist = numbers / mass.unsqueeze(-1)
            entropy = -(dist * torch.log(dist.clamp_min(1e-30))).sum(-1)
            top_p, top_n = torch.topk(dist, self.k, dim=-1)
            top_p = top_p / top_p.sum(-1, keepdim=True)
            # The first number whose cumulative probability reaches one half (numbers are 0..999 in order).
            medians = (dist.cumsum(-1) < 0.5).sum(-1).clamp(max=999)
        return {"top_p": top_p, "top_n": top_n, "entropy": entropy, "mass": mass, "medians": medians}

    def _collect(self, launched: dict[str, Any]) -> list[Prediction]:
        """Read a launched batch's results back (this waits for its device work) as Predictions."""
        values, weights = launched["top_n"].tolist(), launched["top_p"].tolist()
        entropy, mass = launched["entropy"].tolist(), launched["mass"].tolist()
        medians = launched["medians"].tolist() if self.estimate == "median" else None
        preds = []
        for row in range(len(values)):
            preds.append(
                Prediction(
                    price=float(medians[row])
                    if medians is not None
                    else expected_price(values[row], weights[row]),
                    topk=list(zip(values[row], weights[row], strict=True)),
                    entropy=float(entropy[row]),
                    number_mass=float(mass[row]),
                )
            )
        return preds

    def _generate(self, prompts: list[str]) -> list[Prediction]:
        import torch

        enc = self._encode(prompts)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        preds = []
        for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True):
            match = _NUMBER.search(text.replace(",", ""))
            # No number at all scores as $0, as the reference tester does, so it counts as a miss.
            price = float(match.group()) if match else 0.0
            topk = [(round(price), 1.0)] if match else []
            preds.append(
                Prediction(price=price, topk=topk, entropy=0.0 if match else _MAX_ENTROPY, number_mass=0.0)
            )
        return preds
