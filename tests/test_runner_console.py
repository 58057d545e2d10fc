"""The main job's console: its progress bar, its table and a failure's own message, not the kernel's log."""

from __future__ import annotations

import subprocess
import sys

import nbformat


def _notebook(path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('FIXTURE = False\nOUTPUT_DIR = "models"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def test_console_shows_the_table_and_the_failure_not_the_kernels_log(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _notebook(notebooks / "01_fine.ipynb", "print('fine')")
    _notebook(notebooks / "02_broken.ipynb", "raise ValueError('the broken notebook says why: 42')")
    out = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "vision_studies", "run-notebooks", "--notebooks-dir", str(notebooks), "--out", str(out),
         "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 1, console  # one notebook failed
    assert "01_fine" in done.stdout and "02_broken" in done.stdout and "FAILED" in done.stdout  # the table
    assert "ValueError: the broken notebook says why: 42" in done.stderr  # the failure's own message
    assert "without encryption" not in console and "KeyboardInterrupt" not in console
    # the kernel still says what it says, in its own log beside the executed notebook
    assert "without encryption" in (out / "01_fine.kernel.log").read_text()


def test_each_kernel_is_shut_down_when_its_notebook_is_done(tmp_path):
    # One worker runs both notebooks in turn; the second looks for the first one's kernel. nbclient leaves a
    # kernel whose manager it was handed (ours) running until the worker ends: 1.2 GB a study notebook.
    from vision_studies.runner import run_notebooks

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    pid_file = tmp_path / "first_kernel.pid"
    _notebook(notebooks / "01_first.ipynb", f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))")
    _notebook(notebooks / "02_second.ipynb", "import os, time\n"
              f"pid = int(open({str(pid_file)!r}).read())\n"
              "deadline = time.monotonic() + 30\n"
              "while os.path.exists(f'/proc/{pid}') and time.monotonic() < deadline:\n"
              "    time.sleep(0.1)\n"
              "state = open(f'/proc/{pid}/stat').read().split()[2] if os.path.exists(f'/proc/{pid}') else 'gone'\n"
              "assert state in ('gone', 'Z'), f'the first kernel, {pid}, is still running ({state})'")
    runs = run_notebooks(sorted(notebooks.glob("*.ipynb")), tmp_path / "runs", workers=1, cwd=tmp_path)
    assert [r.ok for r in runs] == [True, True], [r.error for r in runs]
