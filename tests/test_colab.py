"""Colab: its Secrets, its Drive, the install cell, and the one repository address everything names."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from vision_studies import __version__
from vision_studies.colab import (
    DRIVE_FOLDER, LOCAL_OUTPUTS, REPO_URL, colab_secret, drive_folder, in_colab, install_cell, output_dir,
    package_requirement,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_never-to-be-printed-0123456789"


def _fake_colab(monkeypatch, secrets: dict[str, object]) -> None:
    """Colab's own modules stand-in: google.colab.userdata.get with the three "no value" errors it raises
    (google/colab/userdata.py). A secret's value is returned; ``raises=<error name or class>`` raises."""
    userdata = types.ModuleType("google.colab.userdata")
    for name in ("SecretNotFoundError", "NotebookAccessError", "TimeoutException"):
        setattr(userdata, name, type(name, (Exception,), {}))

    def get(key):
        value = secrets.get(key, "raises=SecretNotFoundError")
        if isinstance(value, str) and not value.startswith("raises="):
            return value
        error = getattr(userdata, value.removeprefix("raises=")) if isinstance(value, str) else value
        raise error(key)

    userdata.get = get
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)


def test_outside_colab_there_are_no_secrets():
    assert not in_colab()
    assert colab_secret("HF_TOKEN") is None


def test_a_colab_secret_is_returned_and_never_printed(monkeypatch, capsys):
    _fake_colab(monkeypatch, {"HF_TOKEN": SECRET})
    assert in_colab()
    assert colab_secret("HF_TOKEN") == SECRET
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err


def test_missing_denied_or_unreachable_secrets_are_none(monkeypatch):
    _fake_colab(monkeypatch, {"DENIED": "raises=NotebookAccessError", "SLOW": "raises=TimeoutException", "EMPTY": ""})
    for name in ("ABSENT", "DENIED", "SLOW", "EMPTY"):
        assert colab_secret(name) is None, name


def test_other_faults_of_secrets_are_not_hidden(monkeypatch):
    _fake_colab(monkeypatch, {"BAD NAME": ValueError})  # userdata.get's own check on names
    with pytest.raises(ValueError):
        colab_secret("BAD NAME")


def test_outputs_go_to_drive_when_it_is_mounted(tmp_path):
    mount = tmp_path / "drive"
    assert drive_folder(mount) is None
    assert output_dir("", mount=mount) == LOCAL_OUTPUTS  # no Drive: the working folder, gone with the runtime
    (mount / "MyDrive").mkdir(parents=True)
    assert output_dir("", mount=mount) == mount / "MyDrive" / DRIVE_FOLDER
    assert output_dir(None, mount=mount) == mount / "MyDrive" / DRIVE_FOLDER
    # wherever the learner points wins, Drive or not
    assert output_dir("elsewhere/models", mount=mount) == Path("elsewhere/models")


def test_drive_as_drive_py_names_it(tmp_path):
    (tmp_path / "My Drive").mkdir()  # what google/colab/drive.py looks for
    assert output_dir(mount=tmp_path) == tmp_path / "My Drive" / DRIVE_FOLDER


def test_the_install_cell_installs_this_version():
    cell = install_cell()
    assert f'%pip install "vision-studies @ git+{REPO_URL}@v{__version__}"' in cell
    assert package_requirement("") == f"vision-studies @ git+{REPO_URL}"
    assert "-q" not in cell.split()  # pip's output, errors first, shows in the notebook


def _run_cell(source: str, monkeypatch, in_colab: bool):
    from IPython.core.interactiveshell import InteractiveShell

    if in_colab:
        _fake_colab(monkeypatch, {})
    shell = InteractiveShell.instance()
    try:
        return shell, shell.run_cell(source)
    finally:
        InteractiveShell.clear_instance()


def test_a_failed_install_stops_the_notebook_and_says_what_to_do(monkeypatch, tmp_path):
    # a requirement pip cannot meet, so that no network is involved; the cell is otherwise every notebook's
    cell = install_cell(f"vision-studies @ file://{tmp_path}/no-such-checkout")
    shell, result = _run_cell(cell, monkeypatch, in_colab=True)
    assert shell.user_ns["_exit_code"] != 0
    assert isinstance(result.error_in_exec, RuntimeError)
    assert "install the newest instead" in str(result.error_in_exec)


def test_outside_colab_the_install_cell_does_nothing(monkeypatch):
    shell, result = _run_cell(install_cell(), monkeypatch, in_colab=False)
    assert result.success and "_exit_code" not in shell.user_ns  # pip never ran


def _repository_addresses(text: str) -> set[str]:
    """Every address of a GitHub repository of this project in `text`: plain, git+, and Colab's /github/ form."""
    found = set()
    for owner, repo in re.findall(r"github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?(?=[/@\"'\s)#]|$)", text):
        found.add(f"https://github.com/{owner}/{repo}")
    for owner, repo in re.findall(r"colab\.research\.google\.com/github/([\w.-]+)/([\w.-]+)/", text):
        found.add(f"https://github.com/{owner}/{repo}")
    return found


def test_every_notebook_readme_and_the_space_template_name_one_repository():
    files = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "README.md", ROOT / "vision_studies" / "app.py"]
    named = {}
    for path in files:
        for address in _repository_addresses(path.read_text(encoding="utf-8")):
            if "vision-studies" in address or "vision_studies" in address:
                named.setdefault(address, []).append(path.name)
    assert set(named) <= {REPO_URL}, named


def test_the_space_installs_what_the_notebooks_install():
    from vision_studies.app import PACKAGE_REQUIREMENT

    assert PACKAGE_REQUIREMENT == package_requirement()


def _notebooks():
    import nbformat

    return [(path.name, nbformat.read(str(path), as_version=4)) for path in sorted((ROOT / "notebooks").glob("*.ipynb"))]


def test_every_notebook_installs_with_the_one_install_cell():
    for name, nb in _notebooks():
        installs = [c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source]
        assert len(installs) == 1 and nb.cells.index(installs[0]) == 1, f"{name}: one install cell, the first code cell"
        assert installs[0].source == install_cell(), f"{name}: write its install cell from colab.install_cell()"


def test_no_notebook_or_doc_names_the_cli_huggingface_hub_dropped():
    # huggingface_hub 1.0 removed `huggingface-cli`; `hf auth login` is its login (hf auth login --help)
    for name, nb in _notebooks():
        assert not [i for i, c in enumerate(nb.cells) if "huggingface-cli" in c.source], name
    for path in [ROOT / "README.md", *sorted((ROOT / "vision_studies").glob("*.py"))]:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if "huggingface-cli" in line]
        assert all("no longer exists" in line for line in lines), (path.name, lines)
