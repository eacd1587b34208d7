"""Typed training recipes: a YAML file per recipe, merged with CLI flags into one ``Recipe``.

Used as a library: ``recipe = load_recipe("tiny", {"train.max_steps": 20})``; on the command line every
field is a flag (``python -m training.engine train --recipe tiny --train.max_steps 20``).

Each field carries its help text; ``__post_init__`` rejects contradictory or out-of-range settings with a
message that names the field, so a bad recipe fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from training.engine.prompts import PROMPT_STYLES

RECIPES_DIR = Path(__file__).parent / "recipes"

QUANT_MODES = ("4bit", "8bit", "none")
METHODS = ("sft", "dpo", "kto")
PRECISIONS = ("auto", "bf16", "fp32")
DTYPES = ("bfloat16", "float16", "float32")
SPEED_MODES = ("reference", "fast")
CHECKPOINTING = ("recipe", "off", "selective", "full")
MATMUL_MODES = ("bf16", "fp8")
DENSE_WEIGHTS = ("auto", "on", "off")


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message names the field and the fix."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


@dataclass
class ModelSection:
    base: str = field(
        default="",
        metadata={"help": "Base model: a Hugging Face hub id or a local folder (same loader for both)."},
    )
    revision: str | None = field(
        default=None, metadata={"help": "Hub revision (commit, tag or branch) of the base; None for local."}
    )
    prompt_style: str = field(
        default="base",
        metadata={
            "help": "Prompt format: 'base' (reference pricer text) or 'chat' (tokenizer chat template)."
        },
    )
    dtype: str = field(
        default="bfloat16",
        metadata={"help": "Dtype of the non-quantized weights on GPU (CPU always runs float32)."},
    )

    def __post_init__(self) -> None:
        _check(
            self.prompt_style in PROMPT_STYLES,
            f"model.prompt_style={self.prompt_style!r}: use one of {', '.join(PROMPT_STYLES)}",
        )
        _check(self.dtype in DTYPES, f"model.dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")


@dataclass
class QuantSection:
    mode: str = field(
        default="none",
        metadata={"help": "bitsandbytes quantization of the frozen base: '4bit' (QLoRA), '8bit' or 'none'."},
    )
    quant_type: str = field(default="nf4", metadata={"help": "4-bit data type: 'nf4' or 'fp4'."})
    double_quant: bool = field(
        default=True, metadata={"help": "4-bit only: also quantize the quantization constants."}
    )
    compute_dtype: str = field(
        default="bfloat16", metadata={"help": "4-bit only: dtype of the matmuls on dequantized weights."}
    )

    def __post_init__(self) -> None:
        _check(self.mode in QUANT_MODES, f"quant.mode={self.mode!r}: use one of {', '.join(QUANT_MODES)}")
        _check(self.quant_type in ("nf4", "fp4"), f"quant.quant_type={self.quant_type!r}: use nf4 or fp4")
        _check(
            self.compute_dtype in DTYPES,
            f"quant.compute_dtype={self.compute_dtype!r}: use one of {', '.join(DTYPES)}",
        )


@dataclass
class LoraSection:
    r: int = field(default=32, metadata={"help": "LoRA rank."})
    alpha: int = field(default=64, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names that get adapters (Llama attention projections by default)."},
    )

    def __post_init__(self) -> None:
        _check(self.r > 0, f"lora.r={self.r}: must be positive")
        _check(self.alpha > 0, f"lora.alpha={self.alpha}: must be positive")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout={self.dropout}: must be in [0, 1)")
        _check(bool(self.target_modules), "lora.target_modules is empty: name at least one module")


@dataclass
class TrainSection:
    method: str = field(default="sft", metadata={"help": "Objective: 'sft', 'dpo' or 'kto'."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Share of the steps spent warming up."})
    optimizer: str = field(
        default="paged_adamw_32bit",
        metadata={
            "help": "transformers optimizer name (paged_adamw_32bit needs CUDA; use adamw_torch on CPU)."
        },
    )
    weight_decay: float = field(default=0.001, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=0.3, metadata={"help": "Gradient clipping norm."})
    epochs: float = field(
        default=1.0, metadata={"help": "Passes over the dataset (ignored if max_steps > 0)."}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps; -1: by epochs."}
    )
    batch_size: int = field(default=16, metadata={"help": "Examples per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(
        default=182, metadata={"help": "Max tokens of prompt+completion; product text is cut to fit."}
    )
    completion_only_loss: bool = field(
        default=True, metadata={"help": "SFT: loss on the completion tokens only (the price)."}
    )
    beta: float = field(
        default=0.1, metadata={"help": "DPO/KTO: strength of the pull towards the reference."}
    )
    price_sigma: float = field(
        default=0.0,
        metadata={
            "help": "SFT: > 0 adds a soft target on the price token, a Gaussian over log(1 + price) of this "
            "width (0.3: near misses earn credit; training/engine/price_loss.py); 0: plain cross-entropy. "
            "DPO and KTO ignore it."
        },
    )
    precision: str = field(
        default="auto",
        metadata={"help": "'bf16', 'fp32' or 'auto' (bf16 on CUDA when supported, else fp32)."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward to save memory."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Report loss every N steps."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every N steps (for resume)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept on disk."})
    seed: int = field(default=42, metadata={"help": "Seed for data order, LoRA init and dropout."})

    def __post_init__(self) -> None:
        _check(self.method in METHODS, f"train.method={self.method!r}: use one of {', '.join(METHODS)}")
        _check(self.learning_rate > 0, f"train.learning_rate={self.learning_rate}: must be positive")
        _check(0.0 <= self.warmup_ratio < 1.0, f"train.warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        _check(
            self.max_steps > 0 or self.epochs > 0,
            "train.epochs and train.max_steps are both off: set epochs > 0 or max_steps > 0",
        )
        _check(self.batch_size >= 1, f"train.batch_size={self.batch_size}: must be >= 1")
        _check(self.grad_accum >= 1, f"train.grad_accum={self.grad_accum}: must be >= 1")
        _check(self.max_length >= 32, f"train.max_length={self.max_length}: too short for a prompt (>= 32)")
        _check(
            self.precision in PRECISIONS, f"train.precision={self.precision!r}: use {', '.join(PRECISIONS)}"
        )
        _check(self.logging_steps >= 1, f"train.logging_steps={self.logging_steps}: must be >= 1")
        _check(self.save_steps >= 1, f"train.save_steps={self.save_steps}: must be >= 1")
        _check(self.max_grad_norm > 0, f"train.max_grad_norm={self.max_grad_norm}: must be positive")
        _check(
            0.0 <= self.price_sigma <= 2.0,
            f"train.price_sigma={self.price_sigma}: use 0 (off) or a width in log-price such as 0.3",
        )
        _check(
            self.method == "sft" or self.completion_only_loss,
            f"train.completion_only_loss=false contradicts train.method={self.method}: "
            "preference objectives always score the completion only",
        )


@dataclass
class PredictSection:
    k: int = field(default=3, metadata={"help": "Price = expected value over the top-k number tokens."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per forward pass."})
    max_new_tokens: int = field(
        default=6, metadata={"help": "Fallback generation length for tokenizers without number tokens."}
    )
    matmul: str = field(
        default="bf16",
        metadata={
            "help": "Matmuls of the guessing pass: 'bf16' (the weights as loaded) or 'fp8' (opt-in, "
            "speed.mode=fast, GPUs of compute capability 8.9+: e4m3 weights made once from the loaded "
            "ones, per-token activation scales; prices move by FP8 rounding, docs/benchmarks.md)."
        },
    )
    dense_weights: str = field(
        default="auto",
        metadata={
            "help": "Guess on dense weights: each decoder linear dequantized to the activations' dtype "
            "once and the adapter folded in, so a pass runs plain bf16 matmuls (no 4-bit dequantization, no "
            "LoRA matmuls; 16 bits a weight on the GPU instead of ~4.5). 'auto': on speed.mode=fast when "
            "the model is on a GPU with free memory for twice the dense weights; 'on'; 'off': the weights "
            "as loaded."
        },
    )

    estimate: str = field(
        default="topk",
        metadata={
            "help": "How the price is read off the number tokens: 'topk' (expected value over the top-k, "
            "the reference) or 'median' (median of the whole distribution: least expected absolute error)."
        },
    )

    def __post_init__(self) -> None:
        _check(1 <= self.k <= 1000, f"predict.k={self.k}: must be between 1 and 1000")
        _check(
            self.estimate in ("topk", "median"),
            f"predict.estimate={self.estimate!r}: use 'topk' or 'median'",
        )
        _check(
            self.matmul in MATMUL_MODES,
            f"predict.matmul={self.matmul!r}: use one of {', '.join(MATMUL_MODES)}",
        )
        _check(
            self.dense_weights in DENSE_WEIGHTS,
            f"predict.dense_weights={self.dense_weights!r}: use one of {', '.join(DENSE_WEIGHTS)}",
        )
        _check(self.batch_size >= 1, f"predict.batch_size={self.batch_size}: must be >= 1")
        _check(self.max_new_tokens >= 1, f"predict.max_new_tokens={self.max_new_tokens}: must be >= 1")


@dataclass
class SpeedSection:
    """Which speed path trains and guesses (``speed.py`` applies it; figures in docs/benchmarks.md)."""

    mode: str = field(
        default="fast",
        metadata={"help": "'fast' (fused kernels, answer-only head, no needless recompute) or 'reference'."},
    )
    liger: bool = field(
        default=True,
        metadata={
            "help": "fast only: Liger Triton kernels for RMSNorm and SwiGLU where layers are not compiled "
            "(CUDA; skipped on CPU)."
        },
    )
    compile: bool = field(
        default=True,
        metadata={"help": "fast only: torch.compile each decoder layer (CUDA; first steps pay the compile)."},
    )
    checkpointing: str = field(
        default="recipe",
        metadata={
            "help": "fast only: 'recipe' (train.gradient_checkpointing), 'off', 'selective' (recompute cheap "
            "ops only) or 'full'."
        },
    )

    def __post_init__(self) -> None:
        _check(self.mode in SPEED_MODES, f"speed.mode={self.mode!r}: use one of {', '.join(SPEED_MODES)}")
        _check(
            self.checkpointing in CHECKPOINTING,
            f"speed.checkpointing={self.checkpointing!r}: use one of {', '.join(CHECKPOINTING)}",
        )
        _check(
            not (self.mode == "reference" and self.checkpointing != "recipe"),
            "speed.checkpointing only applies to speed.mode=fast; "
            "the reference runs the recipe exactly as written",
        )


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "quant": QuantSection,
    "lora": LoraSection,
    "train": TrainSection,
    "predict": PredictSection,
    "speed": SpeedSection,
}


@dataclass
class Recipe:
    name: str = field(default="custom", metadata={"help": "Recipe name, recorded in every version manifest."})
    model: ModelSection = field(default_factory=ModelSection)
    quant: QuantSection = field(default_factory=QuantSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    predict: PredictSection = field(default_factory=PredictSection)
    # Speed paths (speed.py, docs/benchmarks.md): 'fast' by default; the reference recipe says 'reference'.
    speed: SpeedSection = field(default_factory=SpeedSection)

    def __post_init__(self) -> None:
        # Cross-section contradictions; each section validated its own fields already.
        _check(
            not (self.train.method == "kto" and self.train.batch_size < 2),
            "train.method=kto needs train.batch_size >= 2: its KL baseline is estimated within a batch",
        )
        _check(
            not (self.train.precision == "bf16" and self.model.dtype == "float16"),
            "train.precision=bf16 contradicts model.dtype=float16: pick bfloat16 weights or fp32 training",
        )
        # Guessing paths that remake the weights (FP8, dense bf16): fast recipe, 4-bit or plain weights only.
        remade = {
            "predict.matmul=fp8": (self.predict.matmul == "fp8", "predict.matmul=bf16"),
            "predict.dense_weights=on": (self.predict.dense_weights == "on", "predict.dense_weights=off"),
        }
        for setting, (chosen, fix) in remade.items():
            if not chosen:
                continue
            _check(
                self.speed.mode == "fast",
                f"{setting} contradicts speed.mode=reference: the reference recipe guesses exactly as the "
                f"reference did; use speed.mode=fast or {fix}",
            )
            _check(
                self.quant.mode != "8bit",
                f"{setting} contradicts quant.mode=8bit: its weights are made from 4-bit or unquantized "
                f"weights; use quant.mode=4bit or none, or {fix}",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the recipe (resume refuses a changed recipe)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML/CLI value into the field's type; CLI values arrive as strings."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, options[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        (item_type,) = get_args(annotation)
        return [_coerce(v, item_type, key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise RecipeError(f"{key}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{key}: expected a number, got {value!r}") from None
        if annotation is int:
            if not number.is_integer():
                raise RecipeError(f"{key}: expected a whole number, got {value!r}")
            return int(number)
        return number
    if annotation is str:
        if not isinstance(value, str | int | float):
            raise RecipeError(f"{key}: expected text, got {value!r}")
        return str(value)
    return value


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RecipeError(f"unknown setting {section}.{unknown[0]}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and validate a Recipe from nested plain data (a parsed YAML file)."""
    unknown = sorted(set(data) - {"name", *SECTIONS})
    if unknown:
        raise RecipeError(f"unknown recipe section {unknown[0]!r}; valid: name, {', '.join(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise RecipeError(f"recipe section {name!r} must be a mapping, got {values!r}")
        sections[name] = _build_section(cls, values, name)
    return Recipe(name=str(data.get("name", "custom")), **sections)


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):  # nested form: {"train": {"max_steps": 5}}
            for sub, subvalue in value.items():
                merged = _merge(merged, {f"{key}.{sub}": subvalue})
            continue
        section, _, name = key.partition(".")
        if not name:
            if section != "name":
                raise RecipeError(f"override {key!r}: write it as section.field, e.g. train.max_steps")
            merged["name"] = value
            continue
        merged.setdefault(section, {})
        merged[section][name] = value
    return merged


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load a packaged recipe by name (``tiny``) or a YAML file by path, then apply overrides.

    Overrides use dotted keys (``{"train.learning_rate": "2e-4"}``) or nested dicts; strings are coerced
    to the field's type, so CLI values can be passed through unchanged.
    """
    path = Path(name_or_path)
    # A bare name ("tiny", "llama-3.1-8b-qlora": dots are part of names) is a packaged recipe.
    if len(path.parts) == 1 and path.suffix not in (".yaml", ".yml"):
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RecipeError(f"recipe {name_or_path!r} not found; packaged: {', '.join(available_recipes())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping")
    data.setdefault("name", path.stem)
    return recipe_from_dict(_merge(data, overrides or {}))


def recipe_fields() -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every setting: the CLI turns each into a flag."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", f.default, f.metadata.get("help", "")))
    return rows
