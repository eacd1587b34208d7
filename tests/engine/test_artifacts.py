"""Version folders: exact file set, identical predictions after reload, refusal of pickles and tampering."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from training.engine.artifacts import (
    ArtifactError,
    archive_version,
    extract_version,
    read_version,
    stream_tar,
    tar_digest,
    write_version,
)
from training.engine.predictor import Predictor

MANIFEST = {"base_model": "tiny", "base_revision": None, "recipe": {"name": "tiny"}, "metrics": {"mae": 1.0}}


@pytest.fixture
def version(tmp_path: Path, sft_run: Any) -> Path:
    write_version(sft_run.result.adapter_dir, tmp_path / "v1", manifest=MANIFEST)
    return tmp_path / "v1"


class _Boom:
    """Unpickling this creates a marker file: proof that a loader executed the pickle."""

    marker: str = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def _evil_pickle(path: Path, marker: Path) -> None:
    boom = _Boom()
    boom.marker = str(marker)
    path.write_bytes(pickle.dumps(boom, protocol=4))


@pytest.mark.slow
def test_it_writes_exactly_the_adapter_and_a_checksummed_manifest(version: Path, sft_run: Any) -> None:
    assert sorted(os.listdir(version)) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    ]
    info = read_version(version)
    assert info.manifest["base_model"] == "tiny"
    assert info.manifest["metrics"] == {"mae": 1.0}
    assert set(info.manifest["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert info.adapter_sha256 == info.manifest["files"]["adapter_model.safetensors"]["sha256"]
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".")]  # no temp left behind
    with pytest.raises(ArtifactError, match="immutable"):
        write_version(sft_run.result.adapter_dir, version, manifest=MANIFEST)


@pytest.mark.slow
def test_a_reloaded_version_predicts_exactly_the_same(
    version: Path, tiny_base: Path, sft_run: Any, test_items: list[dict[str, Any]]
) -> None:
    texts = [i["text"] for i in test_items[:5]]
    first = Predictor(tiny_base, sft_run.result.adapter_dir, max_length=96).predict(texts)
    again = Predictor(tiny_base, read_version(version).path, max_length=96).predict(texts)
    assert [(p.price, p.topk, p.entropy) for p in first] == [(p.price, p.topk, p.entropy) for p in again]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evil.pkl", "adapter_model.bin", "optimizer.pt", "notes.json"])
def test_it_refuses_a_pickle_without_unpickling_it(version: Path, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    _evil_pickle(version / name, marker)
    with pytest.raises(ArtifactError, match="pickle"):
        read_version(version)
    assert not marker.exists()
    # The proof is sound: this file does run code when unpickled.
    pickle.loads((version / name).read_bytes())  # noqa: S301 - deliberately, after the check
    assert marker.exists()


@pytest.mark.slow
def test_it_refuses_an_adapter_folder_with_pickled_weights(sft_run: Any, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for child in sft_run.result.adapter_dir.iterdir():
        (adapter / child.name).write_bytes(child.read_bytes())
    _evil_pickle(adapter / "adapter_model.bin", tmp_path / "pwned")
    with pytest.raises(ArtifactError, match="pickle"):
        write_version(adapter, tmp_path / "v9", manifest=MANIFEST)
    assert not (tmp_path / "v9").exists()
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_it_refuses_a_checksum_mismatch(version: Path) -> None:
    weights = version / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        read_version(version)


@pytest.mark.slow
def test_it_refuses_files_the_manifest_does_not_list(version: Path) -> None:
    (version / "extra.json").write_text("{}")
    with pytest.raises(ArtifactError, match="extra"):
        read_version(version)
    (version / "extra.json").unlink()
    (version / "adapter_config.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        read_version(version)


@pytest.mark.slow
def test_it_archives_deterministically_and_round_trips(version: Path, tmp_path: Path) -> None:
    first = archive_version(version, tmp_path / "a.tar")
    second = archive_version(version, tmp_path / "b.tar")
    assert first.sha256 == second.sha256
    # One format: the archive file is the download's stream, byte for byte (the registry's sha256).
    assert (first.sha256, first.size) == tar_digest(version, prefix=version.name)
    assert first.path.read_bytes() == b"".join(stream_tar(version, prefix=version.name))
    unpacked = extract_version(first.path, tmp_path / "out")
    assert unpacked.files == read_version(version).files


@pytest.mark.slow
def test_loading_a_tampered_version_for_prediction_is_refused(version: Path, tiny_base: Path) -> None:
    (version / "adapter_config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="sha256"):
        Predictor(tiny_base, version)
