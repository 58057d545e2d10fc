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


def pytest_collection_modifyitems(config, items):
    for item in items:
        file = item.path.name
        if file in SLOW or f"{file}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)


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
def runs(tmp_path_factory, request):
    """The executed notebooks (papermill, on their fixtures, two at a time, once a session), by notebook name:
    `vision_studies.runner.NotebookRun`s, each `output` the executed copy. Only those the session's tests ask
    for run: a test that uses `runs` takes a parameter `name` (a notebook's stem, ``08_pets``), so ``-k 08``
    runs one notebook; with no such parameter among the selected tests, all of them run."""
    from pathlib import Path

    from vision_studies.runner import find_notebooks, run_notebooks

    repo = Path(__file__).resolve().parent.parent
    notebooks = find_notebooks(repo / "notebooks")
    wanted = {item.callspec.params["name"] for item in request.session.items
              if "runs" in getattr(item, "fixturenames", ()) and "name" in getattr(getattr(item, "callspec", None),
                                                                                    "params", {})}
    notebooks = [nb for nb in notebooks if nb.stem in wanted] or notebooks
    out = tmp_path_factory.mktemp("runs")
    saved = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = FAKE_TOKEN
    try:
        return {r.notebook: r for r in run_notebooks(notebooks, out, {"FIXTURE": True}, workers=2, cwd=repo)}
    finally:
        if saved is None:
            del os.environ["HF_TOKEN"]
        else:
            os.environ["HF_TOKEN"] = saved
