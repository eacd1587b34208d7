"""The engine recipe a run uses, and the predictor settings a version is scored with.

Each version is scored with its own settings, recorded in its manifest when it was registered
(``version_predictor_settings``): quantization and prompt style are part of the model, so a version
trained 8-bit is scored 8-bit, and changing ``RETRAIN_RECIPE_OVERRIDES`` later does not re-score old
versions differently. Versions registered before their settings were recorded fall back to the
manifest's recipe, then to the global settings. All versions are scored on the same test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def recipe_overrides() -> dict[str, Any]:
    """``RETRAIN_RECIPE_OVERRIDES`` as a dict of recipe sections, e.g. ``{"quant": {"mode": "4bit"}}``."""
    raw = (settings.RETRAIN_RECIPE_OVERRIDES or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"RETRAIN_RECIPE_OVERRIDES={raw!r} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImproperlyConfigured("RETRAIN_RECIPE_OVERRIDES must be a JSON object of recipe sections.")
    return value


def run_recipe(*, recipe_name: str, method: str, base_model: str, overrides: dict[str, Any]) -> Any:
    """The engine ``Recipe`` of a run: the named recipe, the configured overrides, the run's method,
    base and own overrides (later wins)."""
    from training.engine.config import load_recipe

    merged = _merge(recipe_overrides(), {"train": {"method": method}, "model": {"base": base_model}})
    merged = _merge(merged, overrides or {})
    return load_recipe(recipe_name, merged)


def predictor_settings() -> dict[str, Any]:
    """Plain-JSON predictor settings of the global recipe (for versions that recorded none)."""
    from training.engine.config import load_recipe

    return predictor_settings_of(
        load_recipe(settings.RETRAIN_RECIPE, recipe_overrides()), settings.RETRAIN_RECIPE
    )


def version_predictor_settings(version: Any) -> dict[str, Any]:
    """The settings ``version`` is always scored (and guesses) with: those recorded at registration."""
    from training.engine.config import RecipeError, recipe_from_dict

    manifest = version.manifest or {}
    recorded = manifest.get("predictor")
    if isinstance(recorded, dict) and recorded:
        return dict(recorded)
    recipe = manifest.get("recipe")
    if isinstance(recipe, dict) and recipe:
        try:
            return predictor_settings_of(
                recipe_from_dict(recipe), manifest.get("recipe_name") or recipe["name"]
            )
        except (RecipeError, KeyError, TypeError):
            pass
    return predictor_settings()


def predictor_settings_of(recipe: Any, recipe_name: str) -> dict[str, Any]:
    """Plain-JSON predictor settings of an engine recipe (part of every evaluation's fingerprint)."""
    out: dict[str, Any] = {
        "recipe": recipe_name,
        "quantization": recipe.quant.mode,
        "k": recipe.predict.k,
        "batch_size": recipe.predict.batch_size,
        "max_length": recipe.train.max_length,
        "max_new_tokens": recipe.predict.max_new_tokens,
        "prompt_style": recipe.model.prompt_style,
        "dtype": recipe.model.dtype,
    }
    # Named only when it is not the default, so the fingerprints of bf16 evaluations stay as they were;
    # FP8 prices differ from bf16 ones, so champion and candidate are then scored (and cached) apart.
    if recipe.predict.matmul != "bf16":
        out["matmul"] = recipe.predict.matmul
    # Dense weights round the folded adapter once more, so they too are scored apart. Only an explicit
    # 'on' counts here: 'auto' depends on the free GPU memory at run time, and a gate needs one setting.
    if recipe.predict.dense_weights == "on":
        out["dense_weights"] = "on"
    # Likewise named only when it is not the reference's top-k mean.
    if recipe.predict.estimate != "topk":
        out["estimate"] = recipe.predict.estimate
    return out


def make_predictor(*, base_model: str, adapter_dir: Path | None, predictor: dict[str, Any]) -> Any:
    """A predictor for ``base_model`` (+ adapter) with exactly the given settings."""
    from training.engine.predictor import Predictor

    return Predictor(
        base_model,
        adapter_dir,
        quantization=predictor["quantization"],
        k=predictor["k"],
        batch_size=predictor["batch_size"],
        prompt_style=predictor["prompt_style"],
        max_length=predictor["max_length"],
        max_new_tokens=predictor["max_new_tokens"],
        dtype=predictor["dtype"],
        matmul=predictor.get("matmul", "bf16"),
        dense_weights=predictor.get("dense_weights", "off"),
        estimate=predictor.get("estimate", "topk"),
    )
