"""Model version folders (DESIGN.md §6): safetensors adapter + manifest with a sha256 per file.

Library: ``write_version(adapter_dir, dest, manifest={...})``, ``read_version(dest)``,
``archive_version(dest, "v3.tar")``.

A version is immutable and self-describing. It is written to a temporary folder next to its destination
and renamed into place only when every file and the manifest are on disk, so a reader never sees a
half-written version. Reading refuses pickle-based weights (``.bin``/``.pt``/``.pkl`` or any file whose
first bytes are a pickle or zip header) by looking at names and bytes only: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "priceloop-version/1"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
# Text formats and safetensors only; everything else is refused rather than guessed about.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
_CHUNK = 1 << 20


class ArtifactError(ValueError):
    """A version folder that must not be used: unsafe file, missing file or checksum mismatch."""


@dataclass
class VersionInfo:
    path: Path
    manifest: dict[str, Any]
    files: dict[str, str]  # name -> sha256
    size: int

    @property
    def adapter_sha256(self) -> str:
        return self.files["adapter_model.safetensors"]


@dataclass
class ArchiveInfo:
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_pickle(head: bytes) -> bool:
    # Pickle protocols 2-5 start with PROTO (0x80) + version; torch.save writes a zip holding data.pkl.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _check_safetensors_header(path: Path) -> None:
    """A safetensors file begins with a little-endian u64 header length and a JSON header."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ArtifactError(f"{path.name}: too short to be safetensors")
        (length,) = struct.unpack("<Q", raw)
        if length > min(100_000_000, path.stat().st_size - 8):
            raise ArtifactError(f"{path.name}: not a safetensors file (bad header length)")
        try:
            json.loads(fh.read(length))
        except ValueError:
            raise ArtifactError(f"{path.name}: not a safetensors file (header is not JSON)") from None


def check_file_is_safe(path: Path) -> None:
    """Refuse a file by name and leading bytes; never opens it with a deserializer that runs code."""
    name = path.name
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(f"{name}: only plain files belong in a version folder")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ArtifactError(f"{name}: pickle-based weights are refused; save with safetensors")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise ArtifactError(f"{name}: unexpected file type; a version holds {', '.join(ALLOWED_SUFFIXES)}")
    if name.endswith(".safetensors"):
        _check_safetensors_header(path)
        return
    with open(path, "rb") as fh:
        head = fh.read(8)
    if _looks_like_pickle(head):
        raise ArtifactError(f"{name}: contains pickle/zip data under a text name; refused")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_version(
    adapter_dir: str | Path,
    dest_dir: str | Path,
    *,
    manifest: dict[str, Any],
    include_tokenizer: bool = False,
) -> VersionInfo:
    """Copy an adapter into a new version folder with a checksummed manifest, atomically.

    ``manifest`` carries the caller's facts (base model id and revision, recipe, hyperparameters, dataset
    fingerprint, metrics); ``files``, ``format`` and ``created`` are added here. Tokenizer files are copied
    when ``include_tokenizer`` (the tokenizer differs from the base's). Refuses to overwrite a version.
    """
    adapter_dir, dest_dir = Path(adapter_dir), Path(dest_dir)
    if dest_dir.exists():
        raise ArtifactError(f"{dest_dir} already exists: versions are immutable, pick a new folder")
    for child in adapter_dir.iterdir():
        if child.name.lower().endswith(PICKLE_SUFFIXES):
            raise ArtifactError(
                f"{child}: pickle-based weights are refused; save the adapter with safetensors"
            )
    names = list(ADAPTER_FILES)
    missing = [n for n in names if not (adapter_dir / n).is_file()]
    if missing:
        raise ArtifactError(f"{adapter_dir} lacks {', '.join(missing)}: not a safetensors LoRA adapter")
    if include_tokenizer:
        names += [n for n in TOKENIZER_FILES if (adapter_dir / n).is_file()]
    reserved = {"files", "format", "created"} & set(manifest)
    if reserved:
        raise ArtifactError(f"manifest keys {sorted(reserved)} are written by write_version; leave them out")
    for name in names:
        check_file_is_safe(adapter_dir / name)

    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.tmp-", dir=dest_dir.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name in names:
            shutil.copyfile(adapter_dir / name, tmp / name)
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
            files[name] = {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
        full = {
            **manifest,
            "format": FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
        }
        _write_file(tmp / MANIFEST, json.dumps(full, indent=2, sort_keys=True).encode())
        _fsync_dir(tmp)
        os.rename(tmp, dest_dir)  # atomic on one filesystem; fails if dest_dir appeared meanwhile
        _fsync_dir(dest_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_version(dest_dir)


def read_version(path: str | Path) -> VersionInfo:
    """Validate a version folder and return its manifest. Raises ``ArtifactError`` on anything unsafe.

    Checks, in order: every file is an allowed type (pickles refused by name and bytes, unopened), the
    manifest parses, the files on disk are exactly those listed, and every sha256 matches.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a version folder")
    present = sorted(p.name for p in path.iterdir())
    for name in present:
        check_file_is_safe(path / name)
    if MANIFEST not in present:
        raise ArtifactError(f"{path} has no {MANIFEST}: incomplete or not a version")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        listed: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{path / MANIFEST} is not a valid version manifest") from None
    on_disk = set(present) - {MANIFEST}
    if on_disk != set(listed):
        extra, missing = sorted(on_disk - set(listed)), sorted(set(listed) - on_disk)
        raise ArtifactError(f"{path}: files differ from the manifest (extra {extra}, missing {missing})")
    for name in ADAPTER_FILES:
        if name not in listed:
            raise ArtifactError(f"{path}: manifest lists no {name}")
    hashes = {}
    size = 0
    for name, meta in sorted(listed.items()):
        actual = sha256_file(path / name)
        if actual != meta.get("sha256"):
            raise ArtifactError(f"{path / name}: sha256 {actual} does not match the manifest; refused")
        hashes[name] = actual
        size += (path / name).stat().st_size
    return VersionInfo(path=path, manifest=manifest, files=hashes, size=size)


def archive_version(path: str | Path, out_path: str | Path) -> ArchiveInfo:
    """A deterministic ``.tar`` of a validated version (same bytes for the same version) plus its sha256.

    Members are sorted, owned by root and dated by the manifest, so two archives of one version compare
    equal and a client can verify the download against the sha256 the API lists.
    """
    info = read_version(path)
    out_path = Path(out_path)
    created = info.manifest.get("created")
    mtime = int(datetime.fromisoformat(created).timestamp()) if created else 0
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted([*info.files, MANIFEST]):
            data = (info.path / name).read_bytes()
            member = tarfile.TarInfo(f"{info.path.name}/{name}")
            member.size, member.mtime, member.mode = len(data), mtime, 0o644
            tar.addfile(member, io.BytesIO(data))
    os.replace(tmp, out_path)
    return ArchiveInfo(path=out_path, sha256=sha256_file(out_path), size=out_path.stat().st_size)


def iter_file(path: str | Path, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """Stream a file in chunks (for download responses)."""
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            yield block


def extract_version(archive: str | Path, dest_parent: str | Path) -> VersionInfo:
    """Unpack an archive from ``archive_version`` (plain files only, no paths outside) and validate it."""
    dest_parent = Path(dest_parent)
    with tarfile.open(archive, "r") as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1 or any(not m.isfile() or m.name.count("/") != 1 for m in members):
            raise ArtifactError(f"{archive}: not a version archive (one folder of plain files expected)")
        tar.extractall(dest_parent, filter="data")
    return read_version(dest_parent / tops.pop())
