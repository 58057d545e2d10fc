"""Execute notebooks headlessly with papermill, several at once, each with its share of the CPU cores."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .errors import VisionStudiesError

__all__ = [
    "NotebookRun", "find_notebooks", "run_notebooks", "format_table", "render_html", "threads_per_worker",
    "available_cores", "previous_seconds", "RunnerNotInstalled", "require_runner",
]

# What executing notebooks headlessly needs beyond the package: its [runner] extra (Colab needs none of it)
RUNNER_MODULES = {"papermill": "papermill", "nbconvert": "nbconvert", "ipykernel": "ipykernel"}


class RunnerNotInstalled(VisionStudiesError, ImportError):
    """Running notebooks headlessly needs the [runner] extra, which a plain install (Colab's) leaves out."""


def require_runner() -> None:
    """Fail with what to install, before any worker starts, when papermill, nbconvert or ipykernel is missing."""
    import importlib.util

    missing = [dist for module, dist in RUNNER_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RunnerNotInstalled(
            f"running notebooks needs {', '.join(missing)}, which a plain install of vision-studies leaves out: "
            "pip install 'vision-studies[runner]' (from a checkout: pip install -e '.[runner]', or "
            "pip install -r requirements.txt for everything CI uses)"
        )


@dataclass
class NotebookRun:
    notebook: str
    ok: bool
    seconds: float
    output: Path
    record: dict[str, Any] | None
    error: str = ""

    @property
    def main_metric(self) -> str:
        metrics = (self.record or {}).get("metrics", {})
        for name in ("accuracy", "f1_macro"):
            if name in metrics:
                return f"{name} {metrics[name]:.4f}"
        return "-"


def find_notebooks(folder: Path | str, names: list[str] | None = None) -> list[Path]:
    """Notebooks in `folder`, all of them or those whose file name starts with one of `names` (`05`, `05_mnist`)."""
    every = sorted(Path(folder).glob("[0-9]*.ipynb"))
    if not every:
        raise FileNotFoundError(f"no study notebooks in {Path(folder).resolve()}; run from the repository root")
    if not names:
        return every
    chosen = []
    for name in names:
        found = [nb for nb in every if nb.stem == name or nb.name == name or nb.stem.startswith(f"{name}_")]
        if not found:
            raise FileNotFoundError(f"no notebook matches {name!r} in {folder}; there are: {', '.join(nb.stem for nb in every)}")
        chosen += [nb for nb in found if nb not in chosen]
    return chosen


def available_cores() -> int:
    """The cores this process may really use: its CPU affinity, capped by a container's CPU quota (cgroups).

    ``os.cpu_count()`` counts the host's cores: in a container limited to 2 CPUs on a 64-core host, torch
    would start 64 threads that take turns on 2 cores, each step waiting for all of them (a 60x slowdown).
    joblib (scikit-learn's) reads the affinity mask and the cgroup quota.
    """
    from joblib import cpu_count

    return max(1, cpu_count())


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Each worker's share of the cores, at least one: more threads than cores make every step wait on others."""
    return max(1, (cores or available_cores()) // workers)


def previous_seconds(out_dir: Path | str, notebooks: list[Path]) -> dict[Path, float]:
    """How long each notebook took when it last ran into `out_dir` (papermill records it), for those that did."""
    seconds = {}
    for nb in notebooks:
        try:
            meta = json.loads((Path(out_dir) / nb.name).read_text(encoding="utf-8"))["metadata"]["papermill"]
            seconds[nb] = float(meta["duration"])
        except (OSError, ValueError, KeyError, TypeError):  # never run there, still running, or failed early
            continue
    return seconds


_KERNEL_START_FAILURES = ("Kernel didn't respond", "Kernel died before replying to kernel_info")


def _kernel_manager(kernel_name: str, log):
    """A kernel manager whose kernel is forked from the worker's warm process (warm_kernels.py: torch and the
    rest already imported) where it can be, and writes its own stdout and stderr to `log`, not to the runner's
    console.

    The kernel process inherits the runner's terminal, and ipykernel writes there what is meant for a
    kernel's log: "Kernel is running over TCP without encryption" at every start (ipykernel/kernelapp.py,
    init_sockets), and "KeyboardInterrupt caught in kernel" (kernelbase.py, eventloops.py) when the SIGINT
    that jupyter_client sends before every shutdown request (manager.py, shutdown_kernel) lands while the
    kernel is still handling a message. Neither is about the notebook; cell outputs and errors reach papermill through
    the kernel's messages, not through these streams, so the runner still shows a failure's own message.
    """
    from jupyter_client.manager import AsyncKernelManager

    from . import warm_kernels

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            return await super().start_kernel(**kw)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            """A kernel forked from this worker's warm process (warm_kernels.py), else started as jupyter_client does."""
            try:
                forked = warm_kernels.launch(kernel_cmd, kw)
            except (OSError, RuntimeError) as e:  # the usual start still works; the log says why this one did not
                print(f"warning: starting the kernel afresh ({e})", file=log, flush=True)
                forked = None
            if forked is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            # what LocalProvisioner.launch_kernel records of the Popen it makes; its poll, wait, signals and kill
            # then work on the forked kernel (its own process group, as jupyter_client's launcher gives it)
            p = self.provisioner
            p.process, p.pid, p.pgid, p.cwd = forked, forked.pid, forked.pid, kw.get("cwd") or os.getcwd()
            self._reconcile_connection_info(p.connection_info)

    return LoggedKernelManager(kernel_name=kernel_name)


@contextmanager
def _shut_down_after(km):
    """`km`, its kernel shut down on the way out. nbclient shuts down only kernels of managers it made itself
    (`owns_km`); one handed in, as ours is, lived on until the worker process ended: 1.2 GB a notebook, 24 of
    them at once when CI's two tiers ran side by side, until the system killed a pytest for memory."""
    from jupyter_core.utils import run_sync

    try:
        yield km
    finally:
        if km.has_kernel:
            try:
                run_sync(km.shutdown_kernel)(now=True)
            except Exception as e:  # the notebook's own outcome stands; say why its kernel may still be there
                print(f"warning: could not shut down the kernel (pid {getattr(km.provisioner, 'pid', '?')}): {e!r}",
                      file=sys.stderr)


def _execute(notebook: Path, out_dir: Path, parameters: dict[str, Any], cwd: Path, threads: int, timeout: int) -> NotebookRun:
    # Set in this worker process before the kernel starts, so the kernel's torch and BLAS inherit them.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # Finding the kernel imports ipykernel.kernelspec here; in ipykernel 6 (Colab's 6.17) that imports debugpy,
    # whose pydevd prints "Debugger warning: It seems that frozen modules are being used" on Python 3.11+
    # unless this is set (the warning names it). Nobody attaches a debugger to a headless run.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = out_dir / notebook.name
    models = out_dir / "models"
    start = time.perf_counter()
    error = ""
    kernel_log = out_dir / f"{notebook.stem}.kernel.log"
    for _ in range(2):
        try:
            with (open(kernel_log, "w", encoding="utf-8") as log,
                  _shut_down_after(_kernel_manager("python3", log)) as km):
                papermill.execute_notebook(
                    str(notebook), str(output), parameters={"OUTPUT_DIR": str(models), **parameters},
                    cwd=str(cwd), progress_bar=False, execution_timeout=timeout, kernel_name="python3", km=km,
                )
            error = ""
            break
        except Exception as e:  # papermill's PapermillExecutionError carries the failing cell's traceback
            error = f"{e.__class__.__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            if not isinstance(e, PapermillExecutionError):  # the kernel itself failed: its own words are there
                error += f" (the kernel's log: {kernel_log})"
            # Kernels started at the same moment can pick the same free port; the loser never answers.
            # Nothing of the notebook has run then, so it is started once more.
            started = isinstance(e, PapermillExecutionError)  # a cell failed: the kernel had answered
            if started or not any(sign in str(e) for sign in _KERNEL_START_FAILURES):
                break
    seconds = time.perf_counter() - start
    record_path = models / notebook.stem / "results.json"
    record = json.loads(record_path.read_text()) if record_path.exists() and not error else None
    return NotebookRun(notebook.stem, not error, seconds, output, record, error)


def run_notebooks(
    notebooks: list[Path],
    out_dir: Path | str = "runs",
    parameters: dict[str, Any] | Callable[[Path], dict[str, Any]] | None = None,
    workers: int | None = None,
    cwd: Path | str = ".",
    timeout: int = 1800,
) -> list[NotebookRun]:
    """Execute `notebooks` with papermill, `workers` at a time; executed copies and records go to `out_dir`.

    `parameters` overrides each notebook's `parameters` cell (`{"FIXTURE": True}` for CI); a function of the
    notebook's path gives each its own. Results come
    back in the order given, whatever order they finish in. The notebooks that took longest in the previous
    run into `out_dir` start first (new ones before them all), so that no long one is left to run alone at
    the end while the other cores idle.
    """
    require_runner()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    workers = max(1, min(workers or cores, len(notebooks)))
    threads = threads_per_worker(workers, cores)
    before = previous_seconds(out_dir, notebooks)
    order = sorted(notebooks, key=lambda nb: -before.get(nb, float("inf")))  # stable: ties keep the given order
    results: dict[Path, NotebookRun] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(_execute, nb.resolve(), out_dir, (parameters(nb) if callable(parameters) else parameters) or {},
                        Path(cwd).resolve(), threads, timeout): nb
            for nb in order
        }
        with tqdm(total=len(futures), desc=f"notebooks ({workers} at a time, {threads} thread(s) each)", unit="nb") as bar:
            for future in as_completed(futures):
                run = future.result()
                results[futures[future]] = run
                bar.write(f"{run.notebook}: {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s {run.error}")
                bar.update()
    return [results[nb] for nb in notebooks]


def format_table(runs: list[NotebookRun]) -> str:
    """A plain-text table: notebook, status, seconds, main metric."""
    rows = [("notebook", "status", "seconds", "main metric")]
    rows += [(r.notebook, "ok" if r.ok else "FAILED", f"{r.seconds:.1f}", r.main_metric) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_html(runs: list[NotebookRun]) -> list[Path]:
    """Render each executed notebook to HTML beside it, for reading a run without Jupyter."""
    require_runner()
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    paths = []
    for run in runs:
        if run.output.exists():
            body, _ = exporter.from_filename(str(run.output))
            html = run.output.with_suffix(".html")
            html.write_text(body, encoding="utf-8")
            paths.append(html)
    return paths
