"""Trainer checkpoints without pickles: optimizer, scheduler and RNG state as safetensors + JSON.

Used by ``trainer.py``; nothing here is run directly.

``transformers.Trainer`` checkpoints with ``torch.save`` (``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth``, ``training_args.bin``): pickles, which this project never writes or loads (DESIGN.md
§6). The mixin below replaces exactly those save/load hooks; everything else about checkpointing and
resuming (which step, which batches to skip) stays the Trainer's own logic.

Under DDP only the main process (``args.should_save``) writes the adapter, optimizer, scheduler and
arguments; each process writes its own ``rng_state_<rank>.safetensors``, as the Trainer does.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, cast

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER_STATE = "scheduler.json"
TRAINING_ARGS = "training_args.json"


def _flatten(value: Any, path: str, tensors: dict[str, Any], plain: dict[str, Any]) -> None:
    """Split a nested state into tensors (for safetensors) and plain values (for JSON), keyed by path.

    bitsandbytes nests its quantization state in a dict per parameter, so this recurses; "/" joins the
    path, which no optimizer slot name contains.
    """
    import torch

    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}/{key}", tensors, plain)
    else:
        plain[path] = value


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    tensors: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for param_id, slots in state["state"].items():
        _flatten(slots, str(param_id), tensors, plain)
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _unflatten_optimizer(tensors: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for source in (tensors, meta["plain"]):
        for path, value in source.items():
            param_id, *keys = path.split("/")
            node = state.setdefault(int(param_id), {})
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_ready(v) for v in value]
    return value


class SafetensorsCheckpointMixin:
    """Put before a ``transformers.Trainer`` subclass in the bases to checkpoint without pickles."""

    args: Any
    model: Any
    optimizer: Any
    lr_scheduler: Any
    accelerator: Any

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, state_dict=state_dict)
        Path(output_dir, TRAINING_ARGS).write_text(self.args.to_json_string())

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        from safetensors.torch import save_file

        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        tensors, meta = _flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, os.path.join(output_dir, OPTIMIZER_TENSORS))
        Path(output_dir, OPTIMIZER_META).write_text(json.dumps(_json_ready(meta)))
        Path(output_dir, SCHEDULER_STATE).write_text(json.dumps(_json_ready(self.lr_scheduler.state_dict())))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        from safetensors.torch import load_file

        if checkpoint is None or not os.path.isfile(os.path.join(checkpoint, OPTIMIZER_TENSORS)):
            return
        tensors = load_file(os.path.join(checkpoint, OPTIMIZER_TENSORS))
        meta = json.loads(Path(checkpoint, OPTIMIZER_META).read_text())
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta))
        self.lr_scheduler.load_state_dict(json.loads(Path(checkpoint, SCHEDULER_STATE).read_text()))

    def _save_scaler(self, output_dir: str) -> None:
        if getattr(self.accelerator, "scaler", None) is not None:
            raise NotImplementedError("fp16 loss scaling is not supported; use bf16 or fp32")

    def _rng_path(self, folder: str) -> str:
        return os.path.join(folder, f"rng_state_{self.args.process_index}.safetensors")

    def _save_rng_state(self, output_dir: str) -> None:
        import numpy as np
        import torch
        from safetensors.torch import save_file

        os.makedirs(output_dir, exist_ok=True)
        np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
        tensors = {
            "cpu": torch.random.get_rng_state(),
            "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        }
        if torch.cuda.is_available():
            for index, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"cuda_{index}"] = state
        meta = {
            "python": _json_ready(random.getstate()),
            "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        }
        save_file(tensors, self._rng_path(output_dir), metadata={"meta": json.dumps(meta)})
        # Under DDP each process writes its own RNG file; the main process writes trainer_state.json (the
        # "checkpoint complete" mark, see trainer.last_checkpoint) next, so it waits for all of them.
        self.accelerator.wait_for_everyone()

    def _load_rng_state(self, checkpoint: str | None) -> None:
        import numpy as np
        import torch
        from safetensors import safe_open
        from safetensors.torch import load_file

        if checkpoint is None or not os.path.isfile(self._rng_path(checkpoint)):
            return
        path = self._rng_path(checkpoint)
        tensors = load_file(path)
        with safe_open(path, framework="pt") as fh:
            meta = json.loads(fh.metadata()["meta"])
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.random.set_rng_state(tensors["cpu"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
