"""Dataset sources over a real loopback HTTP server: recorded checksums, archives in archives, Kaggle
credentials, and image URL lists with duplicates and broken links."""

from __future__ import annotations

import base64
import io
import zipfile
from dataclasses import replace

import pytest
from loopback import serving

from vision_studies.data import items_table
from vision_studies.download import ChecksumError
from vision_studies.registry import get_spec
from vision_studies.sources import MissingCredentials, download_image_urls, fetch_dataset, read_url_list


@pytest.fixture
def server():
    with serving("Basic " + base64.b64encode(b"user:secret").decode()) as s:  # /private/: HTTP Basic user:secret
        yield s


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _clouds_zip(data_root) -> bytes:
    """CCSN.zip as Dataverse serves it (CCSN_v2/<genus>/...), built from the clouds fixture."""
    from vision_studies.fixtures import make_fixture

    folder = make_fixture("clouds", data_root / "fixtures")
    return _zip({f"CCSN_v2/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in folder.rglob("*.jpg")})


def test_unpublished_checksum_is_recorded_then_enforced(server, tmp_path, data_root):
    server.files["/clouds.zip"] = _clouds_zip(data_root)
    # as a source that publishes no checksum (the registry pins CCSN's md5 since; potholes has none)
    spec = replace(get_spec("clouds"), url=f"{server.url}/clouds.zip", md5=None, checksum_scheme="")
    folder = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "CCSN_v2" and (folder / ".complete").exists()
    assert set(items_table(spec, folder)["label"]) == {"Ci", "Cu", "St"}
    recorded = (tmp_path / "data" / "recorded_sha256.json").read_text()
    assert spec.url in recorded
    # the source changes under the same URL: a fresh download must not be trusted
    server.files["/clouds.zip"] = _zip({"CCSN_v2/Ci/Ci-N1.jpg": b"something else"})
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        _refetch(spec, tmp_path)


def _refetch(spec, tmp_path):
    import shutil

    shutil.rmtree(tmp_path / "data" / "CCSN_v2")
    (tmp_path / "data" / "archives" / spec.archive_name).unlink()
    return fetch_dataset(spec, tmp_path / "data", progress=False)


def test_kaggle_source_says_how_to_give_credentials(server, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    spec = replace(get_spec("potholes"), url=f"{server.url}/private/potholes.zip")
    with pytest.raises(MissingCredentials, match="KAGGLE_USERNAME.*DATA_FOLDER"):
        fetch_dataset(spec, tmp_path / "data", progress=False)
    assert server.seen == []  # nothing was asked of the server without credentials


def test_kaggle_credentials_are_sent_and_a_refusal_is_explained(server, tmp_path, monkeypatch, data_root):
    from vision_studies.fixtures import make_fixture

    folder = make_fixture("potholes", data_root / "fixtures")
    server.files["/private/potholes.zip"] = _zip({p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.jpg")})
    spec = replace(get_spec("potholes"), url=f"{server.url}/private/potholes.zip")
    monkeypatch.setenv("KAGGLE_USERNAME", "user")
    monkeypatch.setenv("KAGGLE_KEY", "wrong")
    with pytest.raises(MissingCredentials, match="refused"):
        fetch_dataset(spec, tmp_path / "data", progress=False)
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    got = fetch_dataset(spec, tmp_path / "data", progress=False)
    assert got == tmp_path / "data" / "potholes"  # the archive has no root folder: unpacked into one
    assert set(items_table(spec, got)["label"]) == {"normal", "potholes"}


def test_image_urls_are_checked_and_deduplicated(server, tmp_path, data_root):
    from vision_studies.fixtures import make_fixture

    folder = make_fixture("potholes", data_root / "fixtures")
    a, b = (folder / "normal" / "1.jpg").read_bytes(), (folder / "potholes" / "1.jpg").read_bytes()
    server.files.update({"/a.jpg": a, "/a-again.jpg": a, "/b.jpg": b, "/page.jpg": b"<html>not a photo</html>"})
    urls = {"normal": [f"{server.url}/a.jpg", f"{server.url}/a-again.jpg", f"{server.url}/gone.jpg"],
            "potholes": [f"{server.url}/b.jpg", f"{server.url}/page.jpg"]}
    left_out = download_image_urls(urls, tmp_path / "mine", progress=False)
    kept = sorted(p.relative_to(tmp_path / "mine").parts[0] for p in (tmp_path / "mine").rglob("*") if p.is_file())
    assert kept == ["normal", "potholes"]
    assert len(left_out["duplicate"]) == 1 and "a-again" in left_out["duplicate"][0]
    assert len(left_out["not an image"]) == 1 and "page.jpg" in left_out["not an image"][0]
    assert len(left_out["download failed"]) == 1 and "gone.jpg" in left_out["download failed"][0]


def test_url_list_errors_name_the_line(tmp_path):
    good = tmp_path / "urls.csv"
    good.write_text("label,url\nnormal,https://example.org/1.jpg\npotholes,https://example.org/2.jpg\n")
    assert read_url_list(good) == {"normal": ["https://example.org/1.jpg"], "potholes": ["https://example.org/2.jpg"]}
    bad = tmp_path / "bad.csv"
    bad.write_text("normal,https://example.org/1.jpg\npotholes;ftp://example.org/2.jpg\n")
    with pytest.raises(ValueError, match="line 2"):
        read_url_list(bad)
