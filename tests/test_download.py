"""Checksum-verified downloads (against a real local HTTP server) and safe tar extraction."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devs.download import download_file, safe_extract_tar, verify_file
from devs.errors import ChecksumError, DatasetError, InvalidParameterError

# A fixed tar.gz (payload/hello.txt, payload/numbers.txt; mtime 0) so its checksums can be pinned.
GOOD_TAR_GZ = base64.b64decode(
    "H4sIAAAAAAACA+3US2qbQRBFYY3vKrwCp2+/ezkKFmSgxMaSQ7L7nBYBgzPIJPHEdUBIiNLrq7/1dPx5fjw+fPpy"
    "Op8f768/rod/X6Je6+2e3t6n5PL6eD9v51IPd+nwDr1crsdnPv7wMbvt/e7h9P2iQ/Txevp9/r+9fP18er78l3+A"
    "v5x/5+635787x/l/j5KsrKKqpq6hqSXzpOUsF7nKTe7ykKe8lJMyr8nKRbkqN+WuPJSn8lJJKlbhLYtKVWkqXWWo"
    "TJWlmlStmlX5xKraVLvqUJ2qSy2pWS2rFTW+UFPrakNtqi31pG71rF7Uqzrft6sP9am+NJKGNbJG0agaTYOfMzSm"
    "xtJMmtbMmkWzajbNrsmvnZpLK2lZK2sVrarVtLrW0AJja8CR8EiAJEQSJAmTBEpCJcGSmLuxMbfhttym23Ybb+tt"
    "PvwMoPP2ZQ5Dg2gUOQbcmAPSSBpKY+myF8EcnMbTgBpRQ2pMDapRNayue2PMIWtoja3BNbqG1/gaYCPstlfLHMhG"
    "2TAbZwPN+ePGHNYG231fA8zhbcCNuCE35gbdqBt24+6xLxbmoDf2Bt/oG37jbxZgNmBW4LmvKubYglmD2YNZhNmE"
    "WYXZhVmG2YbXvvxW/GVHURRFURRFURRFURRFURRFURRFURRF0R/9AqE+86kAKAAA"
)
GOOD_SHA256 = "af9dbeee3c976619cc5bfa679fb3656951a8136e2ce576f9de2b00a8070476ed"
GOOD_MD5 = "6d1b8ff89624003b646711158444024c"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve good.tar.gz and a tampered copy from a real HTTP server on 127.0.0.1; yield its URL."""
    root = tmp_path_factory.mktemp("served")
    (root / "good.tar.gz").write_bytes(GOOD_TAR_GZ)
    tampered = bytearray(GOOD_TAR_GZ)
    tampered[len(tampered) // 2] ^= 0xFF  # same length, one byte flipped
    (root / "tampered.tar.gz").write_bytes(bytes(tampered))
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_pinned_fixture_is_intact() -> None:
    assert hashlib.sha256(GOOD_TAR_GZ).hexdigest() == GOOD_SHA256


def test_download_accepts_the_good_file(server: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    dest = download_file(f"{server}/good.tar.gz", downloads / "good.tar.gz", sha256=GOOD_SHA256)
    assert dest == downloads / "good.tar.gz"
    assert dest.read_bytes() == GOOD_TAR_GZ
    assert sorted(p.name for p in downloads.iterdir()) == ["good.tar.gz"]  # no temp files left
    assert verify_file(dest, sha256=GOOD_SHA256, md5=GOOD_MD5)


def test_download_accepts_md5(server: str, tmp_path: Path) -> None:
    dest = download_file(f"{server}/good.tar.gz", tmp_path / "good.tar.gz", md5=GOOD_MD5.upper())
    assert dest.read_bytes() == GOOD_TAR_GZ


def test_download_refuses_a_tampered_file_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    url = f"{server}/tampered.tar.gz"
    with pytest.raises(ChecksumError) as info:
        download_file(url, downloads / "good.tar.gz", sha256=GOOD_SHA256)
    message = str(info.value)
    assert f"checksum mismatch for {url}: expected {GOOD_SHA256}, got " in message
    assert "tampered" in message and "retry" in message
    assert list(downloads.iterdir()) == []


def test_download_with_both_checksums_checks_both(server: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(ChecksumError):
        download_file(f"{server}/good.tar.gz", downloads / "x", sha256=GOOD_SHA256, md5="0" * 32)
    assert list(downloads.iterdir()) == []


def test_download_http_error_is_a_dataset_error(server: str, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(DatasetError, match="check your internet connection") as info:
        download_file(f"{server}/missing.tar.gz", downloads / "missing.tar.gz", md5=GOOD_MD5)
    assert not isinstance(info.value, ChecksumError)
    assert "404" in str(info.value) and "by hand" in str(info.value)
    assert list(downloads.iterdir()) == []


def test_download_unreachable_host_is_a_dataset_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DatasetError, match="check your internet connection"):
        download_file(f"http://127.0.0.1:{port}/x.tar.gz", tmp_path / "x.tar.gz", md5=GOOD_MD5)
    assert list(tmp_path.iterdir()) == []


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "good.tar.gz"
    assert not verify_file(path, sha256=GOOD_SHA256)  # missing
    path.write_bytes(GOOD_TAR_GZ)
    assert verify_file(path, sha256=GOOD_SHA256)
    assert verify_file(path, md5=GOOD_MD5)
    assert not verify_file(path, md5="0" * 32)
    with pytest.raises(InvalidParameterError):
        verify_file(path)


def test_downloaded_tarball_extracts(server: str, tmp_path: Path) -> None:
    archive = download_file(f"{server}/good.tar.gz", tmp_path / "good.tar.gz", sha256=GOOD_SHA256)
    dest = safe_extract_tar(archive, tmp_path / "out")
    assert (dest / "payload" / "hello.txt").read_bytes() == b"hello devs\n"
    assert sorted(p.name for p in dest.iterdir()) == ["payload"]  # no temp dir left behind


def _tar_with(path: Path, members: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink is not None:
            info = tarfile.TarInfo("link")
            info.type = tarfile.SYMTYPE
            info.linkname = symlink
            tf.addfile(info)
    return path


@pytest.mark.parametrize("evil", ["../evil", "ok/../../evil", "/tmp/devs-absolute-evil"])
def test_safe_extract_refuses_unsafe_paths_and_leaves_nothing(tmp_path: Path, evil: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _tar_with(work / "evil.tar.gz", [("fine/a.txt", b"a"), (evil, b"pwned")])
    with pytest.raises(DatasetError, match="unsafe path"):
        safe_extract_tar(archive, work / "out")
    assert sorted(p.name for p in work.iterdir()) == ["evil.tar.gz"]
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/devs-absolute-evil").exists()


def test_safe_extract_refuses_links(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "link.tar.gz", [("a.txt", b"a")], symlink="/etc/passwd")
    with pytest.raises(DatasetError, match="links"):
        safe_extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_into_existing_dir_refuses_to_overwrite(tmp_path: Path) -> None:
    archive = tmp_path / "good.tar.gz"
    archive.write_bytes(GOOD_TAR_GZ)
    dest = tmp_path / "out"
    (dest / "payload").mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already exists"):
        safe_extract_tar(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt", "payload"]
    assert list((dest / "payload").iterdir()) == []


def test_safe_extract_of_a_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(GOOD_TAR_GZ[:200])
    with pytest.raises(DatasetError, match="cannot extract"):
        safe_extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
