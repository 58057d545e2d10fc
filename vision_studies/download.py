"""Fetch datasets: streamed with a progress bar, resumable, verified, and renamed into place only when whole.

A download writes to ``<file>.part`` and resumes it with an HTTP Range request after a dropped connection;
only a file whose size and checksum match is renamed to its real name, so a file under its real name is
always a good one. Archives unpack into a staging folder first and refuse members that would land
outside it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

import requests
from tqdm.auto import tqdm

from .errors import VisionStudiesError


__all__ = [
    "ChecksumError",
    "CorruptArchiveError",
    "DownloadError",
    "UnsafeArchiveError",
    "download_file",
    "extract_archive",
    "file_digest",
    "first_mib_md5",
    "verify_file",
]

CHUNK = 1 << 20  # for hashing files
FIRST_MIB = 2**20  # fastdownload.core.path_stats hashes `f.read(2**20)`: fastai's checksums cover this much
NET_CHUNK = 1 << 16  # small, so a dropped connection loses at most this much of what was sent
# Statuses that say "not now" rather than "never": overloaded or restarting servers and rate limits.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class DownloadError(VisionStudiesError, RuntimeError):
    """The server could not give us the file, even after retries."""


class ChecksumError(VisionStudiesError, ValueError):
    """The bytes we got are not the bytes the registry promises."""


class UnsafeArchiveError(VisionStudiesError, ValueError):
    """An archive member would be written outside the folder it is extracted to."""


class CorruptArchiveError(VisionStudiesError, ValueError):
    """The archive cannot be read to its end: a damaged or incomplete file."""


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so a GB archive never sits in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def first_mib_md5(path: Path | str) -> str:
    """md5 of the file's first MiB: what fastai publishes for its datasets (fastdownload's `path_stats`)."""
    with open(path, "rb") as f:
        return hashlib.md5(f.read(FIRST_MIB)).hexdigest()


def verify_file(
    path: Path | str, size: int | None = None, md5: str | None = None, sha256: str | None = None,
    scheme: str = "", url: str = "", hint: str = "",
) -> None:
    """Check `path` against the checksums in the `scheme` the source published them in; raise ChecksumError.

    ``"fastai_first_mib"``: `md5` is of the first MiB only and `size` is required, as fastai's
    download_checks.py holds them; any other scheme (``"md5"``, ``"sha256"``, ``""``): whole-file digests.
    """
    path = Path(path)
    where = url or str(path)
    actual_size = path.stat().st_size
    if scheme == "fastai_first_mib" and (size is None or md5 is None):
        raise ValueError(f"{where}: the fastai_first_mib scheme needs both size and md5 (fastai publishes both)")
    if size is not None and actual_size != size:
        raise ChecksumError(f"{where}: expected {size} bytes, got {actual_size} (in {path}); {hint}")
    checks = (("md5 of the first MiB", md5, first_mib_md5),) if scheme == "fastai_first_mib" else (
        ("md5", md5, lambda p: file_digest(p, "md5")), ("sha256", sha256, lambda p: file_digest(p, "sha256")))
    for what, expected, digest in checks:
        if expected is not None:
            actual = digest(path)
            if actual != expected.lower():
                raise ChecksumError(f"{where}: {what} mismatch for {path.name}: expected {expected}, got {actual}; {hint}")


def _range_start(response: requests.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _fetch_into(
    part: Path, url: str, timeout: tuple[float, float], progress: bool,
    auth: tuple[str, str] | requests.auth.AuthBase | None = None,
) -> bool:
    """Append the rest of `url` to `part`, asking only for the bytes we do not have yet.

    Returns True when the bytes went after ones already there, so the file is stitched from two responses.
    """
    have = part.stat().st_size if part.exists() else 0
    # identity: the checksum is of the archive's bytes, not of a transfer-decoded stream
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    with requests.get(url, stream=True, timeout=timeout, headers=headers, auth=auth) as r:
        if r.status_code == 416:  # we already have every byte the server has
            return True
        r.raise_for_status()
        if have and r.status_code == 206 and _range_start(r) != have:
            # bytes from anywhere else would be spliced in at the wrong place
            part.unlink()
            raise requests.ConnectionError(
                f"asked for bytes {have}- but the server sent {r.headers.get('Content-Range')!r}; starting over"
            )
        if have and r.status_code != 206:  # the server ignored Range: start again
            have = 0
        expected = int(r.headers["Content-Length"]) + have if "Content-Length" in r.headers else None
        written = have
        try:
            with open(part, "ab" if have else "wb") as f, tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
                disable=not progress,
            ) as bar:
                for chunk in r.iter_content(NET_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except OSError as e:
            if isinstance(e, requests.RequestException):  # the network's, retried by the caller
                raise
            # the disk's (full, read-only, not ours): retrying cannot help
            raise OSError(e.errno, f"cannot write the download to {part} ({e.strerror}); free space there or "
                          "download to another folder") from e
    if expected is not None and written != expected:
        raise requests.ConnectionError(f"connection closed after {written} of {expected} bytes")
    return have > 0


def _fetch_with_retries(
    part: Path, url: str, retries: int, backoff: float, timeout: tuple[float, float], progress: bool,
    auth: tuple[str, str] | requests.auth.AuthBase | None,
) -> bool:
    """`_fetch_into` until the file is whole, retrying what a network or a busy server gets wrong.

    Returns True when the last response was appended to bytes from earlier ones.
    """
    for attempt in range(retries + 1):
        try:
            return _fetch_into(part, url, timeout, progress, auth)
        except requests.HTTPError as e:
            status = e.response.status_code
            # a partial file stays: its bytes are still the source's, only this answer is not
            if status not in RETRY_STATUSES:
                raise DownloadError(f"{url}: the server answered {status} {e.response.reason or ''}".rstrip()) from e
            error: Exception = e
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            error = e
        except requests.RequestException as e:  # a malformed URL, too many redirects: retrying cannot help
            raise DownloadError(f"{url}: {e}") from e
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise DownloadError(
        f"could not download {url} after {retries + 1} attempts ({error}); the partial file "
        f"{part} is kept and the next call resumes it"
    ) from error


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
    auth: tuple[str, str] | requests.auth.AuthBase | None = None,
    scheme: str = "",
) -> Path:
    """Download `url` to `dest` and return `dest`; a `dest` that is already there and verifies is kept.

    Connection errors, timeouts (`timeout` is (connect, read) seconds) and busy-server answers (429, 5xx)
    are retried `retries` times with exponential backoff, resuming the partial file. A checksum mismatch
    is not retried when the file came whole in one response (the source is wrong, not the network); a
    file stitched from several responses is downloaded once more from the start first, as the source may
    have changed between them. Bad bytes are always removed. `scheme` says how the published `md5`/`sha256`
    were computed (see `verify_file`): fastai's cover the first MiB only.
    """
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, size, md5, sha256, scheme, url, hint=f"delete {dest} to download it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for last_try in (False, True):
        stitched = _fetch_with_retries(part, url, retries, backoff, timeout, progress, auth)
        try:
            verify_file(part, size, md5, sha256, scheme, url, hint="the download is deleted; if this repeats, the "
                        "source has changed: check the URL and checksum in the registry (or the sources override)")
        except ChecksumError:
            part.unlink(missing_ok=True)
            if last_try or not stitched:
                raise
            continue
        break
    part.replace(dest)
    return dest


def _check_zip_member(info: zipfile.ZipInfo, dest: Path) -> None:
    name = info.filename
    parts = re.split(r"[/\\]", name)  # a backslash is a separator to Windows, where the folder may be read
    target = (dest / name).resolve()
    if (
        name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts
        or not target.is_relative_to(dest.resolve())
    ):
        raise UnsafeArchiveError(f"zip member {name!r} would be written outside {dest}; refusing the archive")
    kind = (info.external_attr >> 16) & 0o170000
    if kind not in (0, 0o100000, 0o040000):  # unset (made on Windows), regular file, folder
        what = "a symbolic link" if kind == 0o120000 else "a special file (device, pipe or socket)"
        raise UnsafeArchiveError(f"zip member {name!r} is {what}; refusing the archive")


def _tar_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    # Python's `data` filter strips a leading "/" and extracts the member anyway; an archive that names
    # absolute paths was not made for unpacking into a folder, so it is refused outright.
    if member.name.startswith("/") or PureWindowsPath(member.name).drive:
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


def _is_macos_metadata(name: str) -> bool:
    """Archives made on a Mac carry ``__MACOSX/`` folders of AppleDouble ``._<name>`` files (resource forks,
    Finder data): not the dataset's files, and ``._Ci-N1.jpg`` would pass for an image by its name."""
    parts = re.split(r"[/\\]", name)
    return "__MACOSX" in parts or parts[-1].startswith("._")


def _unpack(archive: Path, staging: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _check_zip_member(info, staging)
            z.extractall(staging, members=[i for i in z.infolist() if not _is_macos_metadata(i.filename)])
    else:
        try:
            t = tarfile.open(archive)
        except tarfile.ReadError as e:
            raise CorruptArchiveError(
                f"{archive} is neither a zip nor a tar archive (gzip, bzip2, xz or plain), or it is cut short; "
                "delete it and download it again"
            ) from e
        with t:
            t.extractall(staging, members=(m for m in t if not _is_macos_metadata(m.name)), filter=_tar_filter)


def extract_archive(archive: Path | str, dest: Path | str) -> Path:
    """Unpack a .tgz/.tar/.zip into `dest` through a staging folder, refusing members that escape it.

    Tar members go through Python's ``data`` filter (no ``..``, no links outside, no device files) and
    absolute names are refused too; zip members are checked by hand, as zipfile has no such filter. macOS
    metadata (``__MACOSX/``, ``._*``) is not unpacked. A refused or damaged archive leaves `dest` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    # a staging folder of its own: two runs unpacking different archives into one data folder at once
    # (notebooks run side by side) must not clear each other's
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{dest.name}.staging-", dir=dest.parent))
    try:
        try:
            _unpack(archive, staging)
        except tarfile.FilterError as e:
            raise UnsafeArchiveError(f"{archive}: {e}; refusing the archive") from e
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            detail = " ".join(str(e).split())
            raise CorruptArchiveError(
                f"{archive} cannot be unpacked ({e.__class__.__name__}: {detail}); it is damaged or incomplete: "
                "delete it and download it again"
            ) from e
        dest.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = dest / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            item.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
