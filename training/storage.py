"""The artifact store: version folders, datasets and charts kept in ``STORAGES["artifacts"]``.

Training reads and writes local files, so every process works in its own local folder
(``ARTIFACT_ROOT``): a worker stages a file there, then *publishes* it to the store under its
ARTIFACT_ROOT-relative name (the name the rows keep); a process that needs a stored file *fetches* it
into its own folder, verified by checksum. Readers that only stream (the download, the chart pages)
read the store directly.

With the default backend the store is ``ARTIFACT_ROOT`` itself (``ArtifactFileStorage``): publishing a
staged file is a no-op and fetching returns the file in place, so a single machine works as it always
did. With ``ARTIFACTS_BACKEND=s3`` the store is a bucket (django-storages), and the web, CPU and GPU
workers share nothing but the bucket, the database and the broker.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from training import paths
from training.engine.artifacts import (
    MANIFEST,
    ArtifactError,
    TarMember,
    VersionInfo,
    read_version,
    sha256_stream,
    stream_tar_members,
    verify_version_files,
)
from training.engine.datasets import manifest_path_for

logger = logging.getLogger(__name__)


class ArtifactFileStorage(FileSystemStorage):
    """The default store: a folder, ``ARTIFACT_ROOT`` unless ``location`` is given.

    Read at each use rather than once, so that a test (or a command) that moves ARTIFACT_ROOT moves the
    store with it, and staged files stay where they are (publishing them is a no-op).
    """

    @property  # type: ignore[override]
    def base_location(self) -> str:
        return str(self._value_or_setting(self._location, settings.ARTIFACT_ROOT))  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def location(self) -> str:
        return os.path.abspath(self.base_location)


def artifact_storage() -> Storage:
    return storages["artifacts"]


def _in_place(storage: Storage, name: str, local: Path) -> bool:
    """Whether the store keeps ``name`` at ``local`` itself (the default, folder store)."""
    if not isinstance(storage, FileSystemStorage):
        return False
    return Path(storage.path(name)).resolve() == local.resolve()


def _sha256_local(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_stream(fh)


def _sha256_stored(storage: Storage, name: str) -> str:
    with storage.open(name, "rb") as fh:
        return sha256_stream(cast(BinaryIO, fh))


def _put(storage: Storage, local: Path, name: str) -> None:
    """Upload one finished local file under ``name``, replacing an older object of that name."""
    if storage.exists(name):
        storage.delete(name)
    with local.open("rb") as fh:
        saved = storage.save(name, File(fh, name=local.name))
    if saved != name:  # a store that renamed it (a concurrent writer): the rows must name what exists
        raise ArtifactError(f"the artifact store saved {name!r} as {saved!r}; is another writer busy?")
    if storage.size(name) != local.stat().st_size:
        raise ArtifactError(f"{name}: the stored size differs from the local file's; upload incomplete")


def _fetch(storage: Storage, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with storage.open(name, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(cast(IO[bytes], src), out, 1 << 20)


# --- datasets and charts: one file each (a dataset with its manifest next to it) -------------------


def file_publish(local: Path) -> str:
    """Publish a finished local file (a chart) under its ARTIFACT_ROOT-relative name; returns the name."""
    name = paths.relative(local)
    storage = artifact_storage()
    if not _in_place(storage, name, local):
        _put(storage, local, name)
    return name


def file_open(name: str) -> IO[bytes]:
    """A stored file, open for reading (the caller closes it); ``FileNotFoundError`` when it is absent."""
    storage = artifact_storage()
    if not storage.exists(name):
        raise FileNotFoundError(name)
    return cast(IO[bytes], storage.open(name, "rb"))


def dataset_publish(local: Path, *, sha256: str) -> str:
    """Publish a built dataset (its ``.jsonl``, then its manifest: a manifest in the store means the data
    is complete) after checking the file against ``sha256``; returns the name the row keeps."""
    name = paths.relative(local)
    storage = artifact_storage()
    if _in_place(storage, name, local):
        return name
    if _sha256_local(local) != sha256:
        raise ArtifactError(f"{local}: sha256 differs from its manifest's; not published")
    manifest = manifest_path_for(local)
    _put(storage, local, name)
    _put(storage, manifest, paths.relative(manifest))
    return name


def dataset_local(name: str, *, sha256: str) -> Path:
    """The dataset ``name`` as a local file of sha256 ``sha256`` (fetched when this process lacks it)."""
    local = paths.resolve(name)
    storage = artifact_storage()
    if _in_place(storage, name, local):
        return local
    if local.is_file() and _sha256_local(local) == sha256:
        return local
    manifest_name = paths.relative(manifest_path_for(local))
    tmp = local.with_name(f".{local.name}.fetch-{os.getpid()}")
    try:
        _fetch(storage, name, tmp)
        if _sha256_local(tmp) != sha256:
            raise ArtifactError(f"{name} in the artifact store does not match its sha256 {sha256}; refused")
        if storage.exists(manifest_name):
            _fetch(storage, manifest_name, manifest_path_for(local))
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return local


# --- version folders --------------------------------------------------------------------------------


def version_publish(local_dir: Path) -> str:
    """Publish a verified local version folder; returns its name. Files first, the manifest last, so a
    stored manifest means a complete upload (and each upload's size is checked)."""
    name = paths.relative(local_dir)
    storage = artifact_storage()
    if _in_place(storage, name, local_dir):
        return name
    info = read_version(local_dir)
    stale = set(_stored_names(storage, name)) - {*info.files, MANIFEST}
    for file_name in sorted(stale):  # left by an earlier, crashed attempt at this version
        storage.delete(f"{name}/{file_name}")
    for file_name in sorted(info.files):
        _put(storage, local_dir / file_name, f"{name}/{file_name}")
    _put(storage, local_dir / MANIFEST, f"{name}/{MANIFEST}")
    logger.info("published %s (%d files) to the artifact store", name, len(info.files) + 1)
    return name


def _stored_names(storage: Storage, name: str) -> list[str]:
    folders, files = storage.listdir(name)
    if folders:
        raise ArtifactError(f"{name}: sub-folders {sorted(folders)} do not belong in a version")
    return list(files)


def version_verify(name: str) -> VersionInfo:
    """The download's checks on the stored version ``name``: allowed file types only (pickles refused by
    name and bytes, never unpickled), exactly the manifest's files, every sha256 matching."""
    storage = artifact_storage()
    local = paths.resolve(name)
    if _in_place(storage, name, local):
        return read_version(local)
    names = _stored_names(storage, name)
    if not names:
        raise ArtifactError(f"{name} is not in the artifact store")
    return verify_version_files(
        where=name,
        names=names,
        open_file=lambda file_name: cast(Any, storage.open(f"{name}/{file_name}", "rb")),
        size_of=lambda file_name: storage.size(f"{name}/{file_name}"),
    )


def version_stream(name: str, *, prefix: str, info: VersionInfo) -> Iterator[bytes]:
    """The stored version as the download's tar archive (``stream_tar``'s bytes), read from the store:
    the files ``version_verify`` checked (``info``), and no other."""
    storage = artifact_storage()
    local = paths.resolve(name)
    if _in_place(storage, name, local):
        from training.engine.artifacts import stream_tar

        return stream_tar(local, prefix=prefix)
    members = [
        TarMember(
            name=f"{prefix}/{file_name}",
            size=storage.size(f"{name}/{file_name}"),
            open=lambda n=f"{name}/{file_name}": cast(Any, storage.open(n, "rb")),  # type: ignore[misc]
        )
        for file_name in [*info.files, MANIFEST]
    ]
    return stream_tar_members(members)


def version_local(name: str, *, manifest: dict[str, Any]) -> Path:
    """A local, verified copy of the stored version ``name`` whose files are those of ``manifest`` (the
    version row's): the folder in place with the default store; else this process's cached copy, fetched
    from the store when missing or different, and verified (``read_version``) before use."""
    local = paths.resolve(name)
    storage = artifact_storage()
    if _in_place(storage, name, local):
        return local
    expected = {file_name: meta.get("sha256") for file_name, meta in (manifest.get("files") or {}).items()}

    def usable(folder: Path) -> bool:
        try:
            return read_version(folder).files == expected
        except (ArtifactError, OSError):
            return False

    if local.is_dir() and usable(local):
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.fetch-", dir=local.parent))
    try:
        for file_name in _stored_names(storage, name):
            _fetch(storage, f"{name}/{file_name}", tmp / file_name)
        info = read_version(tmp)
        if info.files != expected:
            raise ArtifactError(f"{name} in the artifact store differs from the version's manifest; refused")
        if local.exists():
            shutil.rmtree(local)  # an outdated or broken copy of this process's own cache
        try:
            os.rename(tmp, local)
        except OSError:
            if not usable(local):  # not a concurrent fetch that won the rename
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("fetched %s from the artifact store into %s", name, local)
    return local
