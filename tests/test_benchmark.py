"""The benchmark runs and reports every section; and the speed-ups it measures change no result.

Timings are not asserted: they depend on the machine and its load. What is asserted is that a `--quick`
run prints every section with its figures, and that each optimisation computes what the fastai code it
replaces computes: the same pixels, the same optimizer update.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastai.optimizer import Adam
from fastai.torch_core import params
from fastai.vision.augment import AffineCoordTfm, LightingTfm, Resize, ResizeMethod, aug_transforms
from fastai.vision.core import PILImage, PILImageBW, TensorImage, TensorMask

from vision_studies.augment import PRESETS, FastAffineCoordTfm, SquishResize, augment_transforms
from vision_studies.estimate import MEASURED_HERE
from vision_studies.models import AdamW
from vision_studies.runner import available_cores, previous_seconds, threads_per_worker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    figures = out / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--quick", "--threads", "1", "--json", str(figures),
         "--work", str(out / "work")],
        capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(figures.read_text())


def test_quick_benchmark_prints_every_section(quick_run):
    out, figures = quick_run
    for section in ("training", "data", "prediction", "notebooks", "digits", "threads", "gpu"):
        assert f"\n{section}\n{'-' * len(section)}\n" in out, f"section {section} missing:\n{out}"
    names = {f["name"] for f in figures}
    for expected in ("lenet5: our fit / hand-written loop", "lenet5: our fit / floor (fwd+bwd+step only)",
                     "0 workers: ours / torchvision ImageFolder+v2", "lenet5 28px: predict(one file) / raw forward",
                     "lenet5 28px: onnxruntime / PyTorch eager, one file", "import vision_studies / import fastai.vision.all",
                     "per notebook: kernel start and papermill (a fresh kernel)", "LeNet-5, 1 epochs: held-out accuracy (median of 1 seeds)",
                     "a CPU run: a training step of ResNet-18 on a batch of 16 at 64px",
                     "later epochs, a CPU run: ours / the same loader's 8-bit batches",
                     *(f"T4 estimate's rate {key!r}" for key in MEASURED_HERE)):
        assert expected in names, f"{expected!r} not reported: {sorted(names)}"
    # every figure is a ratio, seconds or images per second (all measured from clocks that ran, so above
    # zero), or the digits' held-out accuracy in percent
    positive = {"x", "s", "img/s"}
    for f in figures:
        assert f["unit"] in positive | {"%"} and np.isfinite(f["value"]), f
        assert f["value"] > 0 if f["unit"] in positive else 0 <= f["value"] <= 100, f
    # one epoch of LeNet-5 on 1,437 digits already lands far above the 10% of guessing
    digits = next(f for f in figures if f["name"].startswith("LeNet-5, 1 epochs: held-out accuracy"))
    assert digits["value"] > 50, digits
    # quick runs are too small to judge: no goal is claimed met or missed
    assert all(f["met"] is None for f in figures) and "\ngoals\n" in out
    if not torch.cuda.is_available():
        assert "not measured: no CUDA device" in out


def test_squish_resize_gives_fastais_pixels():
    rng = np.random.default_rng(0)
    for cls, shape in ((PILImage, (240, 320, 3)), (PILImageBW, (28, 28))):
        image = cls.create(rng.integers(0, 256, shape, dtype=np.uint8))
        for size in (224, 28, (64, 48)):
            theirs = Resize(size, method=ResizeMethod.Squish)(image, split_idx=0)
            ours = SquishResize(size)(image, split_idx=0)
            assert type(ours) is type(theirs) and ours.size == theirs.size
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("preset", [p for p in PRESETS if PRESETS[p]])
def test_batch_augmentation_gives_fastais_pixels(preset):
    """Same random draws, same output as fastai's composed transforms, to float rounding."""
    ours = augment_transforms(preset, 32)[1]
    theirs = aug_transforms(**PRESETS[preset])
    assert [type(t) for t in ours] == [FastAffineCoordTfm if isinstance(t, AffineCoordTfm) else type(t) for t in theirs]
    x = TensorImage(torch.rand(8, 3, 24, 32))
    mask = TensorMask(torch.randint(0, 3, (8, 24, 32)))
    for split in (0, 1):  # training batches, and validation (where nothing may change)
        a, b = x, x
        for theirs_t, ours_t in zip(theirs, ours):
            random.seed(split), torch.manual_seed(split)
            a = theirs_t(a, split_idx=split)
            random.seed(split), torch.manual_seed(split)
            b = ours_t(b, split_idx=split)
        assert type(b) is TensorImage and b.shape == x.shape
        # a few pixels on reflection folds of random noise may differ more; the mean says the images are the same
        assert (a - b).abs().mean() < 1e-5 and (a - b).abs().max() < 0.1
        if split:
            assert (b - x).abs().max() < 1e-5
    affine = [t for t in ours if isinstance(t, AffineCoordTfm)][0]
    reference = [t for t in theirs if isinstance(t, AffineCoordTfm)][0]
    random.seed(0), torch.manual_seed(0)
    a = reference((x, mask), split_idx=0)[1]
    random.seed(0), torch.manual_seed(0)
    assert torch.equal(a, affine((x, mask), split_idx=0)[1])  # masks go through fastai's own code
    assert any(isinstance(t, LightingTfm) for t in ours) == bool(PRESETS[preset]["max_lighting"])


def test_adamw_steps_as_fastais_adam():
    """fastai's default optimizer (Adam, decoupled weight decay, none on biases and norms) and ours: same update."""
    torch.manual_seed(0)
    nn = torch.nn  # a norm layer (1-D scale and shift: no decay) and weights and a bias that decay
    model = nn.Sequential(nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    ours, theirs = AdamW([list(model.parameters())], lr=1e-2), Adam(params(twin), lr=1e-2)
    for p in params(twin):  # what Learner.create_opt does with wd_bn_bias=False
        theirs.state[p]["do_wd"] = p.ndim > 1
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for m, opt in ((model, ours), (twin, theirs)):
        for _ in range(3):
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            opt.zero_grad()
    assert max((a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters())) < 1e-5
    # and both really stepped: three steps of lr 1e-2 move every tensor by about 0.03
    assert min((a - b).abs().max().item() for a, b in zip(model.parameters(), start.parameters())) > 1e-2


def test_adamw_layer_groups_freeze_and_keep_norms_undecayed():
    body, head = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)), torch.nn.Linear(4, 2)
    opt = AdamW([list(body.parameters()), list(head.parameters())], lr=1e-3)
    assert len(opt.param_lists) == 2 and len(opt.opt.param_groups) == 4
    opt.set_hyper("lr", slice(1e-4, 1e-2))
    opt.set_hyper("wd", 0.1)
    assert [g["lr"] for g in opt.opt.param_groups] == [1e-4, 1e-4, 1e-2, 1e-2]
    assert [g["weight_decay"] for g in opt.opt.param_groups] == [0.1, 0.0, 0.1, 0.0]  # 1-D tensors never decay
    assert [h["lr"] for h in opt.hypers] == [1e-4, 1e-2]
    opt.freeze_to(1)
    assert not body[0].weight.requires_grad and head.weight.requires_grad
    head(body(torch.randn(4, 1, 6, 6)).mean(dim=(2, 3))).sum().backward()
    opt.step()
    state = opt.state_dict()
    assert [h["lr"] for h in state["hypers"]] == [1e-4, 1e-2]
    # what a resumed fit does with a checkpoint: a fresh optimizer takes back every group's rates and decay,
    # and the step's moments
    fresh = AdamW([list(body.parameters()), list(head.parameters())], lr=1e-3)
    fresh.load_state_dict(state)
    assert [g["lr"] for g in fresh.opt.param_groups] == [1e-4, 1e-4, 1e-2, 1e-2]
    assert [g["weight_decay"] for g in fresh.opt.param_groups] == [0.1, 0.0, 0.1, 0.0]
    for p in head.parameters():
        assert torch.equal(fresh.opt.state[p]["exp_avg"], opt.opt.state[p]["exp_avg"]) and p.grad is not None
    assert not fresh.opt.state[body[0].weight]  # the frozen body took no step


def test_adamw_reads_and_sets_hyper_parameters_as_fastais_optimizer_wrapper_does():
    """`AdamW.hypers` and `set_hyper` are fastai's `OptimWrapper.hypers` (every decaying half) and
    `_BaseOptimizer.set_hyper`, written to be cheap: a fit reads and sets them several times a batch."""
    from fastai.optimizer import OptimWrapper, _BaseOptimizer

    layers = [torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2)]

    def opt():
        return AdamW([list(m.parameters()) for m in layers], lr=1e-3)

    for value in (slice(1e-4, 1e-2), slice(None, 1e-2), 3e-3, [1e-4, 2e-4, 3e-4], np.array([1e-5, 1e-4, 1e-3])):
        ours, theirs = opt(), opt()
        ours.set_hyper("lr", value)
        _BaseOptimizer.set_hyper(theirs, "lr", value)
        ours.set_hyper("mom", 0.85)  # the first of the betas tuple
        _BaseOptimizer.set_hyper(theirs, "mom", 0.85)
        ours.set_hyper("sqr_mom", [0.97, 0.98, 0.99])  # the second of the betas, a value per group
        _BaseOptimizer.set_hyper(theirs, "sqr_mom", [0.97, 0.98, 0.99])
        assert ours.opt.param_groups == theirs.opt.param_groups, value
        assert ours.hypers == OptimWrapper.hypers.fget(ours)[::2] and len(ours.hypers) == 3
        assert ours.hypers[0]["mom"] == 0.85 and ours.hypers[0]["sqr_mom"] == 0.97
    with pytest.raises(ValueError, match="Trying to set 2 values for lr but there are 3 parameter groups"):
        opt().set_hyper("lr", [1e-3, 1e-2])


def test_runner_counts_usable_cores_and_reads_how_long_notebooks_took(tmp_path):
    cores = available_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))
    quota = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
    if quota.is_file() and not quota.read_text().startswith("max"):
        limit, period = map(int, quota.read_text().split())
        assert cores <= max(1, -(-limit // period)), "a container's CPU quota caps the cores"
    # each worker's share: as many threads as fit beside the others, never more in all than the cores, at least one
    assert [threads_per_worker(w, cores=16) for w in (1, 2, 3, 5, 16, 40)] == [16, 8, 5, 3, 1, 1]
    assert threads_per_worker(2, cores=1) == 1
    for workers in (1, 2, 3, 4):
        share = threads_per_worker(workers)
        assert share * workers <= cores or share == 1
        assert (share + 1) * workers > cores  # the largest share that fits
    notebooks = [tmp_path / f"{i:02d}_x.ipynb" for i in range(3)]
    (tmp_path / notebooks[1].name).write_text(json.dumps({"metadata": {"papermill": {"duration": 12.5}}}))
    (tmp_path / notebooks[2].name).write_text("not json")
    assert previous_seconds(tmp_path, notebooks) == {notebooks[1]: 12.5}


def test_label_smoothing_is_torchs_and_checked(tmp_path):
    """The option the digits benchmark trains with: torch's label-smoothed cross-entropy, refused where it means nothing."""
    from PIL import Image

    from vision_studies.data import dataloaders, user_folder_spec
    from vision_studies.models import build_learner

    for i in range(10):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        Image.new("RGB", (28, 28), (25 * i, 0, 0)).save(tmp_path / f"c{i % 2}" / f"{i}.png")
    dls = dataloaders(user_folder_spec("tiny"), tmp_path, 28, batch_size=4, augment="none")
    learn = build_learner(dls, "lenet5", pretrained=False, label_smoothing=0.1, path=tmp_path)
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    expected = torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1)
    assert torch.allclose(learn.loss_func(x, y), expected)
    assert not torch.allclose(expected, torch.nn.functional.cross_entropy(x, y))
    with pytest.raises(ValueError, match="label_smoothing=1.0"):
        build_learner(dls, "lenet5", pretrained=False, label_smoothing=1.0)


def test_the_slow_tier_names_tests_that_exist_and_ci_runs_it():
    """A renamed test would silently leave the slow tier and join the default one: each entry must name a test."""
    import ast

    from conftest import SLOW

    assert SLOW
    for entry in SLOW:
        file, _, name = entry.partition("::")
        tree = ast.parse((REPO / "tests" / file).read_text())
        tests = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        assert tests and (not name or name in tests), f"tests/conftest.py SLOW: {entry} names no test"
    assert "-m 'not slow'" in (REPO / "pyproject.toml").read_text()
    assert "python -m pytest -m slow" in (REPO / ".ci" / "run").read_text()


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_gpu_section_runs_its_code_on_the_cpu(tmp_path):
    """What the GPU section measures on CUDA, run here on the CPU with a tiny ConvNeXt: the training steps in
    channels-last against the plain loop, the loader's two places to augment, decode_jpeg against PIL."""
    bench = _benchmark_module()
    report = bench.Report(judge=False)
    folder = bench.make_jpegs(tmp_path / "jpegs", 16, (96, 72))
    bench.gpu_figures(report, "cpu", "convnext_atto", 32, 48, 8, 1, 1, folder, 0, None)  # 6 steps: one-cycle needs 4+
    figures = {f.name: f for f in report.figures}
    for name in ("convnext_atto: our fit / hand-written loop", "convnext_atto: our fit, images per second",
                 "data: augmentation in batches on cpu / image by image in CPU workers",
                 "JPEG decoding: torchvision.io.decode_jpeg on cpu / PIL on one core"):
        assert name in figures and np.isfinite(figures[name].value) and figures[name].value > 0, (name, sorted(figures))
    assert "hand-written loop" in figures["convnext_atto: our fit, images per second"].detail
