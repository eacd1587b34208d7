"""The training settings a reviewer chooses per run at approval, from an allowed list.

Each choice becomes a recipe override on ``TrainingRun.hyperparameters`` (recipe sections, merged over
``RETRAIN_RECIPE`` + ``RETRAIN_RECIPE_OVERRIDES`` by ``training.recipes.run_recipe``); the version
records the resolved recipe in its manifest and is always scored with it (``version_predictor_settings``).
Validated before the run exists: a value outside the list, or a combination the engine refuses, is a
``RunSettingsInvalid`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from training.exceptions import RunSettingsInvalid
from training.models import Recipe

# quantization choice → recipe sections (bf16: no bitsandbytes quantization, bfloat16 weights on GPU)
QUANTIZATIONS: dict[str, dict[str, Any]] = {
    "4bit": {"quant": {"mode": "4bit"}},
    "8bit": {"quant": {"mode": "8bit"}},
    "bf16": {"quant": {"mode": "none"}, "model": {"dtype": "bfloat16"}},
}
QUANTIZATION_LABELS = {"4bit": "4-bit (QLoRA)", "8bit": "8-bit", "bf16": "bf16 (not quantized)"}
PROMPT_STYLES = ("base", "chat")
LORA_RANKS = (4, 8, 16, 32, 64, 128)
EPOCHS_MAX = 50.0
LEARNING_RATE_RANGE = (1e-6, 1e-1)
FIELDS = ("kind", "quantization", "prompt_style", "epochs", "learning_rate", "lora_rank")


@dataclass(frozen=True)
class RunSettings:
    """A reviewer's choices; ``None`` keeps the recipe's own value."""

    kind: str | None = None
    quantization: str | None = None
    prompt_style: str | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    lora_rank: int | None = None

    def chosen(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def overrides(self) -> dict[str, Any]:
        """The recipe sections these choices set (``kind`` is the run's ``recipe`` column instead)."""
        out: dict[str, Any] = {}

        def put(section: str, values: dict[str, Any]) -> None:
            out.setdefault(section, {}).update(values)

        if self.quantization is not None:
            for section, values in QUANTIZATIONS[self.quantization].items():
                put(section, values)
        if self.prompt_style is not None:
            put("model", {"prompt_style": self.prompt_style})
        if self.epochs is not None:
            # max_steps wins over epochs in the engine: a chosen number of epochs turns it off.
            put("train", {"epochs": self.epochs, "max_steps": -1})
        if self.learning_rate is not None:
            put("train", {"learning_rate": self.learning_rate})
        if self.lora_rank is not None:
            put("lora", {"r": self.lora_rank, "alpha": 2 * self.lora_rank})
        return out


def choices() -> dict[str, Any]:
    """The allowed values, for the approval form."""
    low, high = LEARNING_RATE_RANGE
    return {
        "kinds": Recipe.choices,
        "quantizations": list(QUANTIZATION_LABELS.items()),
        "prompt_styles": PROMPT_STYLES,
        "lora_ranks": LORA_RANKS,
        "epochs_max": EPOCHS_MAX,
        "learning_rate_min": low,
        "learning_rate_max": high,
    }


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(data: Mapping[str, Any], name: str, low: float, high: float, hint: str) -> float | None:
    raw = data.get(name)
    if _blank(raw):
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise RunSettingsInvalid(name, f"{name}={raw!r} is not a number; {hint}") from None
    if not (value == value and low <= value <= high):
        raise RunSettingsInvalid(name, f"{name}={raw!r} is outside the allowed range; {hint}")
    return value


def run_settings_parse(data: Mapping[str, Any]) -> RunSettings:
    """``RunSettings`` from form or JSON fields (blank = the recipe's value); ``RunSettingsInvalid`` names
    the first bad field and the allowed values."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RunSettingsInvalid(
            unknown[0], f"{unknown[0]!r} is not a training setting; use {', '.join(FIELDS)}."
        )

    def choice(name: str, allowed: tuple[str, ...]) -> str | None:
        raw = data.get(name)
        if _blank(raw):
            return None
        value = str(raw).strip()
        if value not in allowed:
            raise RunSettingsInvalid(
                name, f"{name}={value!r} is not allowed; use one of {', '.join(allowed)}."
            )
        return value

    kind = choice("kind", tuple(Recipe.values))
    quantization = choice("quantization", tuple(QUANTIZATIONS))
    prompt_style = choice("prompt_style", PROMPT_STYLES)
    epochs = _number(data, "epochs", 0.01, EPOCHS_MAX, f"use a number of passes from 0.01 to {EPOCHS_MAX:g}.")
    low, high = LEARNING_RATE_RANGE
    learning_rate = _number(
        data, "learning_rate", low, high, f"use a rate from {low:g} to {high:g}, e.g. 2e-4."
    )
    rank = None
    raw_rank = data.get("lora_rank")
    if not _blank(raw_rank):
        allowed = ", ".join(map(str, LORA_RANKS))
        try:
            rank = int(str(raw_rank).strip())
        except ValueError:
            raise RunSettingsInvalid(
                "lora_rank", f"lora_rank={raw_rank!r} is not allowed; use one of {allowed}."
            ) from None
        if rank not in LORA_RANKS:
            raise RunSettingsInvalid(
                "lora_rank", f"lora_rank={raw_rank!r} is not allowed; use one of {allowed}."
            )
    return RunSettings(kind, quantization, prompt_style, epochs, learning_rate, rank)


_FIELD_OF_SECTION = {
    "quant": "quantization",
    "model.dtype": "quantization",
    "model.prompt_style": "prompt_style",
    "train.epochs": "epochs",
    "train.max_steps": "epochs",
    "train.learning_rate": "learning_rate",
    "lora": "lora_rank",
    "predict.matmul": "quantization",
    "train.method": "kind",
}


def run_settings_check(run_settings: RunSettings, *, method: str) -> Any:
    """The engine recipe the run will train with (refused combinations raise ``RunSettingsInvalid``)."""
    from training.engine.config import RecipeError
    from training.recipes import run_recipe

    try:
        recipe = run_recipe(
            recipe_name=settings.RETRAIN_RECIPE,
            method=method,
            base_model=settings.BASE_MODEL,
            overrides=run_settings.overrides(),
        )
    except RecipeError as exc:
        message = str(exc)
        field = next((f for key, f in _FIELD_OF_SECTION.items() if key in message), "settings")
        raise RunSettingsInvalid(field, f"these settings cannot train together: {message}") from None
    if recipe.model.prompt_style == "chat" and not _has_chat_template(settings.BASE_MODEL):
        raise RunSettingsInvalid(
            "prompt_style",
            f"prompt_style='chat' needs a tokenizer with a chat template; the base {settings.BASE_MODEL!r} "
            "has none. Use prompt_style='base'.",
        )
    return recipe


def _has_chat_template(base_model: str) -> bool:
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except (OSError, ValueError):
        return True  # not readable here (a hub id on a web node): the dataset step reports it
    return bool(getattr(tokenizer, "chat_template", None))


def settings_summary(recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the leaderboard shows of a version's resolved recipe (its manifest's ``recipe``)."""
    if not recipe:
        return {}
    model, quant, train, lora = (dict(recipe.get(k) or {}) for k in ("model", "quant", "train", "lora"))
    mode = quant.get("mode")
    # Not quantized: named by the weights' dtype (bf16 as chosen at approval; the tiny CPU recipe's float32).
    dtype = str(model.get("dtype") or "bfloat16")
    unquantized = "bf16" if dtype == "bfloat16" else dtype
    quantization = {"4bit": "4bit", "8bit": "8bit"}.get(
        str(mode), unquantized if mode == "none" else str(mode)
    )
    max_steps = train.get("max_steps", -1)
    return {
        "kind": train.get("method"),
        "quantization": quantization,
        "prompt_style": model.get("prompt_style"),
        "epochs": train.get("epochs") if not max_steps or max_steps <= 0 else None,
        "max_steps": max_steps if max_steps and max_steps > 0 else None,
        "learning_rate": train.get("learning_rate"),
        "lora_rank": lora.get("r"),
    }
