"""Where a study's images come from: a registry dataset, the learner's own folder, or a list of image URLs.

The dataset path is the real one: download (with credentials where the source wants them), verify
against the published checksum or, where none is published, against the sha256 recorded at the first
download, unpack (an archive inside the archive too), and mark the folder complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .download import DownloadError, download_file, extract_archive, file_digest
from .registry import DatasetSpec

__all__ = ["fetch_dataset", "kaggle_credentials", "MissingCredentials", "read_url_list", "download_image_urls"]

RECORDED = "recorded_sha256.json"


class MissingCredentials(RuntimeError):
    """The source needs an account the environment does not give us."""


def kaggle_credentials() -> tuple[str, str] | None:
    """Kaggle's API key as its own client looks for it: KAGGLE_USERNAME/KAGGLE_KEY, then ~/.kaggle/kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"]
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if config.is_file():
        data = json.loads(config.read_text())
        return data["username"], data["key"]
    return None


def _how_to_give(spec: DatasetSpec) -> str:
    return (
        f"{spec.name} is downloaded from Kaggle ({spec.homepage}), which needs an account: on kaggle.com open "
        "Settings > API > Create New Token, then either put the downloaded kaggle.json in ~/.kaggle/ "
        "(in Colab: upload it and run `!mkdir -p ~/.kaggle && mv kaggle.json ~/.kaggle/`), or set the environment "
        "variables KAGGLE_USERNAME and KAGGLE_KEY. Or use your own images: set DATA_FOLDER to a folder with one "
        "sub-folder of images per class."
    )


def _recorded(root: Path) -> dict[str, str]:
    path = root / RECORDED
    return json.loads(path.read_text()) if path.exists() else {}


def fetch_dataset(spec: DatasetSpec, root: Path | str = "data", progress: bool = True) -> Path:
    """The dataset's folder under `root`, downloading, verifying and unpacking it the first time.

    A source that publishes no checksum is trusted on first use: its sha256 is recorded in
    ``<root>/recorded_sha256.json`` and every later download is checked against it.
    """
    root = Path(root)
    folder = root / spec.archive_root
    done = folder / ".complete"
    if done.exists():
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
            progress=progress, auth=auth,
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
