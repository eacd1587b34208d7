"""Speed paths (training/engine/speed.py) on the tiny base, CPU: same numbers as the plain computation.

Run: .venv/bin/python -m pytest tests/engine/test_speed.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from training.engine import speed
from training.engine.config import SpeedSection
from training.engine.predictor import number_token_ids
from training.engine.prompts import build_prompt, completion

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tiny_base: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()


def sft_batch(tokenizer: Any, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion rows, labels on the completion (and EOS) only, as TRL builds them."""
    rows, labels = [], []
    for item in items:
        prompt_ids = tokenizer(build_prompt(item["text"], tokenizer=tokenizer, max_tokens=60))["input_ids"]
        answer_ids = tokenizer(completion(float(item["price"])), add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids + [tokenizer.eos_token_id]
        rows.append(ids)
        labels.append([-100] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
    }


def test_it_computes_the_same_completion_loss_as_full_logits(
    tiny_model: Any, tokenizer: Any, pool_items: list[dict[str, Any]]
) -> None:
    batch = sft_batch(tokenizer, pool_items[:6])
    logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    fast = speed.answer_only_loss(tiny_model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    assert 0 < fast.item() < 20


def test_it_gives_the_same_gradients_as_full_logits(
    tiny_model: Any, tokenizer: Any, pool_items: list[dict[str, Any]]
) -> None:
    batch = sft_batch(tokenizer, pool_items[6:10])
    head = tiny_model.get_output_embeddings().weight

    logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    (grad_full,) = torch.autograd.grad(full, head)
    fast = speed.answer_only_loss(tiny_model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    (grad_fast,) = torch.autograd.grad(fast, head)
    assert torch.allclose(grad_fast, grad_full, atol=1e-6, rtol=1e-4)


def test_it_reads_the_last_position_like_a_full_forward(
    tiny_model: Any, tokenizer: Any, pool_items: list[dict[str, Any]]
) -> None:
    prompts = [build_prompt(it["text"], tokenizer=tokenizer, max_tokens=60) for it in pool_items[:5]]
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    number_ids = number_token_ids(tokenizer)
    assert number_ids is not None
    numbers = torch.tensor(number_ids)

    fast = speed.last_position_logits(tiny_model, ids, mask, numbers)
    with torch.no_grad():
        for row, r in enumerate(rows):  # each prompt alone, no padding, every position projected
            alone = tiny_model(input_ids=torch.tensor([r])).logits[0, -1]
            assert torch.allclose(fast[row], alone[numbers], atol=1e-4)
    assert fast.shape == (5, 1000)
    assert fast.dtype == torch.float32


def test_it_leaves_the_reference_recipe_alone() -> None:
    reference = SpeedSection(mode="reference")
    assert (
        speed.sft_config_overrides(reference, gradient_checkpointing=True, optimizer="paged_adamw_32bit")
        == {}
    )

    class Recipe:  # the two sections train_hooks reads
        speed = reference

    assert speed.train_hooks(Recipe()) is None


def test_it_turns_checkpointing_off_on_the_fast_path() -> None:
    fast = SpeedSection(mode="fast", checkpointing="off")
    overrides = speed.sft_config_overrides(fast, gradient_checkpointing=True, optimizer="paged_adamw_32bit")
    assert overrides["gradient_checkpointing"] is False
    follows = SpeedSection(mode="fast")  # checkpointing="recipe"
    assert speed.sft_config_overrides(follows, gradient_checkpointing=True, optimizer="adamw_torch")[
        "gradient_checkpointing"
    ]


def test_it_rejects_contradictory_speed_settings() -> None:
    with pytest.raises(ValueError, match=r"speed\.mode"):
        SpeedSection(mode="turbo")
    with pytest.raises(ValueError, match=r"only applies to speed\.mode=fast"):
        SpeedSection(mode="reference", checkpointing="off")
    with pytest.raises(ValueError, match=r"speed\.checkpointing"):
        SpeedSection(checkpointing="sometimes")


def test_it_skips_the_gpu_kernels_on_cpu(tiny_model: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    assert speed.apply_liger(tiny_model) == []
    assert speed.compile_layers(tiny_model) == 0


def _one_step(reads: Any, step: int) -> Any:
    """A TrainerCallback that has ``reads`` count during training step ``step`` only."""
    from transformers import TrainerCallback

    class Window(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            reads.counting = state.global_step + 1 == step

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            reads.counting = False

    return Window()


def test_the_fast_path_reads_nothing_back_inside_a_step_and_logs_what_trl_logs(
    tmp_path: Path, tiny_base: Path, datasets_dir: Path, host_reads: Any
) -> None:
    """The fast path's trainer (DeferredStepMetrics) leaves the metric and token sums on the device
    between logged steps, and still logs the loss, TRL's entropy/accuracy/token metrics and the token
    count that TRL's own per-step reads give, and trains the same adapter."""
    import dataclasses

    from safetensors.torch import load_file

    from training.engine.config import load_recipe
    from training.engine.trainer import CHECKPOINTS_DIRNAME, train

    # price_sigma 0: the plain completion loss, the path DeferredStepMetrics takes over from TRL.
    recipe = load_recipe(
        "tiny",
        {
            "model.base": str(tiny_base),
            "train.max_steps": 6,
            "train.logging_steps": 3,
            "train.save_steps": 2,  # checkpoints between logs: each must hold every step's tokens
            "train.save_total_limit": 5,
            "train.price_sigma": 0.0,
        },
    )
    hooks = speed.train_hooks(recipe)
    assert hooks is not None
    assert speed.DeferredStepMetrics in hooks.trainer_mixins
    runs = {}
    for name, mixins in (("fast", hooks.trainer_mixins), ("trl", ())):
        host_reads.origins = Counter()
        result = train(
            recipe,
            datasets_dir / "sft.jsonl",
            tmp_path / name,
            hooks=dataclasses.replace(hooks, trainer_mixins=mixins),
            callbacks=[_one_step(host_reads, 2)],  # step 2 of 6 logs nothing (logging_steps 3)
        )
        runs[name] = (result, host_reads.origins)

    (fast, fast_reads), (trl, trl_reads) = runs["fast"], runs["trl"]
    # What TRL (its entropy/accuracy/token metrics) and the Trainer (its token count) read every step ...
    assert trl_reads["sft_trainer.py"] >= 4
    assert trl_reads["trainer.py"] >= 1
    # ... the fast path does not, nor does transformers test its padding mask (the 4-D mask is built on the
    # device). What is left is not the trainer's: torch's single-tensor AdamW reading its CPU step counters
    # (CPU only: the fused AdamW the fast path uses on CUDA keeps them on the device).
    assert set(fast_reads) <= {"optimizer.py"}, fast_reads
    keys = ("step", "loss", "entropy", "mean_token_accuracy", "num_tokens", "num_input_tokens_seen")
    logged = [[{k: row[k] for k in keys} for row in r.log_history if "loss" in row] for r in (fast, trl)]
    assert [row["step"] for row in logged[0]] == [3, 6]
    for ours, theirs in zip(*logged, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert fast.tokens == trl.tokens > 0
    for step in (2, 4):
        saved = [
            json.loads(
                (
                    r.adapter_dir.parent / CHECKPOINTS_DIRNAME / f"checkpoint-{step}" / "trainer_state.json"
                ).read_text()
            )
            for r in (fast, trl)
        ]
        assert saved[0]["num_input_tokens_seen"] == saved[1]["num_input_tokens_seen"] > 0
    a = load_file(fast.adapter_dir / "adapter_model.safetensors")
    b = load_file(trl.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        # Not bit-equal: the fast head sums its gradient over the labelled positions only (TRL's CPU path
        # over every position, masked), so six Adam steps differ in the last float32 digits.
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)


def test_answer_positions_come_from_the_collated_batch_on_the_host() -> None:
    import copy

    import torch

    def collate(features: list[Any]) -> dict[str, Any]:  # right-padded, as TRL's SFT collator pads
        width = max(len(f) for f in features)
        ids = torch.tensor([f + [0] * (width - len(f)) for f in features])
        mask = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in features])
        labels = torch.full_like(ids, speed.IGNORE_INDEX)
        for row, f in enumerate(features):
            labels[row, len(f) - 2 : len(f)] = ids[row, len(f) - 2 : len(f)]  # the last two tokens answer
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    collate.padding_free = False  # type: ignore[attr-defined]
    wrapped = speed.AnswerPositions(collate)
    batch = wrapped([[5, 6, 7, 8], [9, 10, 11]])
    positions = batch[speed.ANSWER_POSITIONS]
    width = batch["labels"].shape[1]
    # Each position's next token is labelled, and there is one position per labelled token after the first.
    assert (batch["labels"].reshape(-1)[positions + 1] != speed.IGNORE_INDEX).all()
    assert len(positions) == int((batch["labels"][:, 1:] != speed.IGNORE_INDEX).sum())
    assert positions.tolist() == [1, 2, width, width + 1]  # rows of width 4: the tokens before the answers
    assert batch[speed.RIGHT_PADDED] is True
    left = speed.AnswerPositions(
        lambda f: {**collate(f), "attention_mask": collate(f)["attention_mask"].flip(1)}
    )
    assert left([[5, 6, 7, 8], [9, 10, 11]])[speed.RIGHT_PADDED] is False
    assert wrapped.padding_free is False  # the wrapped collator's settings show through
    assert copy.deepcopy(wrapped).padding_free is False  # copies like a plain object (DataLoader workers)
