"""DDP on CPU: the engine CLI under ``torchrun --nproc_per_node 2`` (gloo) on the tiny base.

Only the main process may write the run folder (both once wrote the same ``.adapter.tmp`` and one
crashed); every process must end with the same result. Also: ``launch.train_processes`` stops the whole
process tree when asked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from training.engine.config import Recipe, load_recipe
from training.engine.launch import torchrun_command, train_processes
from training.engine.trainer import ProgressEvent, TrainingCancelled

REPO = Path(__file__).resolve().parents[2]


def _torchrun_train(
    tiny_base: Path, dataset: Path, out: Path, logs: Path, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        f"--log-dir={logs}",
        "--redirects=1",  # each process's stdout to its own file: both print their result
        "-m",
        "training.engine",
        "train",
        "--recipe=tiny",
        "--train.max_steps=8",  # the tests' tiny_recipe: eight steps
        f"--base={tiny_base}",
        f"--dataset={dataset}",
        f"--out={out}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the tiny recipe: soft price targets, TRL's own loss path
        # The plain completion loss: the fast path's own head on host-made answer positions
        # (speed.DeferredStepMetrics), its hidden states taken through the DDP wrapper.
        {"train.price_sigma": 0.0},
    ],
    ids=["price-loss", "fast-head"],
)
def test_two_processes_train_once_and_save_one_complete_run_folder(
    tmp_path: Path, tiny_base: Path, tiny_recipe: Recipe, datasets_dir: Path, overrides: dict[str, float]
) -> None:
    out = tmp_path / "run"
    extra = tuple(f"--{key}={value}" for key, value in overrides.items())
    done = _torchrun_train(tiny_base, datasets_dir / "sft.jsonl", out, tmp_path / "logs", extra)
    assert done.returncode == 0, done.stderr[-4000:]

    steps, save_steps = tiny_recipe.train.max_steps, tiny_recipe.train.save_steps
    checkpoint_files = {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
        "trainer_state.json",
        "training_args.json",
        "rng_state_0.safetensors",  # one RNG state per process, nothing else twice
        "rng_state_1.safetensors",
    }
    expected = {
        "run.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "checkpoints/README.md",
        *(
            f"checkpoints/checkpoint-{n}/{name}"
            for n in range(save_steps, steps + 1, save_steps)
            for name in checkpoint_files
        ),
    }
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected

    # Every process returned the same result, and it names two processes.
    outputs = sorted((tmp_path / "logs").rglob("stdout.log"))
    assert len(outputs) == 2
    texts = [path.read_text() for path in outputs]
    results = [json.loads(text[text.index("{") :]) for text in texts]  # the CLI prints its summary last
    for result in results:
        result.pop("seconds")
    assert results[0] == results[1]
    assert results[0]["processes"] == 2
    assert results[0]["steps"] == steps
    assert results[0]["adapter_dir"] == str(out / "adapter")
    assert results[0]["final_loss"] > 0
    run = json.loads((out / "run.json").read_text())
    assert (
        results[0]["recipe_sha256"]
        == run["recipe_sha256"]
        == load_recipe("tiny", {"train.max_steps": 8, **overrides}).fingerprint()
    )

    # The adapter loads on the base and training moved it (PEFT starts every lora_B at zero).
    from training.engine.model_io import load_for_inference

    model, _tokenizer = load_for_inference(tiny_base, out / "adapter", device="cpu")
    assert any("lora_" in name for name, _ in model.named_parameters())
    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b
    assert all(t.abs().sum() > 0 for t in lora_b)


@pytest.mark.slow
def test_a_launched_run_stops_with_all_its_processes_on_request(
    tmp_path: Path, tiny_base: Path, tiny_recipe: Recipe, datasets_dir: Path
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    events: list[ProgressEvent] = []
    with pytest.raises(TrainingCancelled):
        train_processes(
            tiny_recipe,
            datasets_dir / "sft.jsonl",
            tmp_path / "run",
            processes=2,
            base=str(tiny_base),
            progress=events.append,
            should_stop=lambda: bool(events),  # once both processes are training
            env={"OMP_NUM_THREADS": "1"},
        )
    assert events[0].step >= 1
    assert events[0].loss is not None
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == []
    assert not (tmp_path / "run" / "adapter").exists()


def test_the_launch_command_runs_the_engine_cli_under_torchrun(tmp_path: Path) -> None:
    options = {
        "recipe_file": tmp_path / "recipe.yaml",
        "dataset_path": tmp_path / "sft.jsonl",
        "out_dir": tmp_path / "run",
        "base": "meta-llama/Llama-3.1-8B",
        "parent_adapter": tmp_path / "v3",
        "resume": True,
        "progress_file": tmp_path / "p.jsonl",
        "result_file": tmp_path / "r.json",
    }
    command = torchrun_command(processes=4, python="python", **options)
    assert command[:6] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
    ]
    assert command[6:8] == ["training.engine", "train"]
    assert f"--parent={tmp_path / 'v3'}" in command
    assert "--no-resume" not in command
    with pytest.raises(ValueError, match="at least 1"):
        torchrun_command(processes=0, **options)
