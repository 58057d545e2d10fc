"""Kernels forked from a warm process (warm_kernels.py) against kernels started fresh: the same kernel as the
notebook sees it, failures and timeouts reported the same way, and nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from vision_studies import warm_kernels
from vision_studies.runner import run_notebooks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernels are forked on Linux only")

# What a notebook can tell about its kernel: each line is printed as "name=value" by the one cell
PROBE = r'''
import importlib, json, logging, os, sys
preloaded = "torch" in sys.modules
from vision_studies import warm_kernels as w
for name in w.PRELOAD + w.PRELOAD_IF_INSTALLED + w.PRELOAD_WITHOUT_WIDGETS:  # what their imports do, fresh or forked
    importlib.import_module(name)
import fastprogress.fastprogress as fp, matplotlib, tqdm.auto, tqdm.notebook, torch, timm, huggingface_hub.utils
from IPython import get_ipython
logging.getLogger("torch").warning("torch logs under the cell")
print(json.dumps({
    "preloaded": preloaded,
    "shell": type(get_ipython()).__name__,
    "progress_bar": fp.progress_bar.__name__,
    "tqdm_in_notebook": issubclass(tqdm.auto.tqdm, tqdm.notebook.tqdm),
    "hub_tqdm_in_notebook": issubclass(huggingface_hub.utils.tqdm, tqdm.notebook.tqdm),  # timm's downloads' bar
    "backend": matplotlib.get_backend(),
    "cwd": os.getcwd(),
    "threads": os.environ.get("OMP_NUM_THREADS"),
    "torch_threads": torch.get_num_threads(),
    "parent_is_runner": os.getppid() != 1,
    "environment": sorted(os.environ),
    "parent_in_env": os.environ.get("JPY_PARENT_PID") == str(os.getppid()),
    "parent_watched": __import__("ipykernel.kernelapp").kernelapp.IPKernelApp.instance().parent_handle == os.getppid(),
    "own_group": os.getpgid(0) == os.getpid(),
    "argv0": os.path.basename(sys.argv[0]),
    "path": sys.path[:3],
}))
'''


def _notebook(folder, name: str, *sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _probe(run) -> tuple[dict, str]:
    outputs = nbformat.read(run.output, as_version=4).cells[-1].outputs  # papermill adds a cell of parameters
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    return json.loads(stdout), stderr


def test_a_forked_kernel_is_the_kernel_a_fresh_start_gives_with_its_imports_done(tmp_path, monkeypatch):
    nb = _notebook(tmp_path, "00_probe", PROBE)
    work = tmp_path / "work"
    work.mkdir()
    seen = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(warm_kernels.SWITCH, switch)
        [run] = run_notebooks([nb], tmp_path / f"runs{switch}", workers=2, cwd=work)
        assert run.ok, run.error
        seen[switch] = _probe(run)
    (warm, warm_err), (fresh, fresh_err) = seen["1"], seen["0"]
    assert warm.pop("preloaded") is True and fresh.pop("preloaded") is False
    assert warm == fresh
    assert fresh["shell"] == "ZMQInteractiveShell" and fresh["progress_bar"] == "NBProgressBar"
    assert "inline" in fresh["backend"] and fresh["cwd"] == str(work)
    assert fresh["parent_is_runner"] and fresh["parent_watched"] and fresh["own_group"] and fresh["argv0"] == "ipykernel_launcher.py"
    assert "torch logs under the cell" in warm_err and "torch logs under the cell" in fresh_err


def test_preloading_leaves_every_module_that_looks_for_a_notebook_to_the_kernel():
    code = ("import sys; from vision_studies import warm_kernels as w; w.preload(); "
            "print(sorted(set(w.PRELOAD + w.PRELOAD_IF_INSTALLED + w.PRELOAD_WITHOUT_WIDGETS) - set(sys.modules)), "
            "[m for m in w.kernel_only() if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"  # this environment has every optional one, and no ipywidgets


def test_without_ipywidgets_only_the_modules_that_sense_a_notebook_through_it_are_preloaded(monkeypatch):
    """tqdm.auto takes the notebook's bar only through ipywidgets: without it, timm and what it imports may be
    preloaded; with it (Colab's case), every one of NOT_PRELOADED stays the kernel's."""
    import importlib.util

    real = importlib.util.find_spec
    for widgets, expected in ((False, set(warm_kernels.NOT_PRELOADED) - {"timm", "huggingface_hub", "tqdm.auto",
                                                                         "tqdm.autonotebook"}),
                              (True, set(warm_kernels.NOT_PRELOADED))):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, w=widgets: (real("json") if w else None) if name == "ipywidgets" else real(name, *a))
        assert set(warm_kernels.kernel_only()) == expected
        assert {"fastai", "fastprogress", "matplotlib"} <= expected  # they sense a notebook without ipywidgets


def test_an_optional_preload_that_is_not_installed_is_skipped(monkeypatch):
    """A package's dependency that another install lacks (trio comes with the test extra) costs nothing."""
    monkeypatch.setattr(warm_kernels, "NOT_PRELOADED", ())  # this test process has imported them all
    monkeypatch.setattr(warm_kernels, "PRELOAD", ("json",))
    monkeypatch.setattr(warm_kernels, "PRELOAD_IF_INSTALLED", ("no_such_module_here", "json.decoder"))
    warm_kernels.preload()
    monkeypatch.setattr(warm_kernels, "PRELOAD", ("no_such_module_here",))
    with pytest.raises(ModuleNotFoundError):  # the required ones still are
        warm_kernels.preload()


def test_a_kernel_that_dies_or_runs_too_long_is_reported_and_nothing_is_left_running(tmp_path, monkeypatch):
    monkeypatch.setenv(warm_kernels.SWITCH, "1")
    pids = tmp_path / "pids"
    record = f"import os; open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')"
    dies = _notebook(tmp_path, "00_dies", record, "os._exit(3)")
    sleeps = _notebook(tmp_path, "00_sleeps", record, "import time; time.sleep(60)")
    fine = _notebook(tmp_path, "00_fine", record, "print('after the others')")
    runs = run_notebooks([dies, sleeps, fine], tmp_path / "runs", workers=1, timeout=3)
    assert [r.ok for r in runs] == [False, False, True]
    assert "died" in runs[0].error.lower() or "dead" in runs[0].error.lower(), runs[0].error
    assert "timeout" in runs[1].error.lower() or "timed out" in runs[1].error.lower(), runs[1].error
    for pid in map(int, pids.read_text().split()):  # every kernel has exited and been waited for
        assert not os.path.exists(f"/proc/{pid}"), f"kernel {pid} is still there"


def test_kernels_start_fresh_where_they_cannot_be_forked(monkeypatch):
    monkeypatch.setenv(warm_kernels.SWITCH, "0")
    assert not warm_kernels.enabled()
    assert warm_kernels.launch([sys.executable, "-m", "ipykernel_launcher", "-f", "x.json"], {}) is None
    monkeypatch.setenv(warm_kernels.SWITCH, "1")
    assert warm_kernels._kernel_args(["/usr/bin/other-python", "-m", "ipykernel_launcher", "-f", "x"]) is None
    assert warm_kernels._kernel_args([sys.executable, "-m", "ipykernel_launcher", "-f", "x"]) == ["-f", "x"]


def test_a_warm_process_that_will_not_start_is_tried_once_per_worker(monkeypatch, tmp_path):
    tries = []

    def broken(log):
        tries.append(log)
        raise RuntimeError("the warm process did not start (it said '')")

    monkeypatch.setenv(warm_kernels.SWITCH, "1")
    monkeypatch.setattr(warm_kernels, "WarmProcess", broken)
    monkeypatch.setattr(warm_kernels, "_warm", None)
    monkeypatch.setattr(warm_kernels, "_failed", False)
    cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "x.json"]
    with open(tmp_path / "k.log", "w") as log:
        with pytest.raises(RuntimeError, match="did not start"):  # the runner logs it and starts the kernel afresh
            warm_kernels.launch(cmd, {"stdout": log})
        assert warm_kernels.launch(cmd, {"stdout": log}) is None  # the next kernels start afresh at once
    assert len(tries) == 1
