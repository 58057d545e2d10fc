"""Where a study's images come from: a registry dataset, the learner's own folder, or a list of image URLs.

The dataset path is the real one: download (with credentials where the source wants them), verify
against the published checksum in the source's own scheme or, where none is published, against the
sha256 recorded at the first download, unpack (an archive inside the archive too), and mark the folder
complete. A sources override (`VISION_STUDIES_SOURCES`, a JSON file) serves any dataset from another
place, an institution's mirror say, with that place's checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import requests
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs there do not share a data folder at once
    fcntl = None

from .colab import colab_secret
from .download import DownloadError, download_file, extract_archive, file_digest
from .errors import VisionStudiesError
from .registry import DATASETS, DatasetSpec

__all__ = ["fetch_dataset", "kaggle_credentials", "KaggleToken", "MissingCredentials", "SourcesFileError",
           "SOURCES_ENV", "read_sources", "apply_sources", "read_url_list", "download_image_urls"]

RECORDED = "recorded_sha256.json"
SOURCES_ENV = "VISION_STUDIES_SOURCES"  # the path of a sources override file (JSON)


class MissingCredentials(VisionStudiesError, RuntimeError):
    """The source needs an account the environment does not give us."""


class SourcesFileError(VisionStudiesError, ValueError):
    """A sources override file that cannot be used as it is."""


class KaggleToken(requests.auth.AuthBase):
    """Kaggle's access token (``KGAT_...``, kaggle-cli >= 1.8) sent as its own client sends it:
    ``Authorization: Bearer <token>`` (kagglesdk/kaggle_http_client.py, ``BearerAuth``)."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r

    def __repr__(self) -> str:  # never the token itself
        return "KaggleToken(...)"


def _token_from(value: str) -> str:
    # kagglesdk's get_access_token_from_env: KAGGLE_API_TOKEN holds the token, or the path of a file holding it
    path = Path(value).expanduser()
    return path.read_text().strip() if len(value) < 4096 and path.is_file() else value.strip()


def kaggle_credentials() -> KaggleToken | tuple[str, str] | None:
    """Kaggle's credentials where its own clients look, the access token first as kaggle-cli >= 1.8 does.

    Order: ``KAGGLE_API_TOKEN`` (the variable, then Colab's Secrets), ``~/.kaggle/access_token``
    (kagglesdk's kaggle_env.get_access_token_from_env reads these), then the legacy pair
    ``KAGGLE_USERNAME``/``KAGGLE_KEY`` (the variables, then Colab's Secrets) and ``kaggle.json`` in
    ``KAGGLE_CONFIG_DIR`` or ``~/.kaggle``. A token is sent as a bearer token, the pair as HTTP Basic auth.
    """
    token = os.environ.get("KAGGLE_API_TOKEN") or colab_secret("KAGGLE_API_TOKEN")
    if token:
        return KaggleToken(_token_from(token))
    for name in ("access_token", "access_token.txt"):  # ".txt" as kagglesdk also accepts, for Windows editors
        file = Path.home() / ".kaggle" / name
        if file.is_file() and file.read_text().strip():
            return KaggleToken(file.read_text().strip())
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"]
    username, key = colab_secret("KAGGLE_USERNAME"), colab_secret("KAGGLE_KEY")
    if username and key:
        return username, key
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text())
            return data["username"], data["key"]
        except (ValueError, KeyError, TypeError) as e:
            raise MissingCredentials(f"{config} is not a kaggle.json with \"username\" and \"key\" ({e!r}); "
                                     "download a new token from kaggle.com (Settings > API)") from None
    return None


def _how_to_give(spec: DatasetSpec) -> str:
    return (
        f"{spec.name} is downloaded from Kaggle ({spec.homepage}), which needs an account: on kaggle.com open "
        "Settings > API > Generate New Token and set the environment variable KAGGLE_API_TOKEN to the token "
        "(KGAT_...); in Colab, add it to Secrets (the key icon) as KAGGLE_API_TOKEN and give this notebook access. "
        "A legacy key works too: kaggle.json in ~/.kaggle/, or KAGGLE_USERNAME and KAGGLE_KEY (variables or Colab "
        "Secrets). Or use your own images: set DATA_FOLDER to a folder with one sub-folder of images per class."
    )


# What a sources override entry may say. The checksums are in the scheme of the source it replaces
# (registry.DatasetSpec.checksum_scheme): a mirror of a fastai archive gives its size and the md5 of its first MiB.
_ENTRY_KEYS = ("url", "size", "md5", "sha256")
_NEEDS = {"fastai_first_mib": ("size", "md5"), "md5": ("md5",), "sha256": ("sha256",)}
_HEX = {"md5": 32, "sha256": 64}


def _entry_error(file: Path, name: str, problem: str) -> SourcesFileError:
    return SourcesFileError(
        f"{file} (from {SOURCES_ENV} or sources=), entry {name!r}: {problem}. An entry reads "
        '{"url": "https://...", <checksums in the scheme of the source it replaces>}; fix the entry or remove it'
    )


def _check_entry(file: Path, name: str, entry: object) -> dict:
    if not isinstance(entry, dict):
        raise _entry_error(file, name, f"expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise _entry_error(file, name, f"unknown key(s) {', '.join(unknown)}; the keys are {', '.join(_ENTRY_KEYS)}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _entry_error(file, name, f"'url' must be an http(s) URL, got {url!r}")
    spec = DATASETS[name]
    if "size" in entry and (not isinstance(entry["size"], int) or isinstance(entry["size"], bool) or entry["size"] <= 0):
        raise _entry_error(file, name, f"'size' must be a positive number of bytes, got {entry['size']!r}")
    for key, length in _HEX.items():
        if key in entry and not (isinstance(entry[key], str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", entry[key])):
            raise _entry_error(file, name, f"'{key}' must be {length} hex digits, got {entry[key]!r}")
    scheme = spec.checksum_scheme
    if scheme:
        missing = [k for k in _NEEDS[scheme] if k not in entry]
        other = [k for k in _HEX if k in entry and k not in _NEEDS[scheme]]
        if missing or other:
            what = ("the size and the md5 of the file's first MiB (fastdownload's path_stats), as fastai publishes "
                    "them" if scheme == "fastai_first_mib" else f"the whole file's {scheme}")
            raise _entry_error(file, name, f"{name} is checked by {scheme!r}: give {what} ("
                               f"{', '.join(_NEEDS[scheme])}){'; not ' + ', '.join(other) if other else ''}")
    elif not any(k in entry for k in _HEX):
        raise _entry_error(file, name, f"{name}'s source publishes no checksum, so its mirror must: give the "
                           "whole file's sha256 (or md5)")
    return entry


def read_sources(path: Path | str) -> dict[str, dict]:
    """A sources override file: ``{dataset name: {"url": ..., checksums}}``, each entry checked.

    Keys starting with ``_`` are comments. Errors name the file, the entry and what to write instead.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise SourcesFileError(f"sources override {file} (from {SOURCES_ENV} or sources=) does not exist; "
                               f"point {SOURCES_ENV} at your JSON file, or unset it to use the registry's sources") from None
    except ValueError as e:
        raise SourcesFileError(f"{file} is not valid JSON ({e}); a sources override is a JSON object of "
                               '{"<dataset>": {"url": ..., checksums}}') from None
    if not isinstance(data, dict):
        raise SourcesFileError(f"{file}: expected a JSON object keyed by dataset name, got {type(data).__name__}")
    entries = {}
    for name, entry in data.items():
        if name.startswith("_"):
            continue
        if name not in DATASETS:
            raise SourcesFileError(f"{file}: {name!r} is not a dataset in the registry; the names are "
                                   f"{', '.join(sorted(DATASETS))}")
        entries[name] = _check_entry(file, name, entry)
    return entries


def apply_sources(spec: DatasetSpec, sources: Path | str | None = None) -> DatasetSpec:
    """`spec` as the sources override (the file `sources`, else ``$VISION_STUDIES_SOURCES``) redirects it.

    The archive keeps its registry file name (its layout does not change with its host); the mirror's
    checksums replace the registry's, in the same scheme; a mirror needs no Kaggle account.
    """
    path = sources or os.environ.get(SOURCES_ENV)
    if not path:
        return spec
    entry = read_sources(path).get(spec.name)
    if entry is None:
        return spec
    scheme = spec.checksum_scheme or ("sha256" if "sha256" in entry else "md5")
    return replace(
        spec, url=entry["url"], filename=spec.archive_name, size=entry.get("size"), md5=entry.get("md5"),
        sha256=entry.get("sha256"), checksum_scheme=scheme, credentials="",
    )


def _recorded(root: Path) -> dict[str, str]:
    path = root / RECORDED
    return json.loads(path.read_text()) if path.exists() else {}


def fetch_dataset(
    spec: DatasetSpec, root: Path | str = "data", progress: bool = True, sources: Path | str | None = None
) -> Path:
    """The dataset's folder under `root`, downloading, verifying and unpacking it the first time.

    The checksum is checked in the scheme the source publishes (fastai's cover the first MiB). A source
    that publishes none is trusted on first use: its sha256 is recorded in ``<root>/recorded_sha256.json``
    and every later download is checked against it. `sources` (default ``$VISION_STUDIES_SOURCES``) is a
    sources override file that may serve the dataset from elsewhere (`apply_sources`).
    """
    if spec.files:  # separate idx files, not an archive (Fashion-MNIST): a local copy or the publisher's files
        from .idx import fetch_idx_dataset

        return fetch_idx_dataset(spec, root, progress=progress)
    spec = apply_sources(spec, sources)
    root = Path(root)
    folder = root / spec.archive_root
    if (folder / ".complete").exists():
        return folder
    # one download and unpack of an archive at a time: studies sharing one (Stanford Dogs, CUB) may run at once
    with _locked(root / "archives" / f"{spec.archive_name}.lock"):
        return _fetch_unlocked(spec, root, folder, progress)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block where the platform has one (fastdownload does the same)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        if fcntl:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl:
                fcntl.flock(f, fcntl.LOCK_UN)


def _fetch_unlocked(spec: DatasetSpec, root: Path, folder: Path, progress: bool) -> Path:
    done = folder / ".complete"
    if done.exists():  # made by another run while this one waited for the lock
        return folder
    auth = None
    if spec.credentials == "kaggle":
        auth = kaggle_credentials()
        if auth is None:
            raise MissingCredentials(_how_to_give(spec))
    recorded = _recorded(root)
    sha256 = spec.sha256 or (None if spec.md5 else recorded.get(spec.url))
    try:
        archive = download_file(
            spec.url, root / "archives" / spec.archive_name, size=spec.size, md5=spec.md5, sha256=sha256,
            progress=progress, auth=auth, scheme=spec.checksum_scheme,
        )
    except DownloadError as e:
        if spec.credentials and any(code in str(e) for code in ("401", "403")):
            raise MissingCredentials(f"the server refused our credentials. {_how_to_give(spec)}") from e
        raise
    if not (spec.md5 or spec.sha256 or spec.url in recorded):
        recorded[spec.url] = file_digest(archive, "sha256")
        (root / RECORDED).write_text(json.dumps(recorded, indent=2) + "\n")
    unpack_to = root if spec.archive_has_root else folder
    extract_archive(archive, unpack_to)
    if spec.inner_archive:
        inner = next(unpack_to.rglob(spec.inner_archive), None)
        if inner is None:
            raise FileNotFoundError(f"{archive} holds no {spec.inner_archive}; the source's layout has changed")
        extract_archive(inner, root)
        inner.unlink()
    if not folder.is_dir():
        raise FileNotFoundError(f"{archive} did not unpack to {folder}; the registry's archive_root is wrong")
    done.touch()
    return folder


def read_url_list(path: Path | str) -> dict[str, list[str]]:
    """A CSV of ``label,url`` rows (a header row is allowed) as {label: [urls]}; a bad row names its line."""
    urls: dict[str, list[str]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.strip().lower().replace(" ", "") == "label,url":
            continue
        label, _, url = line.partition(",")
        label, url = label.strip(), url.strip()
        if not label or not url.startswith(("http://", "https://")):
            raise ValueError(f"{path}, line {number}: expected 'label,url' with an http(s) URL, got {line!r}")
        urls.setdefault(label, []).append(url)
    if not urls:
        raise ValueError(f"{path} lists no images; write one 'label,url' row per image")
    return urls


def download_image_urls(
    urls: Mapping[str, Sequence[str]], dest: Path | str, progress: bool = True
) -> dict[str, list[str]]:
    """Fetch image URLs into ``<dest>/<class>/``, the way learners build a set from web searches.

    Each URL is downloaded once, kept only if it opens as an image, and dropped if its bytes repeat an
    image already kept (the same photo is often found under several URLs). Returns what was left out
    and why, per URL, so nothing is dropped silently.
    """
    from .images import find_bad_images

    dest = Path(dest)
    seen = {_sha256(p): p for p in dest.rglob("*") if p.is_file()}  # what earlier calls kept
    left_out: dict[str, list[str]] = {}
    items = [(label, url) for label, class_urls in urls.items() for url in class_urls]
    for label, url in tqdm(items, desc="images", unit="url", disable=not progress):
        name = hashlib.sha1(url.encode()).hexdigest()[:16] + Path(url.split("?")[0]).suffix.lower()[:5]
        target = dest / label / name
        if target.exists():
            continue
        try:
            download_file(url, target, retries=1, backoff=0.5, timeout=(5.0, 20.0), progress=False)
        except (DownloadError, OSError) as e:
            left_out.setdefault("download failed", []).append(f"{url}: {e}")
            continue
        problems = find_bad_images([target])
        if problems:
            target.unlink()
            left_out.setdefault("not an image", []).append(f"{url}: {problems[0].problem}")
            continue
        digest = _sha256(target)
        if digest in seen:
            target.unlink()
            left_out.setdefault("duplicate", []).append(f"{url}: same bytes as {seen[digest].name}")
            continue
        seen[digest] = target
    return left_out


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")
