"""Checksum-verified downloads and safe tar extraction.

Every download streams into a temporary file next to its destination, is hashed on the way, and is
renamed into place only when the pinned checksum matches, so a failed or tampered download never
leaves a file that looks complete. Archives are extracted into a temporary directory and renamed
into place, so a failure never leaves a half-extracted tree.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from .errors import ChecksumError, DatasetError, InvalidParameterError
from .runtime import apply_default_mode

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # 1 MiB
TIMEOUT_S = 60.0

# algorithm name -> (expected lowercase hex digest, running hashlib object)
_Hashers = dict[str, tuple[str, Any]]

# tarfile's "data" filter (Python 3.11.4+) on top of our own member checks
_DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def _hashers(md5: str | None, sha256: str | None) -> _Hashers:
    """Running hashes for the checksums that were given."""
    hashers: _Hashers = {}
    if md5 is not None:
        hashers["md5"] = (md5.lower(), hashlib.md5(usedforsecurity=False))
    if sha256 is not None:
        hashers["sha256"] = (sha256.lower(), hashlib.sha256())
    return hashers


def _first_mismatch(hashers: _Hashers) -> tuple[str, str] | None:
    """Return (expected, got) for the first digest that does not match, or None."""
    for expected, hasher in hashers.values():
        got = hasher.hexdigest()
        if got != expected:
            return expected, got
    return None


def verify_file(path: str | Path, *, md5: str | None = None, sha256: str | None = None) -> bool:
    """True if ``path`` exists and matches every checksum given (at least one is required)."""
    if md5 is None and sha256 is None:
        raise InvalidParameterError("verify_file needs md5 or sha256; got neither")
    path = Path(path)
    if not path.is_file():
        return False
    hashers = _hashers(md5, sha256)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            for _, hasher in hashers.values():
                hasher.update(chunk)
    return _first_mismatch(hashers) is None


def download_file(
    url: str, dest: str | Path, *, md5: str | None = None, sha256: str | None = None
) -> Path:
    """Download ``url`` to ``dest``, verifying the pinned checksum(s) before the file appears there.

    Raises ChecksumError on a mismatch (nothing is left behind) and DatasetError on network errors.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashers = _hashers(md5, sha256)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    logger.info("downloading %s -> %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out:
            received, expected_size = _stream(url, out, hashers)
        if expected_size is not None and received != expected_size:
            raise DatasetError(
                f"download of {url} was truncated: got {received} of {expected_size} bytes; "
                "check your internet connection and retry"
            )
        mismatch = _first_mismatch(hashers)
        if mismatch is not None:
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {mismatch[0]}, got {mismatch[1]}; "
                "the file may be tampered with or truncated; delete it and retry"
            )
        apply_default_mode(tmp)  # mkstemp creates 0600 files; give what the umask gives any new file
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out: BinaryIO, hashers: _Hashers) -> tuple[int, int | None]:
    """Copy ``url`` into ``out`` in 1 MiB chunks; return (bytes received, Content-Length)."""
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected_size = int(length) if length and length.isdigit() else None
            with tqdm(
                total=expected_size, unit="B", unit_scale=True, desc=Path(url).name, disable=None
            ) as bar:
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    for _, hasher in hashers.values():
                        hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except _NETWORK_ERRORS as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds the open response
        raise DatasetError(
            f"could not download {url}: {exc}; check your internet connection, "
            "or put the files in the data root by hand"
        ) from exc
    return received, expected_size


def tar_member_parts(name: str) -> tuple[str, ...]:
    """Path components of a tar member name, without empty and '.' components."""
    return tuple(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


def check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths, '..' components, links and device files (DatasetError)."""
    name = member.name
    parts = tar_member_parts(name)
    if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")) or ".." in parts:
        raise DatasetError(f"unsafe path {name!r} in {archive}; refusing this archive")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(
            f"unsupported member {name!r} in {archive} (links and special files are refused); "
            "refusing this archive"
        )


def safe_extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` so that its top-level entries appear in directory ``dest``.

    Every member is checked first (no absolute paths, no '..', no links), then the archive is
    extracted with ``filter="data"`` into a temporary directory inside ``dest`` and each top-level
    entry is renamed into place. On any failure nothing new is left in ``dest``.
    Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                check_tar_member(member, archive)
            tops = sorted({parts[0] for m in members if (parts := tar_member_parts(m.name))})
            clashes = [top for top in tops if (dest / top).exists()]
            if clashes:
                raise DatasetError(
                    f"cannot extract {archive}: {', '.join(str(dest / c) for c in clashes)} "
                    "already exists; delete it and retry"
                )
            created = not dest.exists()
            dest.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
            try:
                tf.extractall(tmp, members=members, **_DATA_FILTER)
                for top in tops:
                    os.replace(tmp / top, dest / top)
            except BaseException:
                for top in tops:  # roll back entries already moved
                    moved = dest / top
                    if moved.is_dir():
                        shutil.rmtree(moved, ignore_errors=True)
                    elif moved.exists():
                        moved.unlink()
                if created:
                    shutil.rmtree(dest, ignore_errors=True)
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(
            f"cannot extract {archive}: {exc}; delete it and download it again"
        ) from exc
    logger.info("extracted %s into %s", archive, dest)
    return dest
