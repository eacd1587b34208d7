"""LoRA / QLoRA fine-tuning with TRL: SFT (completion-only), DPO or KTO, from a base or a parent adapter.

Library: ``train(recipe, Path("sft.jsonl"), Path("runs/r1"), base="data/base-tiny", progress=print)``
CLI: ``python -m training.engine train --recipe tiny --base data/base-tiny --dataset sft.jsonl --out runs/r1``

Run folder layout: ``run.json`` (what this run is: recipe, dataset sha256, base, parent; a resume refuses
a folder made for something else), ``checkpoints/checkpoint-N`` (safetensors-only, see
``checkpoints.py``) and, when training completes, ``adapter/`` with ``adapter_model.safetensors`` and
``adapter_config.json``. A crash leaves checkpoints; calling ``train`` again with ``resume=True`` continues
from the last complete one.

Under ``torchrun``/``accelerate launch`` (DDP, one process per GPU) every process calls ``train`` with
the same arguments; only the main process writes ``run.json`` and ``adapter/`` (checkpoints: see
``checkpoints.py``), the others wait for it, and every process returns the same ``TrainResult``.
``launch.py`` starts such a run from a single process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.engine.checkpoints import SafetensorsCheckpointMixin
from training.engine.config import Recipe
from training.engine.speed import TrainHooks

log = logging.getLogger(__name__)

ADAPTER_DIRNAME = "adapter"
CHECKPOINTS_DIRNAME = "checkpoints"
RUN_FILE = "run.json"
COLUMNS = {
    "sft": {"prompt", "completion"},
    "dpo": {"prompt", "chosen", "rejected"},
    "kto": {"prompt", "completion", "label"},
}


class TrainingCancelled(RuntimeError):  # noqa: N818 - reads as the event it reports
    """``should_stop`` asked to stop; checkpoints stay, no adapter is written."""


@dataclass
class ProgressEvent:
    step: int
    total_steps: int
    loss: float | None
    learning_rate: float | None
    tokens_per_s: float | None
    epoch: float | None = None


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    final_loss: float | None
    tokens: int
    seconds: float
    method: str = "sft"
    resumed_from_step: int = 0
    # What the run was (recipe, dataset sha256, base, parent adapter sha256): the version manifest's core.
    run: dict[str, Any] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    # How it was trained: the number of DDP processes (one per GPU on CUDA) and the device type.
    processes: int = 1
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "adapter_dir": str(self.adapter_dir)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{**data, "adapter_dir": Path(data["adapter_dir"])})


@dataclass(frozen=True)
class Processes:
    """This process's place in a DDP run (``torchrun``/``accelerate launch`` set ``WORLD_SIZE``)."""

    rank: int = 0
    count: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self.count > 1:
            import torch.distributed as dist

            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """The main process's ``flag``, on every process (so that all stop at the same step)."""
        if self.count == 1:
            return flag
        import torch.distributed as dist

        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])


def processes(device: str | None = None) -> Processes:
    """This process's rank, the process count and its device; joins the process group under DDP.

    The group is accelerate's (``PartialState``), the one the Trainer uses: gloo on CPU, NCCL on CUDA
    with one GPU per process (``cuda:LOCAL_RANK``).
    """
    from training.engine.model_io import default_device

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes(device=device or default_device())
    from accelerate import PartialState

    wanted = device or default_device()
    state = PartialState(cpu=not wanted.startswith("cuda"))
    # A bare "cuda" means this process's own GPU; an explicit "cuda:N" or "cpu" is kept.
    own = str(state.device) if wanted == "cuda" else wanted
    return Processes(rank=state.process_index, count=state.num_processes, device=own)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint: ``trainer_state.json`` is written last, so its presence means done."""
    if not checkpoints_dir.is_dir():
        return None
    done = [
        p
        for p in checkpoints_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _precision(recipe: Recipe, device: str) -> bool:
    """Whether to train in bf16."""
    import torch

    if recipe.train.precision == "fp32" or not device.startswith("cuda"):
        return False
    if recipe.train.precision == "bf16":
        return True
    return bool(torch.cuda.is_bf16_supported())


class _ProgressCallback:
    """Forwards Trainer logs as ProgressEvents and turns ``should_stop()`` into a clean stop."""

    def __init__(
        self,
        progress: Callable[[ProgressEvent], None] | None,
        should_stop: Callable[[], bool] | None,
        procs: Processes,
    ) -> None:
        self.progress = progress
        self.should_stop = should_stop
        self.procs = procs
        self.stopped = False
        self.last_loss: float | None = None
        self._mark: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._mark = (time.perf_counter(), state.num_input_tokens_seen)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.should_stop is None:
            return
        # Under DDP the main process asks and all follow: a rank stopping alone would leave the others
        # waiting in the next gradient all-reduce for ever.
        if self.procs.agree(self.procs.main and self.should_stop()):
            self.stopped = True
            control.should_training_stop = True

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return
        self.last_loss = float(logs["loss"])
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        rate = None
        if self._mark is not None and now > self._mark[0] and tokens > self._mark[1]:
            rate = (tokens - self._mark[1]) / (now - self._mark[0])
        self._mark = (now, tokens)
        if self.progress is not None and self.procs.main:
            lr = logs.get("learning_rate")
            self.progress(
                ProgressEvent(
                    step=state.global_step,
                    total_steps=state.max_steps,
                    loss=self.last_loss,
                    learning_rate=None if lr is None else float(lr),
                    tokens_per_s=rate,
                    epoch=logs.get("epoch"),
                )
            )


def _load_dataset(path: Path, method: str) -> Any:
    from training.engine.datasets import load_dataset_jsonl

    dataset = load_dataset_jsonl(path)
    if len(dataset) == 0:
        raise ValueError(f"{path} has no rows: nothing to train on")
    missing = COLUMNS[method] - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"{path} is not a {method.upper()} dataset: columns {sorted(missing)} are missing "
            f"(it has {sorted(dataset.column_names)}); build it with build_{method}"
        )
    return dataset.select_columns(sorted(COLUMNS[method]))


def _run_identity(recipe: Recipe, dataset_path: Path, base: str, parent: Path | None) -> dict[str, Any]:
    return {
        "recipe": recipe.to_dict(),
        "recipe_sha256": recipe.fingerprint(),
        "dataset": str(dataset_path),
        "dataset_sha256": _sha256(dataset_path),
        "base": base,
        "parent_adapter": None if parent is None else str(parent),
        "parent_sha256": None if parent is None else _sha256(parent / "adapter_model.safetensors"),
    }


def _run_dir_resumable(out_dir: Path, identity: dict[str, Any], resume: bool) -> bool:
    """Whether ``out_dir`` holds checkpoints of this same run to resume; refuses another run's folder."""
    run_file = out_dir / RUN_FILE
    if not (resume and run_file.is_file() and last_checkpoint(out_dir / CHECKPOINTS_DIRNAME) is not None):
        return False
    before = json.loads(run_file.read_text())
    keys = ("recipe_sha256", "dataset_sha256", "base", "parent_sha256")
    changed = [k for k in keys if before.get(k) != identity[k]]
    if changed:
        raise ValueError(
            f"{out_dir} holds checkpoints of a different run ({', '.join(changed)} changed): "
            "use a new run folder or pass resume=False to start over"
        )
    return True


def _start_run_dir(out_dir: Path, identity: dict[str, Any]) -> None:
    """A fresh run folder: no checkpoints, no adapter, this run's ``run.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / CHECKPOINTS_DIRNAME, ignore_errors=True)
    shutil.rmtree(out_dir / ADAPTER_DIRNAME, ignore_errors=True)
    (out_dir / RUN_FILE).write_text(json.dumps(identity, indent=2, sort_keys=True))


def _trainer_args(
    recipe: Recipe, method: str, output_dir: Path, device: str, overrides: dict[str, Any] | None = None
) -> Any:
    from trl import DPOConfig, KTOConfig, SFTConfig

    t = recipe.train
    optimizer = t.optimizer
    if not device.startswith("cuda") and optimizer.startswith("paged_"):
        # Paged optimizers page their state through CUDA unified memory; on CPU the plain one is equal.
        optimizer = "adamw_torch"
    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,  # a value below 1 is a ratio of the total steps
        "optim": optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "seed": t.seed,
        "data_seed": t.seed,
        "bf16": _precision(recipe, device),
        "fp16": False,
        "use_cpu": not device.startswith("cuda"),
        "gradient_checkpointing": t.gradient_checkpointing,
        "report_to": "none",
        "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding",
        "dataloader_num_workers": 0,
        "max_length": t.max_length,
        # Every trainable (LoRA) parameter takes part in each forward pass, so DDP need not search the
        # graph for unused ones after every backward (its default when gradient checkpointing is off).
        "ddp_find_unused_parameters": False,
    }
    if method == "sft":
        common["completion_only_loss"] = t.completion_only_loss
    else:
        common["beta"] = t.beta
    common.update(overrides or {})
    config_class = {"sft": SFTConfig, "dpo": DPOConfig, "kto": KTOConfig}[method]
    return config_class(**common)


def _trainer_class(method: str, mixins: tuple[type, ...] = ()) -> type:
    from trl import DPOTrainer, KTOTrainer, SFTTrainer

    parent = {"sft": SFTTrainer, "dpo": DPOTrainer, "kto": KTOTrainer}[method]
    return type(f"Safe{parent.__name__}", (*mixins, SafetensorsCheckpointMixin, parent), {})


def _save_adapter(model: Any, adapter_dir: Path) -> None:
    """Write only the trained adapter ("default"; DPO/KTO may hold a frozen "ref" copy too), atomically."""
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=["default"])
    (tmp / "README.md").unlink(missing_ok=True)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


def train(
    recipe: Recipe,
    dataset_path: Path,
    out_dir: Path,
    *,
    base: str | None = None,
    parent_adapter: Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    callbacks: list[Any] | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``dataset_path`` with the recipe's method; return where it is.

    ``base`` (hub id or folder) defaults to ``recipe.model.base``. With ``parent_adapter`` training
    continues that adapter instead of starting a new one (its LoRA shape wins over the recipe's).
    ``progress`` receives a ``ProgressEvent`` at every logging step; ``should_stop`` is polled after
    every step and a True stops training with ``TrainingCancelled``. Under DDP only the main process
    receives progress and asks ``should_stop`` (all processes stop together). ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects (speed instrumentation, tests that inspect the model);
    ``hooks`` let a speed path adjust the model, the TRL config and the trainer class.
    """
    from transformers import TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from training.engine.model_io import load_base_model, load_tokenizer

    method = recipe.train.method
    base = base or recipe.model.base
    if not base:
        raise ValueError("no base model: pass base= or set model.base in the recipe")
    dataset_path, out_dir = Path(dataset_path), Path(out_dir)
    parent = Path(parent_adapter) if parent_adapter else None
    if parent is not None:
        from training.engine.model_io import check_adapter_dir

        check_adapter_dir(parent)
    procs = processes(device)
    device = procs.device
    identity = _run_identity(recipe, dataset_path, str(base), parent)
    # Every process reads the folder before the main one changes it, so all decide (or refuse) alike.
    resumable = _run_dir_resumable(out_dir, identity, resume)
    procs.wait_for_everyone()
    if procs.main and not resumable:
        _start_run_dir(out_dir, identity)
    procs.wait_for_everyone()
    checkpoint = last_checkpoint(out_dir / CHECKPOINTS_DIRNAME) if resumable else None

    set_seed(recipe.train.seed)
    dataset = _load_dataset(dataset_path, method)
    tokenizer = load_tokenizer(base, revision=recipe.model.revision, padding_side="right")
    model = load_base_model(
        base, quant=recipe.quant, revision=recipe.model.revision, dtype=recipe.model.dtype, device=device
    )
    if hooks is None:
        from training.engine.speed import train_hooks

        # The recipe's speed section (speed.py): None for speed.mode=reference, which runs unchanged.
        hooks = train_hooks(recipe)
    hooks = hooks or TrainHooks()
    if hooks.prepare_model is not None:
        model = hooks.prepare_model(model)
    peft_config = None
    if parent is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(parent), is_trainable=True)
    else:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=recipe.lora.r,
            lora_alpha=recipe.lora.alpha,
            lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )

    # TrainerCallback supplies no-op handlers for the events _ProgressCallback does not care about.
    callback = type("PriceLoopProgress", (_ProgressCallback, TrainerCallback), {})(
        progress, should_stop, procs
    )
    trainer = _trainer_class(method, hooks.trainer_mixins)(
        model=model,
        args=_trainer_args(recipe, method, out_dir / CHECKPOINTS_DIRNAME, device, hooks.args_overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback, *(callbacks or [])],
    )
    if method == "sft" and recipe.train.price_sigma > 0:
        from training.engine.price_loss import price_loss_func

        # TRL's SFT trainer calls the Trainer's documented compute_loss_func with the full logits.
        trainer.compute_loss_func = price_loss_func(tokenizer, sigma=recipe.train.price_sigma)
    # Progress goes to the caller (and the CLI's bar), not to stdout from inside the library.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(
            f"every row of {dataset_path} is longer than train.max_length={recipe.train.max_length} tokens, "
            "so no completion survives truncation: build the dataset with max_prompt_tokens set"
        )
    if kept < len(dataset):
        log.warning(
            "%d of %d rows dropped: their completion fell beyond max_length",
            len(dataset) - kept,
            len(dataset),
        )
    began = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - began
    if callback.stopped:
        raise TrainingCancelled(f"stopped at step {trainer.state.global_step} on request")

    adapter_dir = out_dir / ADAPTER_DIRNAME
    if procs.main:
        _save_adapter(trainer.model, adapter_dir)
    procs.wait_for_everyone()  # no process returns before the adapter it names exists
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=trainer.state.global_step,
        final_loss=callback.last_loss,
        tokens=int(trainer.state.num_input_tokens_seen),
        seconds=seconds,
        method=method,
        resumed_from_step=int(checkpoint.name.split("-")[-1]) if checkpoint else 0,
        run=json.loads((out_dir / RUN_FILE).read_text()),
        log_history=list(trainer.state.log_history),
        processes=procs.count,
        device=device.split(":")[0],
    )
