"""Speed paths for QLoRA training and single-pass guessing (issue 6; figures in docs/benchmarks.md).

Used as a library by ``trainer.py`` and ``predictor.py``; ``speed.mode`` in a recipe picks the path:

- ``reference``: nothing here is applied; the recipe runs exactly as the reference pricer ran it
  (TRL SFTTrainer defaults, gradient checkpointing as the recipe says, eager PyTorch kernels).
- ``fast``: ``torch.compile`` per decoder layer on CUDA (Inductor fuses the RMSNorm and SwiGLU chains; Liger's
  fused Triton kernels take that place only where nothing is compiled), no gradient checkpointing (the
  recipe's batch still fits 24 GB), fused AdamW instead of the paged one, no host read of the device inside
  a training step (``DeferredStepMetrics``), and no full-vocabulary logits: the loss and the guess read the
  language-model head only at the positions that matter (the answer tokens in training - TRL 1.16 already
  does this - and the last prompt position in guessing, optionally only the rows of the 1,000 number tokens).

Everything works on CPU (the Triton kernels are skipped there), so the tiny-model tests exercise the same
code as the GPU runs. ``answer_only_loss`` equals the completion-only loss computed from full logits
(tests/engine/test_speed.py proves it on the tiny model).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from training.engine.config import SpeedSection

if TYPE_CHECKING:  # torch loads lazily: the Django side imports the engine's light modules
    import torch

IGNORE_INDEX = -100


@dataclass
class TrainHooks:
    """Extension points of ``trainer.train`` for speed paths and instrumentation; all optional."""

    # Called with the loaded base (quantized or not) before LoRA is attached; returns the model to use.
    prepare_model: Callable[[Any], Any] | None = None
    # Merged last into the TRL config kwargs (e.g. gradient checkpointing choices).
    args_overrides: dict[str, Any] = field(default_factory=dict)
    # Classes put before the TRL trainer in the bases (e.g. a compute_loss override).
    trainer_mixins: tuple[type, ...] = ()


def liger_available() -> bool:
    """True when the Liger kernels can run here (package installed and a CUDA device present)."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def apply_liger(model: Any) -> list[str]:
    """Swap a loaded Llama's RMSNorm and SwiGLU modules for Liger's fused Triton kernels, in place.

    The matmuls (and so the 4-bit linear layers and LoRA adapters) are untouched; only the elementwise
    chains between them become one kernel each. Only this model instance changes: Liger also rebinds the
    classes in ``transformers.models.llama.modeling_llama``, which would silently speed up (and change)
    every Llama loaded later in the process, the reference recipe's included, so those are put back.
    RoPE stays PyTorch's: Liger's RoPE can only be installed process-wide. Returns the kernels applied
    ([] where none could be). Call before wrapping the model with PEFT.
    """
    if not liger_available():
        return []
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "model_type", None) != "llama":
        return []
    from liger_kernel.transformers import apply_liger_kernel_to_llama
    from transformers.models.llama import modeling_llama

    saved = {
        name: getattr(modeling_llama, name) for name in ("LlamaRMSNorm", "LlamaMLP", "apply_rotary_pos_emb")
    }
    try:
        apply_liger_kernel_to_llama(
            rope=False,
            rms_norm=True,
            swiglu=True,
            cross_entropy=False,
            fused_linear_cross_entropy=False,
            model=base,
        )
    finally:
        for name, value in saved.items():
            setattr(modeling_llama, name, value)
    return ["rms_norm", "swiglu"]


def compile_layers(model: Any, *, on_cpu: bool = False) -> int:
    """``torch.compile`` each decoder layer (regional compilation: one graph reused by all layers).

    Cuts the per-operator Python and launch cost that bounds a batch-16 QLoRA step (the GPU idles ~half
    of it otherwise) and lets Inductor fuse the elementwise ops between matmuls (in guessing: the RMSNorm,
    RoPE, SwiGLU and FP8 activation-scaling chains). CUDA only unless ``on_cpu`` (tests: Inductor's C++
    backend gives the same numbers there); returns the number of layers wrapped. Call after PEFT wrapping
    or FP8 conversion (what the layer holds at its first call is what gets compiled).
    """
    import torch

    if not (torch.cuda.is_available() or on_cpu):
        return 0
    backbone, _ = causal_lm_parts(model)
    for layer in backbone.layers:
        layer.compile()
    return len(backbone.layers)


def causal_lm_parts(model: Any) -> tuple[Any, Any]:
    """(decoder backbone, lm_head) of a causal LM, through a PEFT wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix, None) or base.model
    return backbone, base.get_output_embeddings()


def answer_only_loss(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Completion-only causal-LM loss that runs the LM head on the labelled positions only.

    Same value as ``cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)`` on full logits (mean
    over the labelled tokens) but with ``n_answer × vocab`` logits instead of ``batch × seq × vocab``; for a
    price completion that is 4 positions of ~180.
    """
    import torch

    backbone, head = causal_lm_parts(model)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = hidden[:, :-1][mask]
    logits = head(picked).float()
    return torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum") / mask.sum().clamp(min=1)


def last_position_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token logits at the last position of each left-padded prompt, as float32.

    With ``token_ids`` only those rows of the LM head are used (e.g. the 1,000 number tokens), so the head
    costs 1,000 × hidden instead of vocab × hidden per prompt, and no other position is projected at all.
    """
    import torch

    backbone, head = causal_lm_parts(model)
    position_ids = None
    if attention_mask is not None:
        # Left padding: positions count real tokens only, as generate() does.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state[:, -1]
    if token_ids is None:
        return head(hidden).float()
    weight = head.weight[token_ids]
    bias = head.bias[token_ids] if getattr(head, "bias", None) is not None else None
    return torch.nn.functional.linear(hidden, weight, bias).float()


def attention_mask_for(model: Any, padding: torch.Tensor) -> torch.Tensor:
    """The mask to pass ``model`` for a 2-D padding mask (1 = token), built on the device without reading it.

    Under SDPA: the 4-D mask transformers itself builds (causal and not padding, True = attend). Passed a
    2-D mask, transformers first tests on the host whether any row is padded (a wait for the device); with
    none at all it tests the position ids for packed sequences (another). Other attention backends read
    4-D masks differently (eager adds them), so they get the 2-D mask as it is.
    """
    import torch

    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        return padding
    width = padding.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=padding.device).tril()
    return causal[None, None] & padding.bool()[:, None, None, :]


def sft_config_overrides(
    section: SpeedSection, *, gradient_checkpointing: bool, optimizer: str
) -> dict[str, Any]:
    """Keyword arguments for TRL's ``SFTConfig`` that the speed mode changes (empty for the reference).

    ``fast`` swaps ``paged_adamw_32bit`` for PyTorch's fused AdamW: the same update with 32-bit states, one
    kernel for all LoRA tensors instead of one per tensor through unified memory (measured: 47-70 ms of a
    0.4-0.8 s step on an H100). Paging only helps when optimizer state would overflow the GPU; LoRA's is
    0.2 GB. Gradient checkpointing follows ``section.checkpointing``. With ``compile`` batches are padded
    to a multiple of 8 so the compiled layers see two widths (176/184) instead of one per longest item
    (measured under DDP on two H200s: 10.0k tokens/s with a recompile per width, 23.0k with padding).
    """
    import torch

    if section.mode == "reference":
        return {}
    # The Trainer's NaN filter tests every step's loss on the host (a device sync per step; see
    # DeferredStepMetrics). Off: a NaN loss shows in the logged loss instead of being averaged away.
    out: dict[str, Any] = {"logging_nan_inf_filter": False}
    cuda = torch.cuda.is_available()
    if cuda:
        # The batch goes from pinned memory to the GPU without the host waiting for the queue to drain (by
        # default accelerate's copy is blocking: one more wait for the GPU at the start of every step).
        out["dataloader_pin_memory"] = True
        out["accelerator_config"] = {"non_blocking": True}
    if optimizer in ("paged_adamw_32bit", "adamw_torch") and cuda:
        out["optim"] = "adamw_torch_fused"
    if section.compile and cuda:
        out["pad_to_multiple_of"] = 8
    mode = section.checkpointing
    if mode == "recipe":
        mode = "full" if gradient_checkpointing else "off"
    if mode == "off":
        out["gradient_checkpointing"] = False
    elif mode == "selective":
        out["gradient_checkpointing"] = True
        out["gradient_checkpointing_kwargs"] = {"selective": True, "use_reentrant": False}
    else:
        out["gradient_checkpointing"] = True
    return out


def prepare_model(section: SpeedSection, model: Any) -> Any:
    """The model changes of the fast path: per-layer ``torch.compile`` where it runs (CUDA), else Liger.

    Liger only where nothing is compiled, as in guessing: Inductor fuses the same RMSNorm/SwiGLU chains
    itself, and tracing Liger's Triton kernels fails inside a compiled layer (Triton cannot compile
    Liger's SwiGLU with a Python-float multiplier: "'float' object has no attribute 'to'", one warning
    per layer graph, after which Dynamo treats every input as mutated). Measured side by side in
    docs/benchmarks.md §6. Compilation is lazy (first forward), so it can be set up before PEFT inserts
    the LoRA layers: they are traced as part of each decoder layer on the first step.
    """
    if section.mode == "fast":
        compiled = section.compile and compile_layers(model) > 0  # 0 where it does not run (CPU)
        if section.liger and not compiled:
            apply_liger(model)
    return model


# Keys AnswerPositions adds to a collated SFT batch (taken out again before anything reaches the model).
ANSWER_POSITIONS = "priceloop_answer_positions"
RIGHT_PADDED = "priceloop_right_padded"


class AnswerPositions:
    """Wraps an SFT data collator: each batch also carries, worked out on the host from its CPU tensors,
    the flat (row × width) positions whose next token is labelled and whether every row is right-padded.

    With them ``DeferredStepMetrics`` needs no read of the device inside a step: TRL's fused head picks the
    labelled positions with a boolean index (a host-device sync between the forward and the backward on
    CUDA), and transformers tests a 2-D padding mask on the host before building the 4-D one (a sync at the
    start of the forward). A right-padded batch gets the 4-D mask built on the device instead
    (``attention_mask_for``): no row starts with padding, so no query row of it is empty.
    """

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __getattr__(self, name: str) -> Any:  # the wrapped collator's settings (e.g. padding_free)
        collator = self.__dict__.get("collator")
        if collator is None:  # not set yet (copy, unpickling): a plain missing attribute
            raise AttributeError(name)
        return getattr(collator, name)

    def __call__(self, features: Any) -> Any:
        batch = self.collator(features)
        labels, mask = batch.get("labels"), batch.get("attention_mask")
        if labels is None or mask is None or "position_ids" in batch or labels.ndim != 2:
            return batch
        rows, cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
        batch[ANSWER_POSITIONS] = rows * labels.shape[1] + cols
        batch[RIGHT_PADDED] = bool((mask[:, 1:] <= mask[:, :-1]).all())
        return batch


def _plain_logits(config: Any) -> bool:
    """True when a model's logits are its LM head's output as is (no softcapping or scaling), as for Llama."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scales = (
        "final_logit_softcapping",
        "logit_scale",
        "output_multiplier",
        "lm_head_multiplier",
        "logits_scaling",
    )
    return all(getattr(text, name, None) is None for name in scales)


class DeferredStepMetrics:
    """Trainer mixin for TRL's SFT trainer on the fast path: no host-device synchronisation inside a step.

    Per step, TRL reads its entropy/token-accuracy/token-count metrics with ``.item()`` between the forward
    and the backward, and the Trainer reads the non-padding token count with ``.item()`` after it. Each read
    waits for the GPU to drain, so the host cannot queue the next kernels while the GPU works, which is
    what bounds a compiled QLoRA step (docs/benchmarks.md §1). Here the same sums stay on the device and
    are read once per logged step (``log``) and before a checkpoint: the loss, its gradient, the logged
    metrics and ``state.num_input_tokens_seen`` are the values TRL and the Trainer give
    (tests/engine/test_speed.py), except that under DDP the metrics gather every micro-batch where TRL's
    ``gather_for_metrics`` drops an epoch's padded remainder. The labelled positions and the padding come
    from the host (``AnswerPositions``), so neither TRL's head nor transformers' mask reads the device
    either; the head is TRL's own kernel (``trl.kernels.ChunkedLogProbFunction``) on those positions.
    Anything but a plain training forward (evaluation, a custom ``compute_loss_func`` such as
    ``train.price_sigma``, auxiliary or non-NLL losses) goes to TRL as is. The fast path also turns the
    Trainer's NaN filter off, so a NaN step shows in the logged loss.
    """

    # What the mixin reads from TRL's SFTTrainer and the Trainer (annotations only, for the type checker).
    accelerator: Any
    args: Any
    state: Any
    model: Any
    data_collator: Any
    compute_loss_func: Any
    label_smoother: Any
    aux_loss_enabled: bool
    get_tp_size: Any
    _metrics: Any
    _total_train_tokens: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_metrics: list[Any] = []  # per micro-batch: entropy, top-1 hits, labelled, attended
        self._pending_tokens: list[Any] = []  # per micro-batch: non-padding tokens (the Trainer's count)
        if not isinstance(self.data_collator, AnswerPositions):
            self.data_collator = AnswerPositions(self.data_collator)
        # Settled for the whole run, so decided once rather than on every step.
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        self._sequence_parallel = getattr(parallelism, "sp_enabled", False)
        # The host-indexed head can stand in for TRL's when the logits are the head's output as is and the
        # sequence and the head are whole on this process (no context parallelism, FSDP or DeepSpeed).
        self._whole_head = (
            _plain_logits(self.model.config)
            and not getattr(parallelism, "cp_enabled", False)
            and not getattr(self, "is_fsdp_enabled", False)
            and not getattr(self, "is_deepspeed_enabled", False)
        )

    def compute_loss(  # type: ignore[no-untyped-def]
        self, model, inputs, return_outputs=False, num_items_in_batch=None
    ):
        import torch

        positions = inputs.pop(ANSWER_POSITIONS, None)
        right_padded = inputs.pop(RIGHT_PADDED, False)
        if (
            return_outputs
            or not self.model.training
            or self.compute_loss_func is not None
            or self.label_smoother is not None
            or self.aux_loss_enabled
            or self.args.loss_type != "nll"
            or self._sequence_parallel
            or "attention_mask" not in inputs
        ):
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        inputs["use_cache"] = False
        if positions is None or not self._whole_head or "shift_labels" in inputs:
            outputs = model(**inputs, fused_lm_head=True)
            log_probs, entropy, is_top1, labelled = (
                outputs.log_probs,
                outputs.entropy,
                outputs.is_top1,
                outputs.label_mask.sum(),
            )
        else:
            log_probs, entropy, is_top1 = self._answer_outputs(model, inputs, positions, right_padded)
            labelled = log_probs.new_full((), positions.numel())  # a fill on the device, not a copy to it
        # TRL's loss, unchanged: mean negative log-likelihood over the labelled tokens.
        num_tokens = labelled if num_items_in_batch is None else num_items_in_batch
        loss = (-log_probs).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        sums = (entropy.detach(), is_top1, labelled, inputs["attention_mask"])
        self._pending_metrics.append(torch.stack([x.sum().double() for x in sums]))
        return loss

    def _answer_outputs(self, model: Any, inputs: Any, positions: Any, right_padded: bool) -> tuple[Any, ...]:
        """Log-probability, entropy and top-1 hit of each labelled token, in ``positions`` order.

        The model is called through its wrappers (DDP, PEFT, accelerate's autocast) with no position for its
        own LM head (``logits_to_keep`` empty: one position cost 2.9 ms a step on an H100, docs/benchmarks.md
        §7); the backbone's hidden states are taken on the way out and TRL's fused head kernel runs on the
        labelled positions, picked with the host's index (no boolean index, no sync).
        """
        import torch
        from trl.kernels import ChunkedLogProbFunction

        backbone, head = causal_lm_parts(self.model)
        hidden: list[Any] = []
        hook = backbone.register_forward_hook(lambda _m, _a, out: hidden.append(out.last_hidden_state))
        kwargs = {k: v for k, v in inputs.items() if k != "labels"}
        if right_padded:  # no row starts with padding, so no query row of the 4-D mask is empty
            kwargs["attention_mask"] = attention_mask_for(self.model, inputs["attention_mask"])
        try:
            model(**kwargs, logits_to_keep=torch.empty(0, dtype=torch.long, device=positions.device))
        finally:
            hook.remove()
        states = hidden[-1]
        flat = states.reshape(-1, states.shape[-1]).index_select(0, positions)
        targets = inputs["labels"].reshape(-1).index_select(0, positions + 1)
        # A model split across devices can end its backbone on another device than its head.
        flat, targets = flat.to(head.weight.device), targets.to(head.weight.device)
        with self.accelerator.autocast():  # as inside the model's forward, where TRL's head runs
            log_probs, entropy, _, _, is_top1 = ChunkedLogProbFunction.apply(
                flat, head.weight, head.bias, targets, 1.0, 32768, None, 1.0, ("entropy", "is_top1")
            )
        return log_probs, entropy, is_top1

    def _track_num_input_tokens(self, inputs):  # type: ignore[no-untyped-def]
        if self.args.include_num_input_tokens_seen == "non_padding" and "attention_mask" in inputs:
            self._pending_tokens.append(inputs["attention_mask"].sum())
        else:
            super()._track_num_input_tokens(inputs)  # type: ignore[misc]

    def log(self, logs, start_time=None):  # type: ignore[no-untyped-def]
        self.flush_step_metrics()
        super().log(logs, start_time)  # type: ignore[misc]

    def _save_checkpoint(self, model, trial):  # type: ignore[no-untyped-def]
        # A checkpoint stores state.num_input_tokens_seen, so it must hold every step's tokens.
        self.flush_step_metrics()
        super()._save_checkpoint(model, trial)  # type: ignore[misc]

    def flush_step_metrics(self) -> None:
        """Add the pending per-step sums to TRL's metrics and the Trainer's token count (one read)."""
        import torch

        metrics, tokens = self._pending_metrics, self._pending_tokens
        if not metrics and not tokens:
            return
        world = self.accelerator.num_processes
        if metrics:
            # Every process logs at the same steps (DDP), so each gathers the same number of rows; the
            # per-step sums over processes are what TRL gathers at each step.
            rows = self.accelerator.gather(torch.stack(metrics)).view(world, len(metrics), 4).sum(0)
            train = self._metrics["train"]
            for entropy, correct, valid, attended in rows.tolist():
                train["entropy"].append(entropy / valid if valid > 0 else 0.0)
                train["mean_token_accuracy"].append(correct / valid if valid > 0 else 0.0)
                self._total_train_tokens += int(attended) // getattr(self, "_tp_size", 1)
            train["num_tokens"] = [self._total_train_tokens]
        if tokens:
            total = self.accelerator.gather(torch.stack(tokens).sum().reshape(1)).sum()
            self.state.num_input_tokens_seen += int(total.item())
        metrics.clear()
        tokens.clear()


def train_hooks(recipe: Any) -> Any:
    """``TrainHooks`` for a recipe's ``speed`` section (None when absent or 'reference').

    ``trainer.train`` calls this when the caller passes no hooks of its own.
    """
    section = getattr(recipe, "speed", None)
    if section is None or section.mode == "reference":
        return None
    return TrainHooks(
        prepare_model=lambda model: prepare_model(section, model),
        args_overrides=sft_config_overrides(
            section,
            gradient_checkpointing=recipe.train.gradient_checkpointing,
            optimizer=recipe.train.optimizer,
        ),
        trainer_mixins=(DeferredStepMetrics,) if recipe.train.method == "sft" else (),
    )


# ---------------------------------------------------------------------------------------------------------
# Guessing: compiled decoder layers on bucketed widths, and the opt-in FP8 matmul path (predict.matmul).

FP8_MAX = 448.0  # largest finite float8_e4m3fn value


def padded_width(width: int, multiple: int) -> int:
    """``width`` rounded up to a multiple of ``multiple`` (1: unchanged).

    A compiled layer is specialised on its input shape; rounding every batch's width up to a multiple of 8
    leaves a handful of shapes (the prompts are 100-182 tokens) instead of one per longest prompt, for at
    most 7 padding columns (<4% of a 182-token batch; the padding is masked, so the prices do not move).
    """
    return -(-width // multiple) * multiple


def fp8_refusal(device_type: str, capability: tuple[int, int] | None = None, name: str = "") -> str | None:
    """Why ``predict.matmul=fp8`` cannot run on this device, or None when it can.

    CUDA needs FP8 matrix units (compute capability 8.9+: L4/L40/Ada, H100/H200). On CPU PyTorch emulates
    ``_scaled_mm`` (slowly: useful for tests only), if this build has it at all.
    """
    import torch

    fix = "set predict.matmul=bf16"
    if device_type == "cuda":
        if capability is None or capability < (8, 9):
            cap = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
            return (
                f"predict.matmul=fp8 needs a GPU with FP8 matrix units (compute capability 8.9 or newer, "
                f"e.g. L4, L40, H100, H200); {name or 'this GPU'} has compute capability {cap}: {fix}"
            )
        return None
    try:
        one = torch.ones(16, 16).to(torch.float8_e4m3fn)
        scale = torch.ones(16, 1)
        torch._scaled_mm(one, one.t(), scale_a=scale, scale_b=scale.t(), out_dtype=torch.float32)
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        return (
            f"predict.matmul=fp8: this PyTorch build cannot run float8 matmuls on {device_type} ({exc}): "
            f"{fix}"
        )
    return None


@functools.cache
def _fp8_linear_class() -> type:
    """The FP8 linear module class (defined on first use: torch loads lazily, see the imports above)."""
    import torch

    class _Fp8Linear(torch.nn.Module):
        """``y = x Wᵀ (+ b)`` with W in float8 e4m3 and one scale per output channel, made once from the
        loaded weight; the activations get one scale per token, computed on every call (no calibration).

        Both scales are row-wise, so one outlier channel or token costs only its own row's precision.
        The product accumulates in float32 and comes back in the input's dtype.
        """

        def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, fast_accum: bool) -> None:
            super().__init__()
            w = weight.detach().float()
            scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
            self.in_features, self.out_features = w.shape[1], w.shape[0]
            # (out, in) row-major: its transpose is the column-major second operand _scaled_mm wants.
            self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn))
            self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
            self.register_buffer("bias", None if bias is None else bias.detach().clone())
            self.fast_accum = fast_accum

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, self.in_features)
            scale = (flat.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
            q = (flat.float() / scale).to(torch.float8_e4m3fn)
            out = torch._scaled_mm(
                q,
                self.weight_fp8.t(),
                scale_a=scale,
                scale_b=self.weight_scale,
                out_dtype=x.dtype,
                use_fast_accum=self.fast_accum,
            )
            if self.bias is not None:
                out = out + self.bias.to(out.dtype)
            return out.reshape(*x.shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"

    return _Fp8Linear


def dense_weight(module: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a linear layer as a plain tensor: a bitsandbytes 4-bit layer is dequantized and a
    PEFT LoRA layer gets its active, unmerged adapters' ``B·A·scale`` added (folded in exactly, in float32,
    before anything is rounded to bf16 or FP8)."""

    base = _base_linear(module)
    weight = base.weight
    if getattr(weight, "quant_state", None) is not None:  # bitsandbytes Params4bit
        import bitsandbytes.functional as bnbf

        dense = bnbf.dequantize_4bit(weight.data, weight.quant_state).float()
    elif not _foldable_weight(weight):
        raise ValueError(
            f"{type(base).__name__}: 8-bit weights cannot be made dense or FP8 here; load the base in 4-bit "
            "or unquantized (quant.mode=4bit or none)"
        )
    else:
        dense = weight.detach().float().clone()
    if base is not module and not getattr(module, "disable_adapters", False):
        merged = set(getattr(module, "merged_adapters", []))  # already inside the base weight
        for name in module.active_adapters:
            if name not in getattr(module, "lora_A", {}) or name in merged:
                continue
            extras = [
                what
                for what, flags in (("DoRA", "use_dora"), ("a LoRA bias", "lora_bias"))
                if getattr(module, flags, {}).get(name)
            ]
            if extras:  # their effect is not in B·A·scale: folding it alone would give other prices
                raise ValueError(
                    f"adapter {name!r} uses {' and '.join(extras)}: it cannot be folded into dense or FP8 "
                    "weights; guess with predict.dense_weights=off and predict.matmul=bf16"
                )
            dense += module.get_delta_weight(name).float()
    return dense, getattr(base, "bias", None)


def _foldable_weight(weight: Any) -> bool:
    """False for an 8-bit (bitsandbytes Int8) weight, which neither path here can dequantize."""
    import torch

    return getattr(weight, "quant_state", None) is not None or weight.dtype not in (torch.int8, torch.uint8)


def _base_linear(module: Any) -> Any:
    """The linear layer under a PEFT wrapper (the module itself when it is not wrapped)."""
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def _decoder_linears(model: Any) -> Any:
    """(layer, name, module) for each decoder layer's outermost linear modules."""
    backbone, _ = causal_lm_parts(model)
    for layer in backbone.layers:
        for name, mod in _outer_linears(layer):
            yield layer, name, mod


def _outer_linears(layer: Any) -> list[tuple[str, Any]]:
    """The outermost linear-like modules of a decoder layer (a LoRA wrapper, not the linears inside it)."""
    import torch

    targets = [
        (name, mod)
        for name, mod in layer.named_modules()
        if name and (isinstance(mod, torch.nn.Linear) or hasattr(mod, "get_base_layer"))
    ]
    return [(n, m) for n, m in targets if not any(n.startswith(f"{o}.") for o, _ in targets if o != n)]


def _replace_linears(model: Any, make: Callable[[Any], Any]) -> int:
    """Replace each decoder layer's outermost linear modules with ``make(module)``, in place; how many."""
    replaced = 0
    for layer, name, mod in list(_decoder_linears(model)):  # listed first: the loop replaces modules
        parent_name, _, attr = name.rpartition(".")
        parent = layer.get_submodule(parent_name) if parent_name else layer
        setattr(parent, attr, make(mod))
        replaced += 1
    return replaced


def activation_dtype(model: Any) -> torch.dtype:
    """The dtype a model's hidden states travel in between layers: its input embeddings' dtype. A 4-bit
    layer casts its input to its compute dtype and its output back to this; a dense layer must hold this."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_input_embeddings().weight.dtype


def dense_bytes(model: Any) -> int:
    """Bytes the decoder layers' linear weights take once dense (``fold_to_dense``)."""
    size = activation_dtype(model).itemsize
    return sum(
        _base_linear(mod).in_features * _base_linear(mod).out_features * size
        for _, _, mod in _decoder_linears(model)
    )


def dense_weights_fit(model: Any) -> bool:
    """True when ``fold_to_dense`` can run and pays here: no 8-bit weights, and the model is on a GPU whose
    free memory holds its dense decoder weights twice over (the second copy: room for a guessing batch's
    activations and for the 4-bit weights until released)."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda" or not foldable(model):
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return free >= 2 * dense_bytes(model)


def foldable(model: Any) -> bool:
    """False when a decoder linear holds 8-bit weights (``dense_weight`` cannot dequantize them)."""
    return all(_foldable_weight(_base_linear(mod).weight) for _, _, mod in _decoder_linears(model))


def fold_to_dense(model: Any) -> int:
    """Replace every linear layer inside the decoder layers with a plain ``torch.nn.Linear`` holding its
    dense weight (``dense_weight``: 4-bit dequantized, adapter folded in) in the activations' dtype; how many.

    Guessing then runs one bf16 matmul per projection: no 4-bit dequantization and no LoRA matmuls per pass
    (docs/benchmarks.md §7). The weights are what a 4-bit layer multiplies by anyway (bitsandbytes dequantizes
    to the compute dtype for a batch of prompts); only the adapter's sum is rounded once more. The decoder
    weights then take 16 bits a parameter instead of ~4.5 (14 GB for Llama-3.1-8B).
    """
    import torch

    dtype = activation_dtype(model)

    def dense(mod: Any) -> Any:
        weight, bias = dense_weight(mod)
        # skip_init: no random initialisation of a weight that is overwritten at once.
        out = torch.nn.utils.skip_init(
            torch.nn.Linear,
            weight.shape[1],
            weight.shape[0],
            bias=bias is not None,
            device=weight.device,
            dtype=dtype,
        )
        with torch.no_grad():
            out.weight.copy_(weight)
            if bias is not None:
                out.bias.copy_(bias)
        out.requires_grad_(False)
        return out

    return _replace_linears(model, dense)


def convert_to_fp8(model: Any, *, fast_accum: bool = False) -> int:
    """Replace every linear layer inside the decoder layers with an FP8 one, in place; returns how many.

    The embedding and the LM head stay as they are (the head runs on one position per prompt). The 4-bit or
    bf16 weights of the replaced layers are released. Opt-in only (``predict.matmul=fp8``): the prices move
    by FP8 rounding, so a gate must score candidate and champion with the same setting.
    """
    fp8_class = _fp8_linear_class()

    def fp8(mod: Any) -> Any:
        weight, bias = dense_weight(mod)
        return fp8_class(weight, bias, fast_accum=fast_accum)

    return _replace_linears(model, fp8)
