"""The fast guessing path on the tiny base, CPU: compiled layers on bucketed widths and the opt-in FP8
matmuls (training/engine/speed.py, predict.matmul) against the plain single pass.

Run: .venv/bin/python -m pytest tests/engine/test_speed_guess.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.engine import speed
from training.engine.config import RecipeError, load_recipe
from training.engine.predictor import Predictor

pytestmark = pytest.mark.slow


def texts_of_many_lengths(items: list[dict[str, Any]], n: int = 12) -> list[str]:
    # Different lengths, so batches are left-padded to several widths (and several buckets).
    return [item["text"][: 30 + 29 * i] for i, item in enumerate(items[:n])]


@pytest.fixture(scope="module")
def plain(tiny_base: Path, sft_run: Any) -> Predictor:
    return Predictor(tiny_base, sft_run.result.adapter_dir, k=3, batch_size=4, max_length=96)


def test_it_gives_the_same_prices_compiled_on_bucketed_widths(
    plain: Predictor, tiny_base: Path, sft_run: Any, test_items: list[dict[str, Any]]
) -> None:
    texts = texts_of_many_lengths(test_items)[::-1]  # longest first: the sort inside reorders them
    compiled = Predictor(
        tiny_base,
        sft_run.result.adapter_dir,
        k=3,
        batch_size=4,
        max_length=96,
        compile=True,
        pad_to_multiple_of=8,
        sort_by_length=True,
    )
    fast = compiled.predict(texts)
    reference = plain.predict(texts)
    assert len({round(r.price, 3) for r in reference}) > len(texts) // 2  # an order mix-up would show
    assert compiled.predict([]) == []
    for f, r in zip(fast, reference, strict=True):  # same order as the texts although sorted inside
        assert [v for v, _ in f.topk] == [v for v, _ in r.topk]
        assert f.price == pytest.approx(r.price, abs=1e-3)
        assert f.entropy == pytest.approx(r.entropy, abs=1e-4)


def test_fp8_matmuls_stay_close_to_the_plain_prices(
    plain: Predictor, tiny_base: Path, sft_run: Any, test_items: list[dict[str, Any]]
) -> None:
    import torch

    texts = texts_of_many_lengths(test_items, 16)
    fp8 = Predictor(tiny_base, sft_run.result.adapter_dir, k=3, batch_size=4, max_length=96, matmul="fp8")
    layers = speed.causal_lm_parts(fp8.model)[0].layers
    kinds = {type(m).__name__ for layer in layers for m in layer.modules()}
    assert "_Fp8Linear" in kinds
    assert "Linear" not in kinds
    assert all(
        m.weight_fp8.dtype == torch.float8_e4m3fn for m in layers[0].modules() if hasattr(m, "weight_fp8")
    )

    got = [p.price for p in fp8.predict(texts)]
    tuned = [p.price for p in plain.predict(texts)]
    base_only = [p.price for p in Predictor(tiny_base, max_length=96, batch_size=4).predict(texts)]
    err = sum(abs(a - b) for a, b in zip(got, tuned, strict=True)) / len(texts)
    # Close to the tuned model, not to the base: the adapter was folded into the FP8 weights.
    assert err < 0.25 * sum(abs(a - b) for a, b in zip(base_only, tuned, strict=True)) / len(texts)


def test_dense_weights_fold_the_adapter_in_and_keep_its_prices(
    plain: Predictor, tiny_base: Path, sft_run: Any, test_items: list[dict[str, Any]]
) -> None:
    import torch

    texts = texts_of_many_lengths(test_items, 16)
    dense = Predictor(
        tiny_base, sft_run.result.adapter_dir, k=3, batch_size=4, max_length=96, dense_weights="on"
    )
    assert dense.dense
    layers = speed.causal_lm_parts(dense.model)[0].layers
    # Plain linears only: no LoRA wrapper or adapter matmul is left in a decoder layer.
    assert not [n for layer in layers for n, _ in layer.named_modules() if "lora" in n]
    assert all(type(m) is torch.nn.Linear for _, m in speed._outer_linears(layers[0]))

    got, tuned = dense.predict(texts), plain.predict(texts)
    base_only = Predictor(tiny_base, max_length=96, batch_size=4).predict(texts)
    # The adapter matters here, so a fold that dropped it would show.
    assert any(abs(b.price - t.price) > 1 for b, t in zip(base_only, tuned, strict=True))
    for d, t in zip(got, tuned, strict=True):
        assert [v for v, _ in d.topk] == [v for v, _ in t.topk]
        assert d.price == pytest.approx(t.price, abs=1e-3)


def test_dense_weights_take_the_activations_dtype(
    tiny_base: Path, sft_run: Any, test_items: list[dict[str, Any]]
) -> None:
    import torch

    from training.engine.model_io import load_for_inference

    texts = texts_of_many_lengths(test_items, 8)
    model, tokenizer = load_for_inference(tiny_base, sft_run.result.adapter_dir, device="cpu")
    activations = speed.activation_dtype(model)
    for layer in speed.causal_lm_parts(model)[0].layers:
        for _, mod in speed._outer_linears(layer):
            # As a 4-bit layer does: it multiplies in its own compute dtype and casts back to its input's.
            mod.get_base_layer().compute_dtype = torch.float16
    options = {"k": 3, "batch_size": 4, "max_length": 96}
    dense = Predictor(tiny_base, model=model, tokenizer=tokenizer, dense_weights="on", **options)
    layers = speed.causal_lm_parts(dense.model)[0].layers
    assert {m.weight.dtype for _, m in speed._outer_linears(layers[0])} == {activations}
    got = dense.predict(texts)  # weights in another dtype than the activations would fail in the first matmul
    loaded = Predictor(tiny_base, sft_run.result.adapter_dir, **options).predict(texts)
    for d, t in zip(got, loaded, strict=True):
        assert d.price == pytest.approx(t.price, abs=1e-3)


def test_8bit_weights_stay_as_loaded_and_are_refused_by_name(tiny_base: Path) -> None:
    import torch

    predictor = Predictor(tiny_base, max_length=96)
    assert speed.foldable(predictor.model)
    layer = speed.causal_lm_parts(predictor.model)[0].layers[0]
    _, linear = speed._outer_linears(layer)[0]
    linear.weight = torch.nn.Parameter(torch.zeros_like(linear.weight, dtype=torch.int8), requires_grad=False)
    assert not speed.foldable(predictor.model)  # so predict.dense_weights=auto leaves them as loaded
    with pytest.raises(ValueError, match=r"8-bit weights cannot be made dense or FP8 here.*quant\.mode=4bit"):
        speed.fold_to_dense(predictor.model)


def test_dense_weights_follow_the_recipe_and_the_device(tiny_base: Path) -> None:
    with pytest.raises(RecipeError, match=r"predict\.dense_weights=on contradicts speed\.mode=reference"):
        load_recipe("llama-3.1-8b-qlora", {"predict.dense_weights": "on"})
    with pytest.raises(RecipeError, match=r"predict\.dense_weights=on contradicts quant\.mode=8bit"):
        load_recipe("llama-3.1-8b-qlora-fast", {"predict.dense_weights": "on", "quant.mode": "8bit"})
    with pytest.raises(RecipeError, match=r"predict\.dense_weights='yes'"):
        load_recipe("llama-3.1-8b-qlora-fast", {"predict.dense_weights": "yes"})
    assert load_recipe("llama-3.1-8b-qlora-fast").predict.dense_weights == "auto"
    recipe = load_recipe("tiny", {"model.base": str(tiny_base)})
    # auto: only on a GPU with room for them; here (CPU) the weights stay as loaded.
    assert not Predictor.from_recipe(recipe, device="cpu").dense
    on = load_recipe("tiny", {"model.base": str(tiny_base), "predict.dense_weights": "on"})
    assert Predictor.from_recipe(on, device="cpu").dense
    reference = load_recipe("tiny", {"model.base": str(tiny_base), "speed.mode": "reference"})
    assert not Predictor.from_recipe(reference, device="cpu").dense


def test_it_refuses_fp8_on_a_gpu_without_fp8_units() -> None:
    message = speed.fp8_refusal("cuda", (8, 0), "NVIDIA A100-SXM4-80GB")
    assert message is not None
    assert "predict.matmul=fp8" in message
    assert "8.0" in message
    assert "predict.matmul=bf16" in message
    assert speed.fp8_refusal("cuda", (9, 0), "NVIDIA H200") is None
    assert speed.fp8_refusal("cpu") is None  # PyTorch emulates float8 matmuls on CPU (tests only)


def test_the_recipe_refuses_contradictory_fp8_settings() -> None:
    with pytest.raises(RecipeError, match=r"predict\.matmul=fp8 contradicts speed\.mode=reference"):
        load_recipe("llama-3.1-8b-qlora", {"predict.matmul": "fp8"})
    with pytest.raises(RecipeError, match=r"contradicts quant\.mode=8bit"):
        load_recipe("llama-3.1-8b-qlora-fast", {"predict.matmul": "fp8", "quant.mode": "8bit"})
    with pytest.raises(RecipeError, match=r"predict\.matmul='int4'"):
        load_recipe("llama-3.1-8b-qlora-fast", {"predict.matmul": "int4"})
    assert load_recipe("llama-3.1-8b-qlora-fast", {"predict.matmul": "fp8"}).predict.matmul == "fp8"
    assert load_recipe("llama-3.1-8b-qlora-fast").predict.matmul == "bf16"  # opt-in only


def test_from_recipe_passes_the_matmul_setting_and_skips_compiling_on_cpu(tiny_base: Path) -> None:
    recipe = load_recipe("tiny", {"model.base": str(tiny_base), "predict.matmul": "fp8"})
    predictor = Predictor.from_recipe(recipe, device="cpu")
    assert predictor.matmul == "fp8"
    assert predictor.pad_to_multiple_of == 1
    assert speed.causal_lm_parts(predictor.model)[0].layers[0]._compiled_call_impl is None


def test_padded_width_rounds_up_to_the_bucket() -> None:
    assert [speed.padded_width(w, 8) for w in (1, 8, 9, 177, 182)] == [8, 8, 16, 184, 184]
    assert speed.padded_width(177, 1) == 177
