"""Fetch datasets: streamed with a progress bar, resumable, verified, and renamed into place only when whole.

A download writes to ``<file>.part`` and resumes it with an HTTP Range request after a dropped connection;
only a file whose size and checksum match is renamed to its real name, so a file under its real name is
always a good one. Archives unpack into a staging folder first and refuse members that would land
outside it.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import time
import zipfile
from pathlib import Path

import requests
from tqdm.auto import tqdm

from .registry import DatasetSpec

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download_file",
    "extract_archive",
    "file_digest",
    "download_dataset",
]

CHUNK = 1 << 20  # for hashing files
NET_CHUNK = 1 << 16  # small, so a dropped connection loses at most this much of what was sent


class DownloadError(RuntimeError):
    """The server could not give us the file, even after retries."""


class ChecksumError(ValueError):
    """The bytes we got are not the bytes the registry promises."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the folder it is extracted to."""


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so a GB archive never sits in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, size: int | None, md5: str | None, sha256: str | None, url: str) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{url}: expected {size} bytes, got {actual_size} (in {path})")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None:
            actual = file_digest(path, algorithm)
            if actual != expected.lower():
                raise ChecksumError(f"{url}: {algorithm} mismatch for {path.name}: expected {expected}, got {actual}")


def _fetch_into(part: Path, url: str, timeout: tuple[float, float], progress: bool) -> None:
    """Append the rest of `url` to `part`, asking only for the bytes we do not have yet."""
    have = part.stat().st_size if part.exists() else 0
    # identity: the checksum is of the archive's bytes, not of a transfer-decoded stream
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # we already have every byte the server has
            return
        r.raise_for_status()
        if have and r.status_code != 206:  # the server ignored Range: start again
            have = 0
        expected = int(r.headers["Content-Length"]) + have if "Content-Length" in r.headers else None
        written = have
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
            disable=not progress,
        ) as bar:
            for chunk in r.iter_content(NET_CHUNK):
                f.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if expected is not None and written != expected:
        raise requests.ConnectionError(f"connection closed after {written} of {expected} bytes")


def download_file(
    url: str,
    dest: Path | str,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: tuple[float, float] = (10.0, 60.0),
    progress: bool = True,
) -> Path:
    """Download `url` to `dest` and return `dest`; a `dest` that is already there and verifies is kept.

    Connection errors and timeouts are retried with exponential backoff, resuming the partial file.
    A checksum mismatch is not retried (the source is wrong, not the network) and the bad bytes are removed.
    """
    dest = Path(dest)
    if dest.exists():
        _verify(dest, size, md5, sha256, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_into(part, url, timeout, progress)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            if attempt == retries:
                raise DownloadError(
                    f"could not download {url} after {retries + 1} attempts ({e}); the partial file "
                    f"{part} is kept and the next call resumes it"
                ) from e
            time.sleep(backoff * 2**attempt)
        except requests.HTTPError as e:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server answered {e.response.status_code}") from e
    try:
        _verify(part, size, md5, sha256, url)
    except ChecksumError:
        part.unlink()
        raise
    part.replace(dest)
    return dest


def _check_zip_member(info: zipfile.ZipInfo, dest: Path) -> None:
    name = info.filename
    target = (dest / name).resolve()
    if name.startswith(("/", "\\")) or ":" in name.split("/")[0] or not target.is_relative_to(dest.resolve()):
        raise UnsafeArchiveError(f"zip member {name!r} would be written outside {dest}; refusing the archive")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise UnsafeArchiveError(f"zip member {name!r} is a symbolic link; refusing the archive")


def extract_archive(archive: Path | str, dest: Path | str) -> Path:
    """Unpack a .tgz/.tar/.zip into `dest` through a staging folder, refusing members that escape it.

    Tar members go through Python's ``data`` filter (no absolute paths, no ``..``, no links outside,
    no device files); zip members are checked by hand, as zipfile has no such filter.
    """
    archive, dest = Path(archive), Path(dest)
    staging = dest.with_name(dest.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _check_zip_member(info, staging)
                z.extractall(staging)
        else:
            with tarfile.open(archive) as t:
                try:
                    t.extractall(staging, filter="data")
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"{archive}: {e}; refusing the archive") from e
        dest.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def download_dataset(spec: DatasetSpec, root: Path | str = "data", progress: bool = True) -> Path:
    """The dataset's folder under `root`, downloading and unpacking it the first time."""
    root = Path(root)
    folder = root / spec.archive_root
    done = folder / ".complete"
    if done.exists():
        return folder
    archive = download_file(
        spec.url, root / "archives" / spec.archive_name, size=spec.size, md5=spec.md5, sha256=spec.sha256,
        progress=progress,
    )
    extract_archive(archive, root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{archive} did not unpack to {folder}; the registry's archive_root is wrong")
    done.touch()
    return folder
