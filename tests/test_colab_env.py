"""The Colab-equivalent job's rules: Colab's freeze as constraints, and what counts as replacing Colab's packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("colab_env", ROOT / "scripts" / "colab_env.py")
colab_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab_env)

FREEZE = """\
absl-py==1.4.0
google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz
jupyter_kernel_gateway @ git+https://github.com/googlecolab/kernel_gateway@b134e99
nvidia-cudnn-cu12==9.19.0.56
cuda-python==12.9.7
triton==3.6.0
Pillow==11.3.0
protobuf==5.29.6
torch==2.11.0+cu128
torchvision==0.26.0+cu128
"""


def test_constraints_leave_out_what_pypi_cannot_give():
    assert colab_env.colab_constraints(FREEZE) == [
        "absl-py==1.4.0", "Pillow==11.3.0", "protobuf==5.29.6", "torch==2.11.0", "torchvision==0.26.0",
    ]


def test_a_line_of_another_shape_is_named():
    with pytest.raises(ValueError, match="line 2"):
        colab_env.colab_constraints("numpy==2.1.3\nnumpy>=2\n")


def test_the_published_freeze_gives_colabs_torch():
    freeze = next((p for p in (ROOT.parent / "shared" / "colab", ROOT / "shared" / "colab") if p.is_dir()), None)
    if freeze is None:
        pytest.skip("no copy of Colab's freeze beside this checkout (shared/colab/)")
    lines = colab_env.colab_constraints((freeze / "pip-freeze.gpu.txt").read_text())
    assert "torch==2.11.0" in lines and "protobuf==5.29.6" in lines
    assert not [line for line in lines if line.startswith(("nvidia-", "triton", "cuda-")) or "+" in line]


def test_a_replaced_guarded_package_is_caught_and_others_only_listed():
    after = FREEZE.replace("protobuf==5.29.6", "protobuf==7.36.2").replace("absl-py==1.4.0", "absl-py==2.0.0")
    guarded, others = colab_env.replaced(FREEZE, after)
    assert guarded == ["protobuf 5.29.6 -> 7.36.2"]
    assert others == ["absl-py 1.4.0 -> 2.0.0"]
    assert colab_env.replaced(FREEZE, FREEZE + "papermill==2.7.0\n") == ([], [])  # an addition replaces nothing
    assert colab_env.replaced(FREEZE, FREEZE.replace("Pillow==11.3.0\n", ""))[0] == ["pillow 11.3.0 -> removed"]


def test_the_runtime_is_the_guarded_packages_and_ours_that_colab_has():
    pyproject = (ROOT / "pyproject.toml").read_text()
    runtime = colab_env.runtime_packages(FREEZE, pyproject, ("onnx",))
    # the guarded ones Colab has here, then our requirements that are in this freeze (none but those)
    assert runtime == ["torch", "torchvision", "pillow", "protobuf"]
