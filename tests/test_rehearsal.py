"""The full-mode rehearsal: every notebook whose dataset the mirror serves runs with FIXTURE = False against
the loopback mirror (through the sources override), fine-tunes the offline EfficientNet-Lite0 where its
study is pretrained, and reaches its results record and export. Real papermill runs, about two minutes."""

from __future__ import annotations

import json
from pathlib import Path

from vision_studies.mirror import REHEARSAL_ARCH, rehearse, rehearsed_notebooks
from vision_studies.runner import find_notebooks
from vision_studies.studies import STUDIES

ROOT = Path(__file__).resolve().parent.parent


def test_every_notebook_runs_full_mode_against_the_mirror(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    notebooks, left = rehearsed_notebooks(find_notebooks(ROOT / "notebooks"))
    assert len(notebooks) >= 11 and not [nb for nb in left if int(nb.stem[:2]) <= 11]  # 01-11 all rehearsed
    runs = rehearse(notebooks, tmp_path / "rehearsal", workers=2)
    failed = [f"{r.notebook}: {r.error} (see {r.output})" for r in runs if not r.ok]
    assert not failed, failed
    for run in runs:
        record = json.loads((tmp_path / "rehearsal" / "models" / run.notebook / "results.json").read_text())
        assert record["fixture"] is False, run.notebook
        if STUDIES[run.notebook].full.pretrained:
            assert record["arch"] == REHEARSAL_ARCH and record["pretrained"] is True, run.notebook
    exports = {p.parent.parent.name for p in (tmp_path / "rehearsal" / "models").glob("*/export/config.json")}
    assert exports >= {r.notebook for r in runs} - {"11_backbone_comparison"}  # 11 records a table, exports none
    # the rehearsal's data stayed in its own folder, each dataset unpacked from the mirror's archive
    assert (tmp_path / "rehearsal" / "data" / "archives" / "CCSN.zip").is_file()
    assert not (ROOT / "data" / "recorded_sha256.json").exists() or "127.0.0.1" not in (ROOT / "data" / "recorded_sha256.json").read_text()
