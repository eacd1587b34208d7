"""Single-pass prediction: batching does not change answers, reloading gives the same answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from training.engine.predictor import Predictor, expected_price

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(tiny_base: Path, sft_run: Any) -> Predictor:
    return Predictor(tiny_base, sft_run.result.adapter_dir, k=3, batch_size=8, max_length=96)


def test_it_reads_the_price_off_the_number_tokens(
    predictor: Predictor, test_items: list[dict[str, Any]]
) -> None:
    assert predictor.single_pass
    preds = predictor.predict([i["text"] for i in test_items[:6]])
    for p in preds:
        assert len(p.topk) == 3
        assert math.isclose(sum(q for _, q in p.topk), 1.0, rel_tol=1e-5)
        assert all(0 <= price <= 999 for price, _ in p.topk)
        assert p.price == pytest.approx(expected_price([v for v, _ in p.topk], [q for _, q in p.topk]))
        assert 0 <= p.entropy <= math.log(1000) + 1e-6
        assert 0 < p.number_mass <= 1


def test_it_gives_the_same_answers_batched_and_one_by_one(
    predictor: Predictor, test_items: list[dict[str, Any]]
) -> None:
    # Texts of different lengths, so the batch really is left-padded.
    texts = [i["text"][: 40 + 37 * n] for n, i in enumerate(test_items[:8])]
    batched = predictor.predict(texts)
    predictor.batch_size = 1
    try:
        single = predictor.predict(texts)
    finally:
        predictor.batch_size = 8
    for b, s in zip(batched, single, strict=True):
        assert [v for v, _ in b.topk] == [v for v, _ in s.topk]
        assert b.price == pytest.approx(s.price, abs=1e-3)
        assert b.entropy == pytest.approx(s.entropy, abs=1e-4)


def test_the_adapter_changes_the_guesses(
    predictor: Predictor, tiny_base: Path, test_items: list[dict[str, Any]]
) -> None:
    texts = [i["text"] for i in test_items[:4]]
    base_only = Predictor(tiny_base, max_length=96).predict(texts)
    tuned = predictor.predict(texts)
    assert [p.topk for p in base_only] != [p.topk for p in tuned]


def test_it_falls_back_to_greedy_generation_without_number_tokens(
    tiny_base: Path, test_items: list[dict[str, Any]]
) -> None:
    fallback = Predictor(tiny_base, max_length=96, max_new_tokens=4)
    fallback.number_ids = None  # as for a tokenizer whose numbers span several tokens
    preds = fallback.predict([i["text"] for i in test_items[:3]])
    assert len(preds) == 3
    for p in preds:
        assert p.price >= 0
        assert p.number_mass == 0.0
        assert p.topk == ([(round(p.price), 1.0)] if p.topk else [])
