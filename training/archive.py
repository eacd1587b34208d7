"""A version folder as a deterministic tar stream: same files → same bytes → same sha256.

The registry stores the archive's sha256 and size when the version is registered; the download
endpoint streams the same bytes (never a whole archive in memory) and sends that sha256 as a header.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


def stream_tar(folder: Path, *, prefix: str) -> Iterator[bytes]:
    """Yield a tar archive of ``folder`` (files under ``prefix/``), sorted and with fixed metadata."""
    folder = Path(folder)
    for path in _files(folder):
        size = path.stat().st_size
        yield _header(f"{prefix}/{path.relative_to(folder).as_posix()}", size)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        padding = (-size) % tarfile.BLOCKSIZE
        if padding:
            yield b"\0" * padding
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


def tar_digest(folder: Path, *, prefix: str) -> tuple[str, int]:
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
