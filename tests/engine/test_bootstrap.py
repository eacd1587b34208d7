"""The offline base: number tokens like Llama 3, a saved safetensors model that loads by path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.engine.predictor import number_token_ids


def test_it_tokenizes_the_price_as_one_token_after_the_dollar(tokenizer: Any) -> None:
    ids = tokenizer.encode("Price is $129", add_special_tokens=False)
    head = tokenizer.encode("Price is $", add_special_tokens=False)
    assert ids[: len(head)] == head
    assert len(ids) == len(head) + 1
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "129"
    # The completion starts on a token boundary: "129" "." "00".
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("$129.00", add_special_tokens=False))[-3:] == [
        "129",
        ".",
        "00",
    ]


def test_it_has_every_number_0_to_999_as_a_single_token_in_context(tokenizer: Any) -> None:
    ids = number_token_ids(tokenizer)
    assert ids is not None
    assert len(set(ids)) == 1000
    assert tokenizer.decode([ids[7]]) == "7"
    assert tokenizer.decode([ids[999]]) == "999"


def test_it_round_trips_text_and_adds_one_bos(tokenizer: Any) -> None:
    text = "Ünïcode kettle — 1.7 L, 2200 W\n\nPrice is $"
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.pad_token
    assert tokenizer.eos_token
    assert tokenizer.chat_template


def test_it_saves_a_llama_in_safetensors_with_its_tokenizer(tiny_base: Path) -> None:
    names = {p.name for p in tiny_base.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    config = json.loads((tiny_base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    summary = json.loads((tiny_base / "bootstrap.json").read_text())
    assert 100_000 < summary["parameters"] < 2_000_000
    assert summary["final_loss"] < summary["first_loss"]  # pretraining learned something
