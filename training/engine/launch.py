"""Multi-process (DDP) training started from one process: the engine CLI under ``torchrun``.

Library: ``train_processes(recipe, Path("sft.jsonl"), Path("runs/r1"), processes=2, base="data/base")``
takes ``trainer.train``'s arguments and returns the same ``TrainResult``. It runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m training.engine train \
        --recipe runs/r1/launch/recipe.yaml --dataset sft.jsonl --out runs/r1 --base data/base \
        --progress-jsonl runs/r1/launch/progress.jsonl --result-json runs/r1/launch/result.json

one process per GPU on CUDA (NCCL), or N CPU processes (gloo) without one, follows the progress file
to call ``progress`` and polls ``should_stop``; a True stops the whole process tree (checkpoints
stay, as with ``train``). Everything the launch writes besides the run folder's own files is in
``<out>/launch/``, including ``torchrun.log`` (every process's output), whose tail a failure quotes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from training.engine.config import Recipe
from training.engine.trainer import ProgressEvent, TrainingCancelled, TrainResult

LAUNCH_DIRNAME = "launch"
_STOP_GRACE_S = 30.0  # torchrun passes SIGTERM on to its processes; after this they are killed
_LOG_TAIL = 4000  # characters of torchrun.log quoted by a failure


class LaunchError(RuntimeError):
    """The processes failed; the message ends with the tail of their log."""


def torchrun_command(
    *,
    processes: int,
    recipe_file: Path,
    dataset_path: Path,
    out_dir: Path,
    base: str | None,
    parent_adapter: Path | None,
    resume: bool,
    progress_file: Path,
    result_file: Path,
    python: str = sys.executable,
) -> list[str]:
    """The command line of an N-process run (``--standalone``: a free local port per run)."""
    if processes < 1:
        raise ValueError(f"processes={processes}: must be at least 1")
    command = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "training.engine",
        "train",
        f"--recipe={recipe_file}",
        f"--dataset={dataset_path}",
        f"--out={out_dir}",
        f"--progress-jsonl={progress_file}",
        f"--result-json={result_file}",
    ]
    if base:
        command.append(f"--base={base}")
    if parent_adapter is not None:
        command.append(f"--parent={parent_adapter}")
    if not resume:
        command.append("--no-resume")
    return command


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launching process dies (a killed worker must not leave a
    headless run writing into a folder that the next attempt resumes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _read_events(stream: IO[str], progress: Callable[[ProgressEvent], None] | None) -> None:
    """Pass on every complete line written since the last call (a partial last line waits)."""
    while True:
        where = stream.tell()
        line = stream.readline()
        if not line.endswith("\n"):
            stream.seek(where)
            return
        if progress is not None:
            progress(ProgressEvent(**json.loads(line)))


def _log_tail(log_file: Path) -> str:
    text = log_file.read_text(encoding="utf-8", errors="replace")
    return text[-_LOG_TAIL:]


def train_processes(
    recipe: Recipe,
    dataset_path: Path,
    out_dir: Path,
    *,
    processes: int,
    base: str | None = None,
    parent_adapter: Path | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 0.5,
    env: dict[str, str] | None = None,
) -> TrainResult:
    """``trainer.train`` in ``processes`` DDP processes; see the module docstring.

    ``should_stop`` is polled every ``poll_s`` seconds while the processes run (also while they load
    the model), so a caller's lease stays renewed. ``env`` adds variables to the processes' environment.
    """
    out_dir = Path(out_dir)
    launch_dir = out_dir / LAUNCH_DIRNAME
    launch_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = launch_dir / "recipe.yaml"
    # JSON is YAML; the recipe is written whole, so the processes train exactly this one (same sha256).
    recipe_file.write_text(json.dumps(recipe.to_dict(), indent=2))
    progress_file, result_file, log_file = (
        launch_dir / "progress.jsonl",
        launch_dir / "result.json",
        launch_dir / "torchrun.log",
    )
    for stale in (progress_file, result_file):
        stale.unlink(missing_ok=True)
    progress_file.touch()
    command = torchrun_command(
        processes=processes,
        recipe_file=recipe_file,
        dataset_path=Path(dataset_path),
        out_dir=out_dir,
        base=base,
        parent_adapter=Path(parent_adapter) if parent_adapter else None,
        resume=resume,
        progress_file=progress_file,
        result_file=result_file,
    )
    child_env = {**os.environ, **(env or {})}
    # The engine package must be importable in the processes wherever the caller runs from.
    package_root = str(Path(__file__).resolve().parents[2])
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, child_env.get("PYTHONPATH")) if p)
    with open(log_file, "wb") as log, open(progress_file, encoding="utf-8") as events:
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # one process group: a stop reaches torchrun and every rank
            preexec_fn=_die_with_parent,  # sets the parent-death signal only
        )
        try:
            while child.poll() is None:
                _read_events(events, progress)
                if should_stop is not None and should_stop():
                    _stop(child)
                    raise TrainingCancelled("stopped on request; checkpoints stay for a resume")
                time.sleep(poll_s)
            _read_events(events, progress)
        finally:
            _stop(child)
    if child.returncode != 0 or not result_file.is_file():
        raise LaunchError(
            f"{processes}-process training exited with status {child.returncode}; "
            f"the end of {log_file}:\n{_log_tail(log_file)}"
        )
    data: dict[str, Any] = json.loads(result_file.read_text())
    return TrainResult.from_dict(data)
