"""Downloads and archives against a real HTTP server on loopback that misbehaves on purpose."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
import threading
import time
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vision_studies.download import (
    ChecksumError,
    CorruptArchiveError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive,
)
from vision_studies.registry import get_spec
from vision_studies.sources import fetch_dataset

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Server:
    """Serves `files` by path; `plans[path]` lists how each successive request for it misbehaves.

    A request past the end of its plan is served properly (honouring Range). The misbehaviours:
    ``truncate`` sends half the bytes it promised and hangs up; ``stall`` sends a quarter, then goes
    silent for longer than the client waits; ``stall_headers`` accepts and never answers in time;
    ``slow`` sends everything in small pieces with pauses shorter than a timeout; ``corrupt`` flips bytes
    in what it sends; ``corrupt_truncate`` does both; ``ignore_range`` answers 200 with the whole file;
    ``wrong_range`` answers 206 but from byte 0; ``503`` is a busy server.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {"/file": PAYLOAD, "/truncate-once": PAYLOAD}
        self.plans: dict[str, list[str]] = {"/truncate-once": ["truncate"]}
        self.requests: list[tuple[str, str | None]] = []
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
                plan = server.plans.get(self.path, [])
                how = plan.pop(0) if plan else "ok"
                try:
                    self.answer(body, how)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on us, as it should
                    pass

            def answer(self, body: bytes, how: str):
                if how == "503":
                    self.send_error(503)
                    return
                if how == "stall_headers":
                    time.sleep(2)
                    return
                start = 0
                if self.headers.get("Range") and how != "ignore_range":
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    sent_start = 0 if how == "wrong_range" else start
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {sent_start}-{len(body) - 1}/{len(body)}")
                    if how == "wrong_range":
                        start = 0
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                rest = body[start:]
                if how in ("corrupt", "corrupt_truncate"):
                    rest = bytes(b ^ 0xFF if i % 1000 == 0 else b for i, b in enumerate(rest))
                if how in ("truncate", "corrupt_truncate"):
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif how == "stall":
                    self.wfile.write(rest[: len(rest) // 4])
                    self.wfile.flush()
                    time.sleep(2)
                    self.close_connection = True
                elif how == "slow":
                    for i in range(0, len(rest), len(rest) // 8):
                        self.wfile.write(rest[i : i + len(rest) // 8])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
                    self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, path: str, plan: list[str], body: bytes = PAYLOAD) -> str:
        self.files[path], self.plans[path] = body, list(plan)
        return self.url + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _resumed_at(byte_range: str | None) -> int:
    return int(byte_range.removeprefix("bytes=").rstrip("-"))


def test_download_verifies_and_lands_whole(server, tmp_path):
    dest = download_file(f"{server.url}/file", tmp_path / "a.bin", size=len(PAYLOAD), md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()


def test_progress_bar_names_the_file_and_counts_bytes(server, tmp_path, capsys):
    download_file(f"{server.url}/file", tmp_path / "shown.bin", md5=MD5, progress=True)
    shown = capsys.readouterr().err
    assert "shown.bin" in shown and "1.05M" in shown and "100%" in shown


def test_dropped_connection_resumes_with_range(server, tmp_path):
    dest = download_file(f"{server.url}/truncate-once", tmp_path / "b.bin", md5=MD5, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0] == ("/truncate-once", None)
    path, byte_range = server.requests[1]
    assert path == "/truncate-once" and 0 < _resumed_at(byte_range) <= len(PAYLOAD) // 2  # asked only for the rest


def test_stalled_body_hits_the_read_timeout_then_resumes(server, tmp_path):
    url = server.serve("/stall", ["stall"])
    start = time.perf_counter()
    dest = download_file(url, tmp_path / "s.bin", md5=MD5, backoff=0, timeout=(2, 0.3), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert time.perf_counter() - start < 1.5  # gave up on the silent server instead of waiting it out
    assert len(server.requests) == 2 and _resumed_at(server.requests[1][1]) > 0


def test_server_that_never_answers_is_retried(server, tmp_path):
    url = server.serve("/mute", ["stall_headers"])
    dest = download_file(url, tmp_path / "m.bin", md5=MD5, backoff=0, timeout=(2, 0.3), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, None]  # nothing came, so nothing to resume


def test_slow_but_steady_server_is_not_an_error(server, tmp_path):
    url = server.serve("/slow", ["slow"])
    dest = download_file(url, tmp_path / "w.bin", md5=MD5, retries=0, timeout=(2, 0.5), progress=False)
    assert dest.read_bytes() == PAYLOAD and len(server.requests) == 1


# No checksum in these two: a source without one (trusted on first use) must come out right all the same.


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.serve("/norange", ["truncate", "ignore_range"])
    dest = download_file(url, tmp_path / "n.bin", backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD  # not the first half twice
    assert server.requests[1][1] is not None and len(server.requests) == 2  # asked for the rest, took it all


def test_range_answer_from_the_wrong_byte_restarts_from_zero(server, tmp_path):
    url = server.serve("/wrongrange", ["truncate", "wrong_range"])
    dest = download_file(url, tmp_path / "r.bin", backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD  # not half, then the whole file spliced on
    assert [r[1] is None for r in server.requests] == [True, False, True]


def test_busy_server_is_retried_with_backoff(server, tmp_path):
    url = server.serve("/busy", ["503", "503"])
    start = time.perf_counter()
    dest = download_file(url, tmp_path / "y.bin", md5=MD5, backoff=0.1, progress=False)
    assert dest.read_bytes() == PAYLOAD and len(server.requests) == 3
    assert time.perf_counter() - start >= 0.1 + 0.2  # waited 0.1 s, then 0.2 s


def test_bytes_corrupted_before_a_drop_are_downloaded_again_whole(server, tmp_path):
    """A file stitched from two responses that fails its checksum is fetched once more from the start."""
    url = server.serve("/flaky", ["corrupt_truncate"])
    dest = download_file(url, tmp_path / "f.bin", md5=MD5, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] is None for r in server.requests] == [True, False, True]


def test_corrupt_source_names_file_and_sums_and_leaves_nothing(server, tmp_path):
    url = server.serve("/corrupt", ["corrupt"] * 3)
    with pytest.raises(ChecksumError) as err:
        download_file(url, tmp_path / "c.bin", size=len(PAYLOAD), md5=MD5, backoff=0, progress=False)
    message = str(err.value)
    actual = hashlib.md5(bytes(b ^ 0xFF if i % 1000 == 0 else b for i, b in enumerate(PAYLOAD))).hexdigest()
    assert "c.bin" in message and MD5 in message and actual in message
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # whole in one response: the source is wrong, retrying cannot help


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
    assert len(server.requests) == 1  # a 404 is not retried


def test_unreachable_server_keeps_partial_for_resume(tmp_path):
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file("http://127.0.0.1:9/x", tmp_path / "e.bin", retries=1, backoff=0, timeout=(1, 1), progress=False)
    assert not (tmp_path / "e.bin").exists()


def test_partial_file_from_an_earlier_call_is_resumed(server, tmp_path):
    url = server.serve("/gone-then-back", ["truncate", "503"])
    with pytest.raises(DownloadError, match="partial file .* is kept"):
        download_file(url, tmp_path / "p.bin", md5=MD5, retries=1, backoff=0, progress=False)
    kept = (tmp_path / "p.bin.part").stat().st_size
    assert 0 < kept < len(PAYLOAD)
    dest = download_file(url, tmp_path / "p.bin", md5=MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD and _resumed_at(server.requests[-1][1]) == kept


def test_existing_good_file_is_kept_and_bad_one_refused(server, tmp_path):
    good = tmp_path / "f.bin"
    good.write_bytes(PAYLOAD)
    assert download_file(f"{server.url}/file", good, md5=MD5, progress=False) == good
    assert server.requests == []  # nothing fetched
    good.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=f"delete {good}"):
        download_file(f"{server.url}/file", good, md5=MD5, progress=False)


def test_full_disk_is_a_clear_error_naming_the_file(server, tmp_path):
    """The kernel's own "no space left": the partial file is a link to /dev/full, where every write fails so."""
    (tmp_path / "g.bin.part").symlink_to("/dev/full")
    with pytest.raises(OSError, match="g.bin.part.*No space left on device.*another folder") as err:
        download_file(f"{server.url}/file", tmp_path / "g.bin", md5=MD5, backoff=0, progress=False)
    assert err.value.errno == errno.ENOSPC
    assert not (tmp_path / "g.bin").exists() and len(server.requests) == 1  # a full disk is not retried


# --- archives: crafted to escape, each refused, nothing written outside --------------------------------


def _tar(members: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _evil_tars(outside: Path) -> dict[str, list[tarfile.TarInfo | tuple[str, bytes]]]:
    return {
        "dot-dot": [("ok/a.txt", b"a"), ("../escaped.txt", b"evil")],
        "absolute path": [("ok/a.txt", b"a"), (str(outside / "escaped.txt"), b"evil")],
        "symlink to an absolute path": [_special("data/link", tarfile.SYMTYPE, "/etc/passwd")],
        "symlink out through ..": [_special("data/link", tarfile.SYMTYPE, "../../escaped.txt")],
        "hard link outside": [_special("data/hard", tarfile.LNKTYPE, "../../etc/passwd")],
        "character device": [_special("data/null", tarfile.CHRTYPE)],
        "block device": [_special("data/disk", tarfile.BLKTYPE)],
        "fifo": [_special("data/pipe", tarfile.FIFOTYPE)],
    }


@pytest.mark.parametrize("case", list(_evil_tars(Path("/x"))))
def test_extract_refuses_crafted_tar(case, tmp_path):
    outside, box = tmp_path / "outside", tmp_path / "box"
    outside.mkdir()
    box.mkdir()
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as t:
        for member in _evil_tars(outside)[case]:
            if isinstance(member, tuple):
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                t.addfile(info, io.BytesIO(member[1]))
            else:
                t.addfile(member)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError, match="evil.tgz.*refusing"):
        extract_archive(archive, box / "out")
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing anywhere: not outside, not half in dest


def _zip(path: Path, name: str, data: bytes = b"evil", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ok/a.txt", b"a")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        z.writestr(info, data)
    return path


@pytest.mark.parametrize(
    "name, mode, why",
    [
        ("../escaped.txt", None, "outside"),
        ("/tmp/escaped.txt", None, "outside"),
        ("..\\..\\escaped.txt", None, "outside"),
        ("C:/escaped.txt", None, "outside"),
        ("data/link", 0o120777, "symbolic link"),
        ("data/null", 0o020666, "special file"),
    ],
)
def test_extract_refuses_crafted_zip(name, mode, why, tmp_path):
    archive = _zip(tmp_path / "evil.zip", name, b"/etc/passwd" if mode else b"evil", mode)
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError, match=why):
        extract_archive(archive, tmp_path / "out")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/escaped.txt").exists()


def test_refused_archive_leaves_an_existing_folder_as_it_was(tmp_path):
    dest = tmp_path / "out"
    (dest / "ok").mkdir(parents=True)
    (dest / "ok" / "a.txt").write_text("old")
    archive = _tar({"ok/a.txt": b"new", "../escaped.txt": b"evil"}, tmp_path / "evil.tgz")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, dest)
    assert (dest / "ok" / "a.txt").read_text() == "old"
    assert not (tmp_path / "out.staging").exists()


@pytest.mark.parametrize("damage", ["truncated tgz", "truncated zip", "corrupted zip", "not an archive"])
def test_damaged_archive_is_a_clear_error_and_leaves_nothing(damage, tmp_path):
    blob = os.urandom(200_000)  # incompressible, so a cut lands in member data
    good = tmp_path / ("good.zip" if "zip" in damage else "good.tgz")
    if "zip" in damage:
        with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("data/blob.bin", blob)
    else:
        _tar({"data/blob.bin": blob}, good)
    data = good.read_bytes()
    good.unlink()
    damaged = {
        "truncated tgz": data[: len(data) // 2],
        "truncated zip": data[: len(data) // 2],
        "corrupted zip": data[:100] + bytes(b ^ 0xFF for b in data[100:1100]) + data[1100:],
        "not an archive": b"<html>Rate limit exceeded</html>",
    }[damage]
    archive = tmp_path / "damaged.bin"
    archive.write_bytes(damaged)
    with pytest.raises(CorruptArchiveError, match="damaged.bin.*delete it and download it again"):
        extract_archive(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.bin"]


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
    folder = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "mnist_png"
    assert len(list(folder.rglob("*.png"))) == len(list(fixture.rglob("*.png")))
    requests_before = len(server.requests)
    assert fetch_dataset(spec, tmp_path / "data", progress=False) == folder
    assert len(server.requests) == requests_before  # the second call uses what is on disk

    from vision_studies.data import dataloaders

    dls = dataloaders(spec, folder, 28, batch_size=16, augment="none")
    assert len(dls.train_ds) + len(dls.valid_ds) == 1797
