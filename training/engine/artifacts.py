"""Model version folders (DESIGN.md §6): safetensors adapter + manifest with a sha256 per file.

Library: ``write_version(adapter_dir, dest, manifest={...})``, ``read_version(dest)``,
``archive_version(dest, "v3.tar")`` (the one archive format: ``stream_tar``, also what downloads send).

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
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

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


def sha256_stream(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := fh.read(_CHUNK):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def _looks_like_pickle(head: bytes) -> bool:
    # Pickle protocols 2-5 start with PROTO (0x80) + version; torch.save writes a zip holding data.pkl.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _check_safetensors_header(name: str, fh: BinaryIO, size: int) -> None:
    """A safetensors file begins with a little-endian u64 header length and a JSON header."""
    raw = fh.read(8)
    if len(raw) != 8:
        raise ArtifactError(f"{name}: too short to be safetensors")
    (length,) = struct.unpack("<Q", raw)
    if length > min(100_000_000, size - 8):
        raise ArtifactError(f"{name}: not a safetensors file (bad header length)")
    try:
        json.loads(fh.read(length))
    except ValueError:
        raise ArtifactError(f"{name}: not a safetensors file (header is not JSON)") from None


def check_stream_is_safe(name: str, fh: BinaryIO, size: int) -> None:
    """Refuse a version file by its name and leading bytes, read from ``fh`` (at its start) whatever holds
    it (a local file, an object in a store); never opens it with a deserializer that runs code."""
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ArtifactError(f"{name}: pickle-based weights are refused; save with safetensors")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise ArtifactError(f"{name}: unexpected file type; a version holds {', '.join(ALLOWED_SUFFIXES)}")
    if name.endswith(".safetensors"):
        _check_safetensors_header(name, fh, size)
        return
    if _looks_like_pickle(fh.read(8)):
        raise ArtifactError(f"{name}: contains pickle/zip data under a text name; refused")


def check_file_is_safe(path: Path) -> None:
    """``check_stream_is_safe`` for a local file, which must be a plain file (no link)."""
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(f"{path.name}: only plain files belong in a version folder")
    with open(path, "rb") as fh:
        check_stream_is_safe(path.name, fh, path.stat().st_size)


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
    """Validate a version folder and return its manifest. Raises ``ArtifactError`` on anything unsafe."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a version folder")
    for child in path.iterdir():
        if child.is_symlink() or not child.is_file():
            raise ArtifactError(f"{child.name}: only plain files belong in a version folder")
    return verify_version_files(
        where=str(path),
        names=[p.name for p in path.iterdir()],
        open_file=lambda name: open(path / name, "rb"),
        size_of=lambda name: (path / name).stat().st_size,
        path=path,
    )


def verify_version_files(
    *,
    where: str,
    names: list[str],
    open_file: Callable[[str], AbstractContextManager[BinaryIO]],
    size_of: Callable[[str], int],
    path: Path | None = None,
) -> VersionInfo:
    """The checks of a version's files wherever they are kept (a folder, an object store's prefix).

    In order: every file is an allowed type (pickles refused by name and bytes, unopened), the manifest
    parses, the files present are exactly those listed, and every sha256 matches.
    """
    present = sorted(names)
    sizes = {name: size_of(name) for name in present}
    actual: dict[str, str] = {}
    manifest_bytes = b""
    for name in present:  # one read of each file: its leading bytes checked, then all of it hashed
        with open_file(name) as fh:
            check_stream_is_safe(name, fh, sizes[name])
            fh.seek(0)
            if name == MANIFEST:
                manifest_bytes = fh.read()
            else:
                actual[name] = sha256_stream(fh)
    if MANIFEST not in present:
        raise ArtifactError(f"{where} has no {MANIFEST}: incomplete or not a version")
    try:
        manifest = json.loads(manifest_bytes)
        listed: dict[str, dict[str, Any]] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{where}/{MANIFEST} is not a valid version manifest") from None
    on_disk = set(present) - {MANIFEST}
    if on_disk != set(listed):
        extra, missing = sorted(on_disk - set(listed)), sorted(set(listed) - on_disk)
        raise ArtifactError(f"{where}: files differ from the manifest (extra {extra}, missing {missing})")
    for name in ADAPTER_FILES:
        if name not in listed:
            raise ArtifactError(f"{where}: manifest lists no {name}")
    for name, meta in sorted(listed.items()):
        if actual[name] != meta.get("sha256"):
            raise ArtifactError(f"{where}/{name}: sha256 {actual[name]} does not match the manifest; refused")
    hashes = {name: actual[name] for name in sorted(listed)}
    size = sum(sizes[name] for name in listed)
    return VersionInfo(path=path or Path(where), manifest=manifest, files=hashes, size=size)


# --- the archive: one deterministic tar format for downloads, registration checksums and files -------


@dataclass(frozen=True)
class TarMember:
    """One file of an archive: its name inside the archive, its size, and how to read it."""

    name: str
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


def stream_tar_members(members: Iterable[TarMember]) -> Iterator[bytes]:
    """Yield a tar archive of ``members`` in name order, with fixed metadata (mtime 0, root, 0644).

    Same files → same bytes → same sha256, whether they are read from a folder or an object store; the
    registry stores this sha256 and the download sends it; never a whole archive in memory.
    """
    for member in sorted(members, key=lambda m: m.name):
        yield _tar_header(member.name, member.size)
        written = 0
        with member.open() as handle:
            while chunk := handle.read(_CHUNK):
                written += len(chunk)
                yield chunk
        if written != member.size:
            raise ArtifactError(
                f"{member.name}: {written} bytes read, {member.size} expected; changed meanwhile"
            )
        padding = (-member.size) % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


def _folder_members(folder: Path, prefix: str) -> list[TarMember]:
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    return [
        TarMember(
            name=f"{prefix}/{p.relative_to(folder).as_posix()}",
            size=p.stat().st_size,
            open=lambda p=p: open(p, "rb"),  # type: ignore[misc]
        )
        for p in files
    ]


def stream_tar(folder: str | Path, *, prefix: str) -> Iterator[bytes]:
    """``stream_tar_members`` of a folder's files, under ``prefix/`` (hidden files left out)."""
    return stream_tar_members(_folder_members(Path(folder), prefix))


def tar_digest(folder: str | Path, *, prefix: str) -> tuple[str, int]:
    """sha256 and size of ``stream_tar(folder, prefix=prefix)``."""
    digest = hashlib.sha256()
    size = 0
    for chunk in stream_tar(folder, prefix=prefix):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def read_tar(data: bytes) -> dict[str, bytes]:
    """The files of an archive made by ``stream_tar`` (for tests and clients)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            if handle is not None:
                out[member.name] = handle.read()
    return out


def archive_version(path: str | Path, out_path: str | Path, *, prefix: str | None = None) -> ArchiveInfo:
    """The version as a ``.tar`` file: the download's archive (``stream_tar``), same bytes for the same
    version, under ``prefix/`` (default: the folder's name); validated first."""
    info = read_version(path)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with open(tmp, "wb") as fh:
        for chunk in stream_tar(info.path, prefix=prefix or info.path.name):
            fh.write(chunk)
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
