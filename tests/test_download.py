"""Downloads and archives against a real HTTP server on loopback that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vision_studies.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_dataset,
    download_file,
    extract_archive,
)
from vision_studies.registry import get_spec

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Server:
    """Serves `files` by path; `truncate_once` paths send half their bytes the first time and hang up."""

    def __init__(self):
        self.files: dict[str, bytes] = {"/file": PAYLOAD, "/truncate-once": PAYLOAD}
        self.requests: list[tuple[str, str | None]] = []
        self.truncated: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path == "/truncate-once" and self.path not in server.truncated:
                    server.truncated.add(self.path)
                    self.wfile.write(body[start : start + len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_download_verifies_and_lands_whole(server, tmp_path):
    dest = download_file(f"{server.url}/file", tmp_path / "a.bin", size=len(PAYLOAD), md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()


def test_dropped_connection_resumes_with_range(server, tmp_path):
    dest = download_file(f"{server.url}/truncate-once", tmp_path / "b.bin", md5=MD5, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0] == ("/truncate-once", None)
    path, byte_range = server.requests[1]
    resumed_at = int(byte_range.removeprefix("bytes=").rstrip("-"))
    assert path == "/truncate-once" and 0 < resumed_at <= len(PAYLOAD) // 2  # asked only for the rest


def test_checksum_mismatch_names_file_and_sums_and_leaves_nothing(server, tmp_path):
    with pytest.raises(ChecksumError) as err:
        download_file(f"{server.url}/file", tmp_path / "c.bin", md5="0" * 32, progress=False)
    message = str(err.value)
    assert "c.bin" in message and "0" * 32 in message and MD5 in message
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{server.url}/nope", tmp_path / "d.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_keeps_partial_for_resume(tmp_path):
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file("http://127.0.0.1:9/x", tmp_path / "e.bin", retries=1, backoff=0, timeout=(1, 1), progress=False)
    assert not (tmp_path / "e.bin").exists()


def test_existing_good_file_is_kept_and_bad_one_refused(server, tmp_path):
    good = tmp_path / "f.bin"
    good.write_bytes(PAYLOAD)
    assert download_file(f"{server.url}/file", good, md5=MD5, progress=False) == good
    assert server.requests == []  # nothing fetched
    good.write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        download_file(f"{server.url}/file", good, md5=MD5, progress=False)


def _tar(members: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_extract_refuses_tar_member_escaping_destination(tmp_path):
    archive = _tar({"ok/a.txt": b"a", "../escaped.txt": b"evil"}, tmp_path / "evil.tgz")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "ok").exists()  # nothing half-extracted either


def test_extract_refuses_tar_symlink_pointing_outside(tmp_path):
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as t:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")


def test_extract_refuses_zip_member_escaping_destination(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escaped.txt", b"evil")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_download_dataset_end_to_end_through_loopback(server, tmp_path, mnist):
    """The real path: fetch the archive over HTTP, verify, unpack, and read it with the real loader."""
    _, fixture = mnist
    archive = tmp_path / "mnist_png.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(fixture, arcname="mnist_png")
    server.files["/mnist_png.tgz"] = archive.read_bytes()
    spec = replace(
        get_spec("mnist"), url=f"{server.url}/mnist_png.tgz", size=archive.stat().st_size,
        md5=hashlib.md5(archive.read_bytes()).hexdigest(),
    )
    folder = download_dataset(spec, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "mnist_png"
    assert len(list(folder.rglob("*.png"))) == len(list(fixture.rglob("*.png")))
    requests_before = len(server.requests)
    assert download_dataset(spec, tmp_path / "data", progress=False) == folder
    assert len(server.requests) == requests_before  # the second call uses what is on disk

    from vision_studies.data import dataloaders

    dls = dataloaders(spec, folder, 28, batch_size=16, augment="none")
    assert len(dls.train_ds) + len(dls.valid_ds) == 1797
