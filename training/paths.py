"""Where the pipeline keeps its files under ``ARTIFACT_ROOT`` (rows store paths relative to it)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def artifact_root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def resolve(relative: str) -> Path:
    """An ARTIFACT_ROOT-relative path as an absolute one; refuses paths that leave the root."""
    root = artifact_root().resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise ValueError(f"{relative!r} points outside ARTIFACT_ROOT")
    return path


def relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(artifact_root().resolve()))


def dataset_dir(run_id: int) -> Path:
    return artifact_root() / "datasets" / f"run-{run_id}"


def run_work_dir(run_id: int) -> Path:
    """Checkpoints and the raw adapter of a run (resume reads it back after a crash)."""
    return artifact_root() / "runs" / f"run-{run_id}"


def version_dir(key: str) -> Path:
    """The final, verified folder of a version (``key`` names the run that made it)."""
    return artifact_root() / "versions" / key


def chart_dir() -> Path:
    return artifact_root() / "charts"
