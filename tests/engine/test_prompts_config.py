"""Prompt formats and recipes: exact strings, truncation, merging, and refusal of contradictions."""

from __future__ import annotations

from typing import Any

import pytest

from training.engine.config import RecipeError, available_recipes, load_recipe
from training.engine.prompts import (
    PRICE_PREFIX,
    QUESTION,
    build_prompt,
    build_prompts,
    completion,
    count_tokens,
    price_trainable,
)


def test_it_builds_the_reference_base_prompt_exactly() -> None:
    assert QUESTION == "How much does this cost to the nearest dollar?"
    assert PRICE_PREFIX == "Price is $"
    assert build_prompt("A red mug") == (
        "How much does this cost to the nearest dollar?\n\nA red mug\n\nPrice is $"
    )


def test_it_rounds_completions_and_bounds_trainable_prices() -> None:
    assert completion(128.6) == "129.00"
    assert completion(0.5) == "0.00"  # Python rounds half to even, as the reference does
    assert price_trainable(0.5)
    assert price_trainable(999.49)
    assert not price_trainable(999.5)
    assert not price_trainable(0.49)


def test_it_cuts_product_text_so_the_prompt_fits(tokenizer: Any) -> None:
    text = "sturdy stainless steel kettle " * 80
    prompt = build_prompt(text, tokenizer=tokenizer, max_tokens=60)
    assert count_tokens(tokenizer, prompt) <= 60
    assert prompt.startswith(QUESTION)
    assert prompt.endswith(f"\n\n{PRICE_PREFIX}")
    assert "sturdy stainless" in prompt
    short = build_prompt("A red mug", tokenizer=tokenizer, max_tokens=60)
    assert short == build_prompt("A red mug")


@pytest.mark.parametrize(
    ("style", "max_tokens"),
    [("base", None), ("base", 40), ("base", 90), ("base", 400), ("chat", 110), ("chat", 160)],
)
def test_many_prompts_at_once_are_the_prompts_built_one_by_one(
    tokenizer: Any, catalogue: list[dict[str, Any]], style: str, max_tokens: int | None
) -> None:
    texts = [i["text"] for i in catalogue[:60]] + ["  A red mug  ", "sturdy kettle " * 90, ""]
    # Byte-level tokens cut mid-character: the first cut re-encodes longer than it was, so these go on
    # shrinking one token at a time (the slow path of both).
    texts += ["é" * 200, "Ωmega-™ «quoted» ½ " * 20, "日本語のテキスト" * 30]
    one_by_one = [build_prompt(t, tokenizer=tokenizer, max_tokens=max_tokens, style=style) for t in texts]
    assert build_prompts(texts, tokenizer=tokenizer, max_tokens=max_tokens, style=style) == one_by_one
    if max_tokens in (40, 110):  # most texts really were cut
        uncut = [build_prompt(t, tokenizer=tokenizer, style=style) for t in texts]
        assert sum(p != u for p, u in zip(one_by_one, uncut, strict=True)) > 30


def test_it_wraps_the_chat_variant_in_the_tokenizers_template(tokenizer: Any) -> None:
    prompt = build_prompt("A red mug", tokenizer=tokenizer, style="chat")
    assert prompt.endswith(f"<|start_header_id|>assistant<|end_header_id|>\n\n{PRICE_PREFIX}")
    assert "<|start_header_id|>system<|end_header_id|>" in prompt
    assert QUESTION in prompt
    with pytest.raises(ValueError, match="chat template"):
        build_prompt("A red mug", style="chat")


def test_it_loads_the_reference_qlora_recipe() -> None:
    recipe = load_recipe("llama-3.1-8b-qlora")
    assert recipe.model.base == "meta-llama/Llama-3.1-8B"
    assert (recipe.quant.mode, recipe.quant.quant_type, recipe.quant.double_quant) == ("4bit", "nf4", True)
    assert recipe.quant.compute_dtype == "bfloat16"
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (32, 64, 0.1)
    assert recipe.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    t = recipe.train
    assert (t.learning_rate, t.lr_scheduler, t.warmup_ratio) == (1e-4, "cosine", 0.03)
    assert (t.optimizer, t.weight_decay, t.max_grad_norm) == ("paged_adamw_32bit", 0.001, 0.3)
    assert (t.epochs, t.batch_size, t.max_length, t.completion_only_loss) == (1, 16, 182, True)
    assert recipe.predict.k == 3


def test_it_merges_cli_strings_into_typed_fields() -> None:
    recipe = load_recipe(
        "tiny",
        {
            "train.learning_rate": "2e-4",
            "train.max_steps": "3",
            "quant.mode": "4bit",
            "lora.target_modules": "q_proj,v_proj",
            "train.completion_only_loss": "true",
        },
    )
    assert recipe.train.learning_rate == 2e-4
    assert recipe.train.max_steps == 3
    assert recipe.quant.mode == "4bit"
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert load_recipe("tiny", {"train": {"seed": 7}}).train.seed == 7
    assert recipe.fingerprint() != load_recipe("tiny").fingerprint()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quant.mode": "3bit"}, "quant.mode"),
        ({"train.method": "kto", "train.batch_size": 1}, "batch_size >= 2"),
        ({"train.method": "dpo", "train.completion_only_loss": False}, "completion_only_loss"),
        ({"train.max_steps": -1, "train.epochs": 0}, "epochs"),
        ({"lora.dropout": 1.5}, "lora.dropout"),
        ({"train.learning_rate": "fast"}, "expected a number"),
        ({"train.max_stepz": 3}, "unknown setting train.max_stepz"),
        ({"predict.k": 0}, "predict.k"),
    ],
)
def test_it_rejects_contradictory_or_bad_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe("tiny", overrides)


def test_it_names_the_packaged_recipes_when_one_is_missing() -> None:
    with pytest.raises(RecipeError, match="tiny"):
        load_recipe("llama-9000")


@pytest.mark.parametrize("name", available_recipes())
def test_every_packaged_recipe_loads(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.fingerprint() == load_recipe(name).fingerprint()


def test_a_chat_prompt_never_carries_the_bos_text(tokenizer: Any) -> None:
    original = tokenizer.chat_template
    tokenizer.chat_template = "{{ bos_token }}" + original  # as Llama-3-Instruct's template does
    try:
        prompt = build_prompt("A red mug", tokenizer=tokenizer, style="chat")
    finally:
        tokenizer.chat_template = original
    assert not prompt.startswith(tokenizer.bos_token)
    assert tokenizer(prompt)["input_ids"].count(tokenizer.bos_token_id) == 1


def test_the_small_recipe_is_what_the_gpu_simulation_measured() -> None:
    """``small`` ships the settings of the measured arm (tests/benchmarks/device_loop_arms.sh,
    ``base-soft-6ep``: small-qlora with these overrides): a run on its defaults trains what was measured."""
    measured = load_recipe(
        "small-qlora",
        {
            "quant": {"mode": "none"},
            "predict": {"estimate": "median"},
            "train": {"learning_rate": 1e-3, "epochs": 6, "price_sigma": 0.3},
        },
    ).to_dict()
    shipped = load_recipe("small").to_dict()
    assert {**shipped, "name": ""} == {**measured, "name": ""}
