"""Shared test fixtures: the fixture datasets are built once per session, in a temporary folder."""

from __future__ import annotations

import os
import warnings

import pytest

# Two cores: one torch thread per test process keeps the notebook subprocesses from being starved.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)


# The slow tier: `python -m pytest` leaves these out (pyproject's addopts say `-m "not slow"`), CI runs them
# after it (.ci/run: `python -m pytest -m slow`). Each is an end-to-end run of minutes, or a real browser or
# several processes, whose parts the default tier tests one by one. A whole file, or file::test.
SLOW = {
    "test_rehearsal.py": "every notebook in full mode against the loopback mirror (5 to 8 minutes)",
    "test_interpret.py::test_gradcam_finds_the_region_a_trained_cnn_uses": "trains a CNN until Grad-CAM can find its cue",
    "test_benchmark.py::test_quick_benchmark_prints_every_section": "every benchmark section, in a subprocess",
    "test_resume.py::test_run_killed_mid_training_resumes_and_finishes": "a training process killed and restarted",
    "test_distributed.py::test_two_processes_learn_as_well_as_one": "two training processes under a launcher",
    "test_distributed.py::test_each_process_trains_on_its_own_half": "(the same two processes)",
    "test_distributed.py::test_the_validation_set_is_scored_whole_and_exactly_once": "(the same two processes)",
    "test_distributed.py::test_process_0_alone_writes_one_record_and_one_export": "(the same two processes)",
    "test_distributed.py::test_the_learning_rate_finder_is_refused_across_processes_rather_than_left_to_hang":
        "two more processes",
    "test_app.py::test_browser_uploads_a_digit_and_reads_the_prediction": "a headless browser against the demo",
    "test_golden_photos.py::test_the_browser_demo_shows_a_cat": "a headless browser against the demo",
}


def _reads_notebook_runs(item) -> bool:
    """Whether `item` reads the executed notebooks: this file's `runs`, not a test module's own fixture of that
    name (test_distributed.py once had one, and so the slow tier ran every notebook beside itself for nothing)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("runs", ()) if info else ()
    return bool(defs) and not defs[-1].baseid.endswith(".py")  # a conftest's fixtures have its folder's id


def pytest_itemcollected(item):
    file = item.path.name
    if file in SLOW or f"{file}::{getattr(item, 'originalname', item.name)}" in SLOW:
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_reads_notebook_runs)  # the tests that read the executed notebooks last; files keep their order


# The executed notebooks (papermill on their fixtures, two at a time) are made by a process of their own that
# starts as soon as the tests are collected, so the notebooks keep the cores busy while the other tests run (on
# one thread each: OMP_NUM_THREADS above); the tests that read them come last and wait. Under pytest-xdist
# (pyproject's addopts: two test processes) every worker collects the same tests; the first one, gw0, starts the
# job in a folder all workers share, and each waits for the job's `done` file there.
_NOTEBOOK_JOB = pytest.StashKey[dict]()
_RUN_NOTEBOOKS = """
import pickle, sys
from pathlib import Path
from vision_studies.runner import find_notebooks, run_notebooks
repo, out, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
try:
    runs = run_notebooks(find_notebooks(repo / "notebooks", names or None), out, {"FIXTURE": True}, workers=2, cwd=repo)
    (out / "runs.pickle").write_bytes(pickle.dumps({r.notebook: r for r in runs}))
finally:
    (out / "done").touch()
"""
_WAIT_FOR_NOTEBOOKS = 3600  # seconds a worker other than gw0 waits for the job's `done` file


def _xdist_worker(config) -> str | None:
    """This process's pytest-xdist worker id (gw0, gw1, ...), or None when the tests run in one process."""
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_collection_finish(session):
    """Starts the notebooks the selected tests read: those their `name` parameters name (``-k 08`` runs one),
    or all of them when a test reads `runs` without one."""
    import subprocess
    import sys
    from pathlib import Path

    readers = [item for item in session.items if _reads_notebook_runs(item)]
    if not readers or session.config.option.collectonly:
        return
    names = {getattr(item, "callspec", None) and item.callspec.params.get("name") for item in readers}
    names = sorted(names) if None not in names else []
    repo = Path(__file__).resolve().parent.parent
    factory = session.config._tmp_path_factory  # what the tmp_path_factory fixture hands out
    worker = _xdist_worker(session.config)
    if worker is None:
        out = factory.mktemp("runs")
    else:  # each worker's folder is <the session's>/popen-gwN (xdist's workermanage.py): share their parent
        out = factory.getbasetemp().parent / "notebook-runs"
        if worker != "gw0":
            session.config.stash[_NOTEBOOK_JOB] = dict(process=None, out=out, log=None)
            return
        out.mkdir()
    log = open(out / "run_notebooks.log", "w")
    process = subprocess.Popen([sys.executable, "-c", _RUN_NOTEBOOKS, str(repo), str(out), *names], cwd=repo,
                               stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"HF_TOKEN": FAKE_TOKEN},
                               start_new_session=True)  # a group of its own, its notebook processes with it
    session.config.stash[_NOTEBOOK_JOB] = dict(process=process, out=out, log=log)


def pytest_sessionfinish(session, exitstatus):
    """Stops the notebook job when the session ended early (-x, ctrl-c). Under xdist, gw0 may finish its share
    while another worker still waits for the notebooks: it waits for them too unless the session was stopped."""
    job = session.config.stash.get(_NOTEBOOK_JOB, None)
    if not job or job["process"] is None or job["process"].poll() is not None:
        return
    stopped = exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail
    if _xdist_worker(session.config) is not None and not stopped:
        job["process"].wait()
        return
    import signal

    os.killpg(job["process"].pid, signal.SIGTERM)
    job["process"].wait(30)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mnist(data_root):
    from vision_studies.data import prepare_dataset

    return prepare_dataset("mnist", fixture=True, root=data_root)


@pytest.fixture(scope="session")
def pets(data_root):
    from vision_studies.data import prepare_dataset

    return prepare_dataset("pets", fixture=True, root=data_root)


# A (fake) Hub token in the notebooks' environment, as a logged-in user has: no run may write it anywhere.
FAKE_TOKEN = "hf_FAKEtokenFORtestsONLY0123456789abcdef"


@pytest.fixture(scope="session")
def fake_hub_token():
    return FAKE_TOKEN


@pytest.fixture(scope="session")
def runs(request):
    """The executed notebooks, by notebook name: `vision_studies.runner.NotebookRun`s, each `output` the executed
    copy, from the process `pytest_collection_finish` started (a notebook's stem is a test's `name` parameter)."""
    import pickle
    import time

    job = request.config.stash[_NOTEBOOK_JOB]
    if job["process"] is not None:  # this process started the job
        job["process"].wait()
        job["log"].close()
    else:  # worker gw0 did: its `done` file says the job has ended
        deadline = time.monotonic() + _WAIT_FOR_NOTEBOOKS
        while not (job["out"] / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    result = job["out"] / "runs.pickle"
    if not result.exists():
        log = job["out"] / "run_notebooks.log"
        log = log.read_text(errors="replace") if log.exists() else "(no log: the job never started)"
        exit = f"exit {job['process'].returncode}" if job["process"] is not None else "run by worker gw0"
        pytest.fail(f"the notebook runs stopped ({exit}) before writing their results:\n" + log[-3000:])
    return pickle.loads(result.read_bytes())
