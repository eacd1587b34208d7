"""Optimizer state survives the pickle-free checkpoint format, bitsandbytes' nested state included."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors.torch import load, save

from training.engine.checkpoints import _flatten_optimizer, _json_ready, _unflatten_optimizer


def _optimizers() -> list[Any]:
    import bitsandbytes as bnb

    return [torch.optim.AdamW, bnb.optim.PagedAdamW32bit, bnb.optim.AdamW8bit]


@pytest.mark.parametrize("make", _optimizers(), ids=lambda c: c.__name__)
def test_a_restored_optimizer_takes_the_same_next_step(make: Any) -> None:
    torch.manual_seed(0)
    start = torch.randn(64, 64)
    grads = [torch.randn(64, 64) for _ in range(3)]

    def stepped(opt: Any, param: torch.nn.Parameter, grad: torch.Tensor) -> None:
        param.grad = grad.clone()
        opt.step()

    original = torch.nn.Parameter(start.clone())
    opt = make([original], lr=1e-2)
    for g in grads[:2]:
        stepped(opt, original, g)

    tensors, meta = _flatten_optimizer(opt.state_dict())
    # Through bytes, exactly as the checkpoint files hold them (and with no tensor shared with opt).
    tensors = load(save(tensors))
    meta = json.loads(json.dumps(_json_ready(meta)))
    restored = torch.nn.Parameter(original.detach().clone())
    opt2 = make([restored], lr=1e-2)
    opt2.load_state_dict(_unflatten_optimizer(tensors, meta))

    stepped(opt, original, grads[2])
    stepped(opt2, restored, grads[2])
    torch.testing.assert_close(restored.detach(), original.detach(), rtol=0, atol=0)
