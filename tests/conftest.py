"""Shared test fixtures: the fixture datasets are built once per session, in a temporary folder."""

from __future__ import annotations

import os
import warnings

import pytest

# Two cores: one torch thread per test process keeps the notebook subprocesses from being starved.
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)


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
