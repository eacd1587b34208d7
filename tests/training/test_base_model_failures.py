"""A base model that cannot be used fails its run at once, with the cause in one line:

- a hub id that cannot be reached (no network here; with network the hub answers 404) fails within
  seconds, not after the HTTP client's retries or the reaper's 15 minutes;
- a folder holding only pickle weights (``pytorch_model.bin``) is refused by name and never unpickled;
- the engine CLI prints one line (``error: …``), not a traceback.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import NO_GOLD
from training.engine import cli
from training.engine.model_io import BaseModelError, base_ref, load_base_model, load_for_inference
from training.models import RetrainBatch, RunStatus, TrainingRun
from training.services.batches import batch_approve
from training.services.runs import dataset_build

ROOT = Path(__file__).resolve().parents[2]
NO_SUCH = "no-such-org/no-such-model"


class _Boom:
    """Unpickling this creates the marker file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a server with HF_HUB_OFFLINE unset (the test environment may set it)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def pickle_base(tiny_base: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny base's config and tokenizer with a booby-trapped ``pytorch_model.bin`` as its only weights."""
    folder = tmp_path / "pickle-base"
    shutil.copytree(tiny_base, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))
    return folder, marker


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called on a pickle")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.django_db(transaction=True)
def test_it_fails_a_run_on_an_unreachable_hub_id_within_seconds(
    labelled_batch: RetrainBatch, reviewer: Any, hub_online: None, pipeline_settings: Any, monkeypatch: Any
) -> None:
    from training import pipeline

    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)  # the step runs here, below
    pipeline_settings.BASE_MODEL = NO_SUCH
    run = batch_approve(reviewer=reviewer, batch_id=labelled_batch.pk, **NO_GOLD)
    started = time.monotonic()

    assert dataset_build(run_id=run.pk) is None

    elapsed = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(f"dataset refused: base model '{NO_SUCH}' cannot be downloaded: ")
    assert "\n" not in run.error
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert TrainingRun.objects.get(pk=run.pk).finished is not None


def test_it_refuses_a_hub_id_missing_from_the_cache_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        base_ref(NO_SUCH)


def test_it_refuses_a_pickle_only_base_by_name_and_unpickles_nothing(
    pickle_base: tuple[Path, Path], no_torch_load: None
) -> None:
    folder, marker = pickle_base

    for load in (load_base_model, load_for_inference):
        with pytest.raises(BaseModelError) as refused:
            load(folder)
        assert "pytorch_model.bin" in str(refused.value)
        assert "pickle" in str(refused.value)

    assert not marker.exists()


@pytest.mark.django_db(transaction=True)
def test_it_fails_a_run_on_a_pickle_only_base_naming_the_file(
    labelled_batch: RetrainBatch,
    reviewer: Any,
    pipeline_settings: Any,
    pickle_base: tuple[Path, Path],
    no_torch_load: None,
    monkeypatch: Any,
) -> None:
    from training import pipeline

    folder, marker = pickle_base
    monkeypatch.setattr(pipeline, "run_step_send", lambda run_id: None)
    pipeline_settings.BASE_MODEL = str(folder)
    run = batch_approve(reviewer=reviewer, batch_id=labelled_batch.pk, **NO_GOLD)

    assert dataset_build(run_id=run.pk) is None

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "holds only pickle-format weights (pytorch_model.bin)" in run.error
    assert not marker.exists()


def test_the_cli_prints_one_line_for_a_pickle_only_base(
    pickle_base: tuple[Path, Path], no_torch_load: None, capsys: Any
) -> None:
    folder, marker = pickle_base

    assert cli.main(["predict", "--base", str(folder), "--text", "a brass desk lamp"]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"error: base model '{folder}' holds only pickle-format weights (pytorch_model.bin)"
    )
    assert "\n" not in err
    assert not marker.exists()


def test_the_cli_prints_one_line_for_an_unreachable_hub_id_within_seconds(hub_online: None) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.engine",
            "predict",
            "--base",
            NO_SUCH,
            "--text",
            "a brass desk lamp",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "HUB_TIMEOUT_S": "5"},
    )
    elapsed = time.monotonic() - started

    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: base model '{NO_SUCH}' cannot be downloaded: ")
    assert "Traceback" not in done.stderr
    assert elapsed < 60, f"took {elapsed:.1f} s"  # Python + torch start-up included; the hub check is seconds
