"""Small builders for registry rows with real files (fake tiny weights), for API and page tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from training.engine.artifacts import tar_digest, write_version
from training.models import Evaluation, ModelVersion, VersionStatus


def metrics(mae: float, hit_rate: float = 0.5, n: int = 10) -> dict[str, Any]:
    return {
        "n": n,
        "mae": mae,
        "rmsle": 0.5,
        "hit_rate": hit_rate,
        "counts": {"green": 5, "orange": 3, "red": 2},
        "mae_ci95": [mae * 0.8, mae * 1.2],
        "n_boot": 1000,
        "seed": 0,
    }


def make_version(
    root: Path, number: int, *, status: str = VersionStatus.ARCHIVED, mae: float = 50.0, evaluate: bool = True
) -> ModelVersion:
    """A registered version whose folder verifies (tiny fake adapter), optionally with an evaluation."""
    adapter = root / f"adapter-{number}"
    adapter.mkdir(parents=True, exist_ok=True)
    save_file(
        {"lora_A": np.full((2, 2), number, dtype=np.float32)}, str(adapter / "adapter_model.safetensors")
    )
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 2, "peft_type": "LORA"}))
    folder = root / "versions" / f"v{number}"
    write_version(adapter, folder, manifest={"base_model": "tiny-base", "method": "sft"})
    sha256, size = tar_digest(folder, prefix=f"v{number}")
    version = ModelVersion.objects.create(
        number=number,
        base_model="tiny-base",
        status=status,
        artifact_path=f"versions/v{number}",
        artifact_sha256=sha256,
        artifact_size=size,
        manifest=json.loads((folder / "manifest.json").read_text()),
        metrics=metrics(mae),
    )
    if evaluate:
        Evaluation.objects.create(
            version=version,
            split_fingerprint="f" * 64,
            product_ids=["a", "b"],
            truths=[10.0, 20.0],
            guesses=[12.0, 25.0],
            metrics=metrics(mae),
        )
    return version
