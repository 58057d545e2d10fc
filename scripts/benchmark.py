#!/usr/bin/env python
"""How fast the package is against the plain-PyTorch way of doing the same work, measured side by side.

    python scripts/benchmark.py                      # every section, 3 rounds each: at most 10 minutes (a goal)
    python scripts/benchmark.py --quick              # every section, tiny sizes, one run: a smoke test
    python scripts/benchmark.py --only training data --repeats 7 --json bench.json

Each figure is a ratio of two timings taken in the same process, one after the other, alternating, and
the median over `--repeats` rounds (the median of the per-round ratios, so a burst of load from another
process spoils one round, not the figure). The sections, and the goals they are held to:

1. training    our `train.fit` against a hand-written PyTorch loop doing the same job (same model, tensors,
               batch size, AdamW maths, one-cycle schedule, epochs, validation and checkpoint each epoch):
               at most 1.05x for ResNet-18 at 64 px, 1.10x for LeNet-5 at 28 px (fastai's per-batch work weighs
               more beside a small model). Also against the floor (forward, backward and step on preloaded tensors).
2. data        our `data.dataloaders` against torchvision's ImageFolder + transforms.v2 doing the same work
               (decode, squish to size, flip, rotate, zoom, brightness and contrast) with the same workers:
               at least 1.0x, in images per second.
3. prediction  `export.load_exported(...).predict` on one image file against the model's raw forward pass at the
               same size: at most 1.10x. Also a folder in batches, and onnxruntime against PyTorch eager.
4. notebooks   import time against `import fastai.vision.all` (at most 1.10x), kernel start and imports per
               notebook, and all the study notebooks on their fixtures, two at a time: at most 90 s.
5. digits      LeNet-5 through our API on scikit-learn's handwritten digits (the MNIST fixture, a stratified
               20% held out with seed 0): at least 99% held-out accuracy (the median of five seeded runs), and
               the seconds a run takes.
6. threads     what oversubscribing the cores costs, and the thread counts the runner picks.
7. gpu         on CUDA only: ConvNeXt-tiny training steps (mixed precision, channels-last) against a plain
               loop, and augmentation on the GPU.
8. datapath    at the real sets' scale (25,000 JPEGs of about 500x375 as in cats vs dogs, 7,390 as in Pets;
               `--scale 0.1` for a tenth): screening (under 60 s for 25,000), items table and loader build,
               images per second per epoch at 224 px, first and later epochs apart, side by side: ours,
               fastai's stock ImageDataLoaders, torchvision ImageFolder + v2, and PIL decoding the originals
               on every core. Later epochs: at least 1.5x torchvision and 1.0x the decode-alone limit. Beside a CPU
               run's loader, the same loader's 8-bit batches (its float conversion left out) and its own training
               step on a batch (ResNet-18), to show the conversion's and the loader's share of a run. Then the
               rates the T4 estimate records (estimate.MEASURED_HERE), measured again beside the recorded ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from anywhere, with or without the package installed
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

SECTIONS = ("training", "data", "prediction", "notebooks", "digits", "threads", "gpu", "datapath")
# What a study notebook imports before it trains: the figure for "import vision_studies" that matters.
STUDY_IMPORTS = ("vision_studies.data", "vision_studies.models", "vision_studies.train", "vision_studies.metrics",
                 "vision_studies.interpret", "vision_studies.export")


@dataclass
class Figure:
    """One line of the report: a measured value, what it is compared with, and the goal if there is one."""

    section: str
    name: str
    value: float
    unit: str
    detail: str = ""
    goal: str = ""  # "<= 1.05", ">= 1.0", "< 120": the value must satisfy it
    met: bool | None = None


class Report:
    def __init__(self, judge: bool = True):
        self.figures: list[Figure] = []
        self.judge = judge  # --quick runs at toy sizes, where the goals say nothing

    def add(self, section: str, name: str, value: float, unit: str, detail: str = "", goal: str = "") -> Figure:
        met = None
        goal = goal if self.judge else ""
        if goal:
            op, bound = goal.split()
            met = {"<=": value <= float(bound), ">=": value >= float(bound), "<": value < float(bound)}[op]
        fig = Figure(section, name, value, unit, detail, goal, met)
        self.figures.append(fig)
        verdict = "" if met is None else ("  goal " + goal + (" met" if met else " NOT MET"))
        print(f"  {name:<58} {_fmt(value)} {unit:<6}{verdict}" + (f"\n      {detail}" if detail else ""), flush=True)
        return fig

    def note(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def summary(self) -> str:
        rows = [f for f in self.figures if f.goal]
        lines = ["", "goals", "-----"]
        for f in rows:
            lines.append(f"  {'met    ' if f.met else 'NOT MET'}  {f.section:<10} {f.name:<58} {_fmt(f.value)} {f.unit} (goal {f.goal})")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:9.3f}" if abs(value) < 100 else f"{value:9.1f}"


def _load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def side_by_side(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each run's result (seconds, or images per second) over `repeats` rounds, the order reversed every
    other round so that a drift in machine load favours none of them."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(runs[name]())
    return results


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ 1. training


class _Pairs:
    """(image, label) pairs from two tensors: the dataset both loops read."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _tensor_learner(arch: str, x, y, xv, yv, bs: int, device, path: Path):
    """Our learner (models.build_learner) on preloaded tensors, its batches gathered by index as our in-memory
    sets' are (memory_data.MemoryDL: MNIST and Fashion-MNIST in the studies)."""
    from fastai.data.core import DataLoaders

    from vision_studies.memory_data import MemoryDL
    from vision_studies.models import build_learner

    dls = DataLoaders(MemoryDL(_Pairs(x, y), images=x, labels=y, bs=bs, shuffle=True, drop_last=True, num_workers=0),
                      MemoryDL(_Pairs(xv, yv), images=xv, labels=yv, bs=bs, num_workers=0), device=device)
    dls.vocab, dls.loss_func = [str(c) for c in range(int(y.max()) + 1)], None  # what build_learner reads
    return build_learner(dls, arch, pretrained=False, path=path)


def _one_cycle(opt, lr: float, total_steps: int):
    """torch's OneCycleLR set to fastai's fit_one_cycle: cosine warm-up over 25% from lr/25, down to lr/1e5,
    momentum (Adam's beta1) 0.95 -> 0.85 -> 0.95."""
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=total_steps, pct_start=0.25, div_factor=25.0, final_div_factor=1e5 / 25,
        base_momentum=0.85, max_momentum=0.95, anneal_strategy="cos",
    )


def _adamw(model, lr: float):
    """The optimizer of `models.AdamW` as a plain loop builds it: torch's fused AdamW, no decay on 1-D tensors."""
    import torch

    from vision_studies.models import weight_decay_groups

    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.AdamW(weight_decay_groups(model.parameters(), 0.01), lr=lr, betas=(0.9, 0.99), eps=1e-5,
                             fused=fused or None)


def plain_loop(model, x, y, xv, yv, bs: int, epochs: int, lr: float, folder: Path, device, amp: str | None = None,
               channels_last: bool = False) -> None:
    """What our fit does, written by hand in PyTorch: one-cycle AdamW over shuffled batches, then each epoch a
    validation pass (loss and accuracy), a checkpoint of weights and optimizer (but after the last epoch, as
    checkpoints.py), the best weights kept."""
    import torch
    from torch import nn

    opt = _adamw(model, lr)
    steps = len(x) // bs
    sched = _one_cycle(opt, lr, epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    pin = device.type == "cuda"
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=bs, shuffle=True,
                                        drop_last=True, pin_memory=pin)
    valid = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=bs, pin_memory=pin)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = (lambda: torch.autocast(device.type, dtype=getattr(torch, amp))) if amp else contextlib.nullcontext
    best = float("inf")
    for epoch in range(epochs):
        model.train()
        for xb, yb in train:
            xb, yb = xb.to(device, non_blocking=True, memory_format=fmt), yb.to(device, non_blocking=True)
            with autocast():
                loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        model.eval()
        total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        with torch.no_grad(), autocast():
            for xb, yb in valid:
                xb, yb = xb.to(device, non_blocking=True, memory_format=fmt), yb.to(device, non_blocking=True)
                out = model(xb)
                total += loss_fn(out.float(), yb) * len(yb)
                correct += (out.argmax(1) == yb).sum()
        valid_loss, _accuracy = (total / len(xv)).item(), (correct / len(xv)).item()
        if epoch < epochs - 1:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, folder / "plain_checkpoint.pth")
        if valid_loss < best:
            best = valid_loss
            torch.save(model.state_dict(), folder / "plain_best.pth")
    model.load_state_dict(torch.load(folder / "plain_best.pth", map_location=device, weights_only=True))


def floor_loop(model, x, y, bs: int, epochs: int, lr: float, device, amp: str | None = None,
               channels_last: bool = False) -> None:
    """The least a training loop can do: forward, backward and step on batches sliced from preloaded tensors."""
    import torch
    from torch import nn

    opt = _adamw(model, lr)
    loss_fn = nn.CrossEntropyLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y = x.to(device, memory_format=fmt), y.to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=getattr(torch, amp))) if amp else contextlib.nullcontext
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), device=device)
        for i in range(len(x) // bs):
            idx = order[i * bs : (i + 1) * bs]
            with autocast():
                loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _event_seconds(learn) -> tuple[float, int]:
    """What one event of a training batch costs with a fit's callbacks (none acts on this one, so it is the
    dispatch alone: dispatch.py's plan, where fastai sorted and called them all), and how many callbacks that
    is. A batch has eight such events."""
    import timeit

    from fastai.callback.core import Callback
    from fastai.callback.schedule import ParamScheduler, combined_cos

    # fit_one_cycle's scheduler, and two stand-ins for our fit's epoch-level callbacks (log, checkpoints)
    extra = [ParamScheduler({"lr": combined_cos(0.25, 1e-5, 1e-3, 1e-8)}),
             type("EpochLogStandIn", (Callback,), {})(), type("CheckpointsStandIn", (Callback,), {})()]
    with learn.added_cbs(extra), learn.no_bar():
        learn.training, n = True, 2000
        seconds = min(timeit.repeat(lambda: learn("after_loss"), number=n, repeat=3)) / n
        return seconds, len(learn.cbs)


def training_figures(report: Report, section: str, arch: str, size: int, channels: int, n: int, bs: int,
                     epochs: int, repeats: int, device_name: str = "cpu", amp: str | None = None,
                     channels_last: bool = False, stock: bool = True, goal: str = "") -> None:
    import torch
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.optimizer import Adam

    from vision_studies.models import AdamW
    from vision_studies.train import fit

    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    classes = 10
    x, y = torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    nv = max(bs, n // 4)
    xv, yv = torch.randn(nv, channels, size, size, generator=g), torch.randint(0, classes, (nv,), generator=g)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    learn = _tensor_learner(arch, x, y, xv, yv, bs, device, tmp)
    start = copy.deepcopy(learn.model.state_dict())
    lr = 1e-3

    def reset():
        learn.model.load_state_dict(start)
        learn.opt = None  # fit makes a new optimizer, as a fresh learner would

    def ours():
        reset()
        with learn.no_bar(), learn.no_logging():
            return _clock(lambda: (fit(learn, epochs, lr), _sync(device)))

    def fastai_fit(opt_func):
        """fastai's own fit_one_cycle, no checkpoints: with fastai's Adam it is where we started."""
        reset()
        other = Learner(learn.dls, learn.model, loss_func=CrossEntropyLossFlat(), metrics=[accuracy], opt_func=opt_func,
                        path=tmp)
        with other.no_bar(), other.no_logging():
            return _clock(lambda: (other.fit_one_cycle(epochs, lr), _sync(device)))

    def plain():
        reset()
        learn.model.to(device)
        return _clock(lambda: (plain_loop(learn.model, x, y, xv, yv, bs, epochs, lr, tmp, device, amp, channels_last),
                               _sync(device)))

    def floor():
        reset()
        learn.model.to(device)
        return _clock(lambda: (floor_loop(learn.model, x, y, bs, epochs, lr, device, amp, channels_last), _sync(device)))

    runs = dict(ours=ours, plain=plain, floor=floor)
    if stock:
        runs |= dict(fastai_adam=lambda: fastai_fit(Adam), fastai_adamw=lambda: fastai_fit(AdamW))
    ours()  # warm-up: first calls allocate, and oneDNN picks its kernels
    t = side_by_side(runs, repeats)
    what = f"{arch} {size}px, batch {bs}, {n} images x {epochs} epochs, {device_name}" + (f", {amp}" if amp else "")
    steps = epochs * (n // bs)
    report.note(f"{what}: ours {statistics.median(t['ours']):.2f} s, hand-written {statistics.median(t['plain']):.2f} s, "
                f"floor {statistics.median(t['floor']):.2f} s ({steps} steps; {_load()})")
    event, n_cbs = _event_seconds(learn)
    report.add(section, f"{arch}: our fit / hand-written loop", median_ratio(t["ours"], t["plain"]), "x",
               f"dispatching each of a batch's 8 events to {n_cbs} callbacks takes {event * 1e6:.0f} us "
               f"here: {8 * event * 1e3:.2f} ms per batch, where the floor's whole step takes "
               f"{statistics.median(t['floor']) / steps * 1e3:.2f} ms", goal=goal)
    report.add(section, f"{arch}: our fit / floor (fwd+bwd+step only)", median_ratio(t["ours"], t["floor"]), "x")
    report.add(section, f"{arch}: hand-written loop / floor", median_ratio(t["plain"], t["floor"]), "x")
    if stock:
        report.add(section, f"{arch}: fastai's fit_one_cycle, fastai's Adam / our AdamW", median_ratio(t["fastai_adam"],
                   t["fastai_adamw"]), "x", "the same fit without our checkpoints, once with fastai's default optimizer "
                   "(where we started), once with models.AdamW: what the optimizer alone gains")
        report.add(section, f"{arch}: our fit / fastai's fit_one_cycle (both AdamW)", median_ratio(t["ours"], t["fastai_adamw"]),
                   "x", "what our fit adds to fastai's: a checkpoint of weights and optimizer every epoch, best weights kept")
    report.add(section, f"{arch}: our fit, images per second", steps * bs / statistics.median(t["ours"]), "img/s",
               f"the hand-written loop {steps * bs / statistics.median(t['plain']):.0f} img/s")


def section_training(report: Report, args) -> None:
    # The issue's measurement (ResNet-18 at 64 px) and notebook 05's (LeNet-5, 28 px, batches of 32).
    if args.quick:
        training_figures(report, "training", "lenet5", 28, 1, 256, 32, 1, 1)
    else:
        # more rounds than the other sections: each ratio is a median of rounds paired side by side, and on a shared
        # 2-core machine single rounds of these fits vary by 10 to 20%, which is the size of the goals themselves
        training_figures(report, "training", "resnet18", 64, 3, 512, 64, 2, max(5, args.repeats), goal="<= 1.05",
                         stock=args.stock)
        # fastai's callbacks cost the same per batch whatever the model: against a 60k-parameter one, 10% is the goal
        training_figures(report, "training", "lenet5", 28, 1, 1440, 32, 2, max(15, 5 * args.repeats), goal="<= 1.10",
                         stock=False)


# ------------------------------------------------------------------------------------------------ 2. data


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = (320, 240)) -> Path:
    """`n` JPEG photos of `size` in four class folders: crops of scikit-image's bundled photographs, so the
    decoder sees real photo content (noise would be slower to decode, flat colour faster)."""
    import numpy as np
    import skimage.data
    from PIL import Image

    if folder.is_dir() and len(list(folder.rglob("*.jpg"))) == n:
        return folder
    rng = np.random.default_rng(0)
    photos = {name: Image.fromarray(getattr(skimage.data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")}
    for i in range(n):
        name = list(photos)[i % len(photos)]
        photo = photos[name]
        w, h = photo.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = folder / name / f"{name}_{i:04d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.LANCZOS).save(out, quality=90)
    return folder


def torchvision_pipeline(folder: Path, size: int, bs: int, workers: int):
    """The same work as our "light" preset, the torchvision way: PIL decode and squish (ImageFolder, v2.Resize
    on the PIL image), then per image a flip, with p=0.75 a rotation up to 5 degrees and zoom up to 1.05, with
    p=0.75 brightness and contrast up to 10%, and scaling to float in [0, 1]."""
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    tfm = v2.Compose([
        v2.Resize((size, size)), v2.ToImage(), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=5, scale=(1.0, 1.05))], p=0.75),
        v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.75),
        v2.ToDtype(torch.float32, scale=True),
    ])
    return torch.utils.data.DataLoader(datasets.ImageFolder(str(folder), tfm), batch_size=bs, shuffle=True,
                                       num_workers=workers, drop_last=True)


def _images_per_second(loader) -> float:
    start, n = time.perf_counter(), 0
    for xb, _ in loader:
        n += len(xb)
    return n / (time.perf_counter() - start)


def section_data(report: Report, args) -> None:
    from vision_studies.data import dataloaders, user_folder_spec

    n, size, bs = (64, 64, 16) if args.quick else (512, 224, 64)
    folder = make_jpegs(args.work / f"jpegs-{n}", n)
    spec = user_folder_spec("benchmark")
    for workers in (0,) if args.quick else (0, 2):
        ours_dl = dataloaders(spec, folder, size, bs, augment="light", num_workers=workers, device="cpu").train
        theirs_dl = torchvision_pipeline(folder, size, bs, workers)
        t = side_by_side(dict(ours=lambda: _images_per_second(ours_dl), theirs=lambda: _images_per_second(theirs_dl)),
                         args.repeats)
        report.add("data", f"{workers} workers: ours / torchvision ImageFolder+v2", median_ratio(t["ours"], t["theirs"]),
                   "x", f"{n} JPEGs 320x240 -> {size}px, batches of {bs}, 'light' augmentation: ours "
                   f"{statistics.median(t['ours']):.0f} img/s, torchvision {statistics.median(t['theirs']):.0f} img/s; {_load()}",
                   goal=">= 1.0")


# ------------------------------------------------------------------------------------------------ 3. prediction


def _export(folder: Path, images: Path, arch: str, size: int, work: Path) -> Path:
    """An export folder of `arch` at `size`, made the way a notebook makes one (weights from a local file, so
    the config carries the pretrained normalisation); untrained, which costs the same to run."""
    import timm
    from safetensors.torch import save_file

    from vision_studies.data import dataloaders, user_folder_spec
    from vision_studies.export import export_learner
    from vision_studies.models import build_learner

    weights = None
    if arch not in ("lenet5",):
        weights = work / f"{arch}.safetensors"
        if not weights.exists():
            save_file(timm.create_model(arch, pretrained=False).state_dict(), weights)
    dls = dataloaders(user_folder_spec("benchmark"), images, size, 4, augment="none", num_workers=0, device="cpu")
    learn = build_learner(dls, arch, pretrained=False, weights=weights, path=work)
    return export_learner(learn, folder, include_pickle=False, arch=arch, image_size=size, multi_label=False)


def prediction_figures(report: Report, arch: str, size: int, images: list[Path], folder: Path, repeats: int,
                       threads: int, onnx: bool) -> None:
    import numpy as np
    import torch

    from vision_studies.export import load_exported
    from vision_studies.predict import preprocess

    predictor = load_exported(folder)
    model, config = predictor.model, predictor.config
    one = torch.randn(1, config.n_in, size, size)

    def forward_one():
        with torch.inference_mode():
            return _clock(lambda: model(one))

    def predict_one(i=[0]):  # noqa: B006  a new image each call, so no file is read from a warm cache twice in a row
        i[0] = (i[0] + 1) % len(images)
        return _clock(lambda: predictor.predict(images[i[0]]))

    def prepare_one(i=[0]):  # noqa: B006
        i[0] = (i[0] + 1) % len(images)
        return _clock(lambda: preprocess(images[i[0]], config))

    for _ in range(3):
        forward_one(), predict_one()
    rounds = max(5, repeats * 5)
    t = side_by_side(dict(predict=predict_one, forward=forward_one, prepare=prepare_one), rounds)
    report.add("prediction", f"{arch} {size}px: predict(one file) / raw forward", median_ratio(t["predict"], t["forward"]), "x",
               f"predict {statistics.median(t['predict']) * 1e3:.2f} ms, of which {statistics.median(t['prepare']) * 1e3:.2f} ms "
               f"is preparing the image (decode, resize, scale); forward {statistics.median(t['forward']) * 1e3:.2f} ms; "
               f"{threads} thread(s); {_load()}", goal="<= 1.10")
    batch = 64
    many = torch.randn(batch, config.n_in, size, size)

    def forward_folder():
        with torch.inference_mode():
            return len(images) / _clock(lambda: [model(many[: min(batch, len(images) - i)]) for i in range(0, len(images), batch)])

    def predict_folder():
        return len(images) / _clock(lambda: predictor.predict(images, batch_size=batch))

    t = side_by_side(dict(predict=predict_folder, forward=forward_folder), repeats)
    report.add("prediction", f"{arch} {size}px: predict(folder), images per second", statistics.median(t["predict"]), "img/s",
               f"{len(images)} files in batches of {batch}; raw forward on the same batches "
               f"{statistics.median(t['forward']):.0f} img/s (ratio {median_ratio(t['predict'], t['forward']):.2f})")
    if not onnx:
        return
    from vision_studies.onnx_export import OnnxPredictor, export_onnx

    export_onnx(folder)
    ort = OnnxPredictor(folder, threads=threads)
    np.testing.assert_allclose(ort.predict(images[:4]).probs, predictor.predict(images[:4]).probs, atol=1e-4)

    def block(predict_fn, calls: int = 8) -> float:
        """Median latency over a block of calls, the first left out: onnxruntime's and torch's idle threads spin
        for a while after a call, and one engine's spinning threads would slow the other's next call."""
        seconds = [_clock(lambda k=k: predict_fn(images[k % len(images)])) for k in range(calls)]
        return statistics.median(seconds[1:])

    t = side_by_side(dict(ort=lambda: block(ort.predict), torch=lambda: block(predictor.predict)), max(3, repeats))
    report.add("prediction", f"{arch} {size}px: onnxruntime / PyTorch eager, one file", median_ratio(t["ort"], t["torch"]), "x",
               f"onnxruntime {statistics.median(t['ort']) * 1e3:.2f} ms, PyTorch {statistics.median(t['torch']) * 1e3:.2f} ms")
    t = side_by_side(dict(ort=lambda: len(images) / _clock(lambda: ort.predict(images, batch_size=batch)),
                          torch=predict_folder), repeats)
    report.add("prediction", f"{arch} {size}px: onnxruntime / PyTorch eager, folder (img/s)", median_ratio(t["ort"], t["torch"]),
               "x", f"onnxruntime {statistics.median(t['ort']):.0f} img/s, PyTorch {statistics.median(t['torch']):.0f} img/s")


def section_prediction(report: Report, args) -> None:
    n = 16 if args.quick else 64  # a new file for each call in a round; a folder is one batch of 64
    images_folder = make_jpegs(args.work / f"jpegs-{n}", n)  # 320 x 240, as the figures were taken
    images = sorted(images_folder.rglob("*.jpg"))
    configs = [("lenet5", 28)] if args.quick else [("resnet18", 224), ("resnet18", 64)]
    for arch, size in configs:
        folder = _export(args.work / f"export-{arch}-{size}", images_folder, arch, size, args.work)
        prediction_figures(report, arch, size, images, folder, args.repeats, args.threads, onnx=True)


# ------------------------------------------------------------------------------------------------ 4. notebooks


def _import_seconds(modules: tuple[str, ...]) -> float:
    """Wall time of a fresh interpreter that imports `modules` and exits, as a notebook kernel would pay it."""
    return _clock(lambda: subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], check=True, cwd=REPO,
                                         env=os.environ | {"PYTHONWARNINGS": "ignore"}))


def _overhead_notebook(path: Path, modules: tuple[str, ...]) -> Path:
    """A notebook that only starts and imports: its run time is what every study pays before its first step."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("FIXTURE = False\nOUTPUT_DIR = 'models'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + ([nbformat.v4.new_code_cell("import " + ", ".join(modules))] if modules else [])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def section_notebooks(report: Report, args) -> None:
    from vision_studies import warm_kernels
    from vision_studies.runner import available_cores, find_notebooks, format_table, run_notebooks

    repeats = args.repeats
    runs = dict(ours=lambda: _import_seconds(("vision_studies",)), fastai=lambda: _import_seconds(("fastai.vision.all",)))
    if not args.quick:
        runs["study"] = lambda: _import_seconds(STUDY_IMPORTS)
    t = side_by_side(runs, repeats)
    fastai_s = statistics.median(t["fastai"])
    report.add("notebooks", "import vision_studies / import fastai.vision.all", median_ratio(t["ours"], t["fastai"]), "x",
               f"{statistics.median(t['ours']):.2f} s against {fastai_s:.2f} s, each a fresh interpreter", goal="<= 1.10")
    if "study" in t:
        report.add("notebooks", "a study's imports (data, models, train, ...) / fastai.vision.all",
                   median_ratio(t["study"], t["fastai"]), "x",
                   f"{statistics.median(t['study']):.2f} s: {', '.join(STUDY_IMPORTS)}", goal="<= 1.10")
    with tempfile.TemporaryDirectory(prefix="bench-nb-") as tmp:
        tmp = Path(tmp)
        empty = [_overhead_notebook(tmp / f"00_empty{i}.ipynb", ()) for i in (1, 2)]
        imports = [_overhead_notebook(tmp / f"00_imports{i}.ipynb", STUDY_IMPORTS) for i in (1, 2)]

        def second(notebooks: list[Path], warm: str) -> float:
            """The second of two notebooks run by one worker: a fresh kernel, or (warm "1") one forked from the
            warm process that the first notebook's start made (warm_kernels.py), as all but a worker's first are."""
            os.environ[warm_kernels.SWITCH] = warm  # read in the runner's workers, forked from this process
            try:
                # a new folder each time: with the last run's times there, the runner would start the longer first
                out = Path(tempfile.mkdtemp(dir=tmp))
                return run_notebooks(notebooks, out, workers=1, cwd=REPO)[-1].seconds
            finally:
                os.environ.pop(warm_kernels.SWITCH)

        runs = dict(empty=lambda: second(empty, "0"))
        if not args.quick:
            runs |= dict(fresh=lambda: second(imports, "0"), warm=lambda: second(imports, "1"))
        t = side_by_side(runs, 1 if args.quick else 2)  # seconds each, to explain the suite's time: no goal
        report.add("notebooks", "per notebook: kernel start and papermill (a fresh kernel)", statistics.median(t["empty"]), "s")
        if "fresh" in t:
            report.add("notebooks", "per notebook: kernel start, papermill and the study imports, a fresh kernel",
                       statistics.median(t["fresh"]), "s")
            report.add("notebooks", "the same, a kernel forked from the worker's warm process",
                       statistics.median(t["warm"]), "s", f"{median_ratio(t['warm'], t['fresh']):.3f}x the fresh kernel's; "
                       f"preloaded: {', '.join(warm_kernels.PRELOAD + warm_kernels.PRELOAD_IF_INSTALLED)}"
                       + (f", {', '.join(warm_kernels.PRELOAD_WITHOUT_WIDGETS)} (no ipywidgets here)"
                          if not warm_kernels.widgets_installed() else ""))
    if args.quick:
        report.note("the notebook suite: not run with --quick (run without it, or with --only notebooks)")
        return
    notebooks = find_notebooks(REPO / "notebooks")
    # kept between benchmark runs (beside the generated image sets), as the main job keeps runs/: from the second run
    # on, the runner starts the notebooks that took longest first, so that no long one runs alone at the end
    out = args.data_cache / "notebook-runs"
    start = time.perf_counter()
    results = run_notebooks(notebooks, out, {"FIXTURE": True}, workers=available_cores(), cwd=REPO)
    total = time.perf_counter() - start
    print(format_table(results))
    failed = [r.notebook for r in results if not r.ok]
    report.add("notebooks", f"all {len(notebooks)} notebooks on fixtures, wall time", total, "s",
               f"{available_cores()} at a time; {len(failed)} failed {failed if failed else ''}; sum of their times "
               f"{sum(r.seconds for r in results):.0f} s; {_load()}", goal="<= 90")


# ------------------------------------------------------------------------------------------------ 5. digits

# LeNet-5 on the digits: notebook 05's settings (lr, batches of 32, the "digits" augmentation), trained longer
# and with label smoothing, which is what it takes to pass 99% on 1,437 training digits.
DIGITS = dict(epochs=40, lr=1e-2, batch_size=32, augment="digits", label_smoothing=0.1)
# The notebooks' seed, then four more: with 360 test digits one error is 0.28%, and seeds alone move a run's
# figure by +-0.5%, so one run says little about a 99% bar. The goal is held to the median.
DIGITS_SEEDS = (42, 0, 1, 2, 3)


def digits_run(seed: int, settings: dict, work: Path) -> tuple[float, float, int, float]:
    """(accuracy of the model fit keeps, accuracy of the last epoch, the kept epoch, seconds from files to model).

    Study 05's own steps (`pipeline.data`, `learner`, `train`) on its fixture, with `settings` over its fixture
    settings; label smoothing goes to the learner, as it is no study parameter.
    """
    from vision_studies import pipeline
    from vision_studies.studies import resolve_config

    start = time.perf_counter()
    study = {k: v for k, v in settings.items() if k != "label_smoothing"}
    config = resolve_config("05_mnist", fixture=True, seed=seed, data_dir=str(work / "data"),
                            output_dir=str(work / f"digits-{seed}"), **study)
    data = pipeline.data(config)
    learn = pipeline.learner(config, data, label_smoothing=settings["label_smoothing"])
    with learn.no_bar(), learn.no_logging():
        run = pipeline.train(config, learn)
    return run.history[run.best_epoch]["accuracy"], run.history[-1]["accuracy"], run.best_epoch, time.perf_counter() - start


def section_digits(report: Report, args) -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    digits = load_digits()
    train, test = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target, random_state=0)
    svm = SVC(gamma=0.001)  # scikit-learn's own digits example
    svm_seconds = _clock(lambda: svm.fit(digits.data[train], digits.target[train]))
    svm_accuracy = float((svm.predict(digits.data[test]) == digits.target[test]).mean())
    report.note(f"reference: an RBF SVM (SVC(gamma=0.001), as in scikit-learn's digits example) on the 8x8 pixels, "
                f"same split: {svm_accuracy:.2%} in {svm_seconds:.2f} s")
    settings = DIGITS | (dict(epochs=1) if args.quick else {})
    # all five seeds: study 05's digits are held in memory (registry: in_memory), about 13 s a run here
    seeds = DIGITS_SEEDS[:1] if args.quick else DIGITS_SEEDS
    runs = {seed: digits_run(seed, settings, args.work) for seed in seeds}
    for seed, (kept, last, epoch, seconds) in runs.items():
        report.note(f"seed {seed}: {kept:.2%} ({round((1 - kept) * len(test))} of {len(test)} wrong), epoch {epoch + 1} "
                    f"kept (lowest validation loss); the last epoch {last:.2%}; {seconds:.1f} s")
    accuracy = statistics.median(r[0] for r in runs.values())
    if len(runs) > 1:
        report.note(f"mean {statistics.mean(r[0] for r in runs.values()):.2%} (the kept epochs), "
                    f"{statistics.mean(r[1] for r in runs.values()):.2%} (the last epochs)")
    report.add("digits", f"LeNet-5, {settings['epochs']} epochs: held-out accuracy (median of {len(seeds)} seeds)",
               accuracy * 100, "%", f"settings {settings}, seeds {list(seeds)}; the 20% held out is also the set the kept "
               "epoch is chosen on, as in every notebook: see each seed's last epoch above",
               goal=">= 99.0")
    report.add("digits", "LeNet-5: seconds from image files to trained model (median)",
               statistics.median(r[3] for r in runs.values()), "s", f"{args.threads} thread(s); {_load()}")


# ------------------------------------------------------------------------------------------------ 6. threads


def thread_job(steps: int) -> float:
    """A training job of many small steps (a small CNN, 32 px): the kind that suffers most from waiting threads."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    start = time.perf_counter()
    for _ in range(steps):
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - start


def _launch(threads: int, steps: int) -> subprocess.Popen:
    env = os.environ | {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return subprocess.Popen([sys.executable, __file__, "--job", "threads", "--threads", str(threads), "--steps", str(steps)],
                            env=env, stdout=subprocess.PIPE, text=True)


def _wall(*jobs: tuple[int, int], busy: int = 0) -> float:
    """Seconds until every job (threads, steps) has finished, all started together, beside `busy` spinning processes."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        start = time.perf_counter()
        procs = [_launch(t, s) for t, s in jobs]
        for p in procs:
            p.communicate()
            if p.returncode:
                raise RuntimeError(f"a thread job failed (exit {p.returncode})")
        return time.perf_counter() - start
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def section_threads(report: Report, args) -> None:
    import torch

    from vision_studies.runner import available_cores, threads_per_worker

    cores = available_cores()
    report.note(f"cores available to this process: {cores} (os.cpu_count() says {os.cpu_count()}); torch would use "
                f"{torch.get_num_threads()} thread(s); the runner gives each of 2 notebooks {threads_per_worker(2, cores)}")
    steps = 5 if args.quick else 100
    share = threads_per_worker(2, cores)
    t = side_by_side(dict(
        capped=lambda: _wall((share, steps), (share, steps)),
        oversubscribed=lambda: _wall((cores, steps), (cores, steps)),
    ), 1 if args.quick else max(1, args.repeats // 2))
    report.add("threads", f"two jobs at once, {cores} threads each / {share} each (runner)",
               median_ratio(t["oversubscribed"], t["capped"]), "x",
               f"two jobs of {steps} steps together: {statistics.median(t['capped']):.2f} s with {share} thread(s) each, "
               f"{statistics.median(t['oversubscribed']):.2f} s with {cores} each")
    if cores > 1 and not args.quick:
        t = side_by_side(dict(
            all_cores=lambda: _wall((cores, steps), busy=1),
            spare_one=lambda: _wall((cores - 1, steps), busy=1),
        ), 1 if args.quick else max(1, args.repeats // 2))
        report.add("threads", f"beside one busy process: {cores} threads / {cores - 1}",
                   median_ratio(t["all_cores"], t["spare_one"]), "x",
                   f"{statistics.median(t['all_cores']):.2f} s against {statistics.median(t['spare_one']):.2f} s: every "
                   "parallel step waits for the thread that the busy process has pushed off its core")


# ------------------------------------------------------------------------------------------------ 7. gpu


def _decode_rate(files: list[Path], device: str, batch: int = 32) -> float:
    """Images per second that torchvision.io.decode_jpeg turns file bytes into (C, H, W) uint8 tensors on
    `device`, in batches (nvJPEG on CUDA decodes a list of files in one call), reading the files included."""
    import torch
    from torchvision.io import decode_jpeg, read_file

    start = time.perf_counter()
    for i in range(0, len(files), batch):
        data = [read_file(str(f)) for f in files[i : i + batch]]
        decode_jpeg(data, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(files) / (time.perf_counter() - start)


def gpu_figures(report: Report, device_name: str, arch: str, size: int, n: int, bs: int, epochs: int, repeats: int,
                folder: Path, workers: int, amp: str | None) -> None:
    """The GPU section's figures on `device_name` (a CPU too, so the code is tested where there is no GPU):
    `arch`'s training steps in channels-last (and `amp` mixed precision), our fit against a plain PyTorch
    loop; the loader with the augmentation in batches on the device against image by image in CPU workers;
    and JPEG decoding with torchvision.io.decode_jpeg on the device against PIL."""
    from vision_studies.data import dataloaders, user_folder_spec

    training_figures(report, "gpu", arch, size, 3, n, bs, epochs, repeats, device_name=device_name, amp=amp,
                     channels_last=True, stock=False)
    spec = user_folder_spec("benchmark")
    on_device = dataloaders(spec, folder, size, bs, augment="strong", num_workers=workers, device=device_name,
                            augment_on="batches").train
    on_cpu = dataloaders(spec, folder, size, bs, augment="strong", num_workers=workers, device="cpu",
                         augment_on="items").train
    t = side_by_side(dict(device=lambda: _images_per_second(on_device), cpu=lambda: _images_per_second(on_cpu)), repeats)
    report.add("gpu", f"data: augmentation in batches on {device_name} / image by image in CPU workers",
               median_ratio(t["device"], t["cpu"]), "x", f"{statistics.median(t['device']):.0f} against "
               f"{statistics.median(t['cpu']):.0f} img/s, 'strong' preset at {size} px, {workers} workers")
    files = sorted(folder.rglob("*.jpg"))
    t = side_by_side(dict(device=lambda: _decode_rate(files, device_name),
                          pil=lambda: len(files) / _clock(lambda: _decode_files([str(f) for f in files]))), repeats)
    report.add("gpu", f"JPEG decoding: torchvision.io.decode_jpeg on {device_name} / PIL on one core",
               median_ratio(t["device"], t["pil"]), "x", f"{statistics.median(t['device']):.0f} against "
               f"{statistics.median(t['pil']):.0f} img/s, {len(files)} files")


def section_gpu(report: Report, args) -> None:
    import torch

    if not torch.cuda.is_available():
        report.note("not measured: no CUDA device here (torch.cuda.is_available() is False). On a GPU this section "
                    "times ConvNeXt-tiny training steps (mixed precision, channels-last, fused AdamW) against a plain "
                    "loop doing the same, the loader with its augmentation in batches on the GPU, and "
                    "torchvision.io.decode_jpeg on the GPU; tests/test_benchmark.py runs the same code on the CPU.")
        return
    amp = "bfloat16" if torch.cuda.get_device_capability() >= (8, 0) else "float16"  # train.amp_mode's rule
    n, bs, size = (64, 16, 64) if args.quick else (1024, 64, 224)
    folder = make_jpegs(args.work / f"jpegs-gpu-{n}", n, (500, 375))
    gpu_figures(report, "cuda", "convnext_tiny", size, n, bs, 1 if args.quick else 2, args.repeats, folder,
                min(8, os.cpu_count() or 1), amp)
    if args.compile:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
        learn = _tensor_learner("convnext_tiny", x, y, x[:bs], y[:bs], bs, torch.device("cuda"), args.work)
        model = torch.compile(learn.model.cuda().to(memory_format=torch.channels_last))
        floor_loop(model, x, y, bs, 1, 1e-3, torch.device("cuda"), amp, True)  # compiles
        seconds = _clock(lambda: (floor_loop(model, x, y, bs, 1, 1e-3, torch.device("cuda"), amp, True), _sync(torch.device("cuda"))))
        report.add("gpu", "convnext_tiny: floor with torch.compile, images per second", (n // bs) * bs / seconds, "img/s")


# ------------------------------------------------------------------------------------------------ 8. datapath

# The real sets' counts and classes: Microsoft's cats vs dogs (25,000 photos in PetImages/Cat and Dog) and
# Oxford-IIIT Pets (7,390 photos of 37 breeds); both mostly about 500 x 375, portrait and landscape.
REAL_SETS = {"cats_vs_dogs": (25_000, 2), "pets": (7_390, 37)}
PHOTO_SIZES = ((500, 375), (375, 500), (500, 333), (400, 300), (500, 400))


def make_real_scale_set(folder: Path, n: int, classes: int) -> Path:
    """`n` JPEGs of about 500 x 375 in `classes` class folders, written once and reused (the count is checked).
    A few hundred distinct crops of scikit-image's photographs, cycled: decoding costs what real photos cost."""
    import shutil

    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    distinct = folder.parent / f"{folder.name}-distinct"
    originals = []
    for i, size in enumerate(PHOTO_SIZES):
        originals += sorted(make_jpegs(distinct / f"{size[0]}x{size[1]}", max(4, min(n, 400) // len(PHOTO_SIZES)),
                                       size).rglob("*.jpg"))
    for i in range(n):
        out = folder / f"class_{i % classes:02d}" / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(originals[i % len(originals)], out)
    return folder


def make_small_pngs(folder: Path, n: int, side: int, mode: str, classes: int = 10) -> Path:
    """`n` PNGs of `side` px in `mode` ("RGB" as CIFAR's, "L" as MNIST's) in `classes` class folders: crops of
    scikit-image's photographs shrunk to the side, written once and reused."""
    import numpy as np
    import skimage.data
    from PIL import Image

    if folder.is_dir() and sum(1 for _ in folder.rglob("*.png")) == n:
        return folder
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert(mode) for name in ("astronaut", "chelsea", "coffee", "rocket")]
    for i in range(n):
        photo = photos[i % len(photos)]
        crop = int(min(photo.size) * rng.uniform(0.3, 0.8))
        x0, y0 = int(rng.integers(0, photo.width - crop + 1)), int(rng.integers(0, photo.height - crop + 1))
        out = folder / f"class_{i % classes:02d}" / f"{i:05d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        photo.crop((x0, y0, x0 + crop, y0 + crop)).resize((side, side), Image.Resampling.LANCZOS).save(out)
    return folder


def estimate_rates(cache: Path, work: Path, n: int, workers: int, bs: int) -> dict[str, float]:
    """The small sets' rates that `estimate.MEASURED_HERE` records for the T4 estimate, measured again: each
    loader path's images a second over later epochs (`workers` workers, the batches left 8-bit as a GPU run's
    are) and, where a path prepares the set once, files a second for that. Returns them by the estimate's keys."""
    import dataclasses
    import shutil

    from vision_studies.data import dataloaders, user_folder_spec

    spec = user_folder_spec("benchmark")
    cifar = make_small_pngs(cache / f"cifar-like-{n}", n, 32, "RGB")
    mnist = make_small_pngs(cache / f"mnist-like-{n}", n, 28, "L")
    rates = {}
    for path, once, folder, size, set_spec, kw in (
            ("copied", "write_copied", cifar, 32, spec, {}),
            ("per_item", None, cifar, 224, spec, {}),
            ("in_memory", "decode_in_memory", mnist, 28, dataclasses.replace(spec, image_mode="L"), dict(in_memory=True))):
        presized = work / f"presized-{path}"
        shutil.rmtree(presized, ignore_errors=True)
        start = time.perf_counter()
        dls = dataloaders(set_spec, folder, size, bs, augment="light", num_workers=workers, device="cpu",
                          presize=presized, augment_on="batches", **kw)
        if once:
            rates[once] = n / (time.perf_counter() - start)
        loaders = (dls.train.new(after_batch=None), dls.valid.new(after_batch=None))
        _epoch(loaders)  # the first epoch starts the workers
        rates[path] = statistics.median(_epoch(loaders) for _ in range(3))
    return rates


def cpu_training_step(arch: str, size: int, bs: int) -> float:
    """Seconds of one training step (`floor_loop`: forward, backward, fused AdamW) of timm's `arch` from random
    weights on a batch of `bs` random images at `size` px on this CPU, after one that lets oneDNN pick its kernels."""
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=37)  # as many classes as Pets
    x, y = torch.randn(bs, 3, size, size), torch.randint(0, 37, (bs,))
    step = partial(floor_loop, model, x, y, bs, 1, 1e-3, torch.device("cpu"))  # one epoch of one batch
    step()
    return _clock(step)


def _decode_files(files: list[str]) -> int:
    from PIL import Image

    for f in files:
        with Image.open(f) as im:
            im.load()
    return len(files)


def decode_alone(files: list[str], pool) -> float:
    """Images per second that PIL decodes at full size, the files shared among one process per core: the most
    any loader reading the originals could deliver, before resizing, augmenting or batching them."""
    chunks = [files[i : i + 64] for i in range(0, len(files), 64)]
    start = time.perf_counter()
    n = sum(pool.map(_decode_files, chunks))
    return n / (time.perf_counter() - start)


def _epoch(loaders) -> float:
    """Images per second over one epoch: a training pass (augmented) and a validation pass (resized)."""
    start, n = time.perf_counter(), 0
    for loader in loaders:
        for xb, _ in loader:
            n += len(xb)
    return n / (time.perf_counter() - start)


def _torchvision_loaders(folder: Path, size: int, bs: int, workers: int, seed: int = 42):
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2

    train = torchvision_pipeline(folder, size, bs, workers)
    valid_ds = datasets.ImageFolder(str(folder), v2.Compose([v2.Resize((size, size)), v2.ToImage(),
                                                             v2.ToDtype(torch.float32, scale=True)]))
    order = torch.randperm(len(valid_ds), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(len(order) * 0.2)
    train = torch.utils.data.DataLoader(torch.utils.data.Subset(train.dataset, order[cut:]), batch_size=bs,
                                        shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    valid = torch.utils.data.DataLoader(torch.utils.data.Subset(valid_ds, order[:cut]), batch_size=bs,
                                        num_workers=workers, persistent_workers=workers > 0)
    return train, valid


def _fastai_stock_loaders(folder: Path, size: int, bs: int, workers: int):
    """fastai's own ImageDataLoaders as fastbook writes it, with our 'light' preset's augmentation amounts."""
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.data import ImageDataLoaders

    from vision_studies.augment import PRESETS

    dls = ImageDataLoaders.from_folder(folder, valid_pct=0.2, seed=42, item_tfms=Resize(size, method="squish"),
                                       batch_tfms=aug_transforms(**PRESETS["light"]), bs=bs, num_workers=workers,
                                       device="cpu")
    return dls.train, dls.valid


def section_datapath(report: Report, args) -> None:
    """The data path at the real sets' scale: screening, table and loader build, images per second per epoch."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    from vision_studies.data import dataloaders, items_table, user_folder_spec
    from vision_studies.images import find_bad_images
    from vision_studies.runner import available_cores

    scale = args.scale if args.scale is not None else (0.004 if args.quick else 1.0)
    size, bs = (64, 16) if args.quick else (224, 64)
    workers = 0 if args.quick else 2  # Colab's two cores: one worker process each
    judge = scale >= 1.0  # the goals are about the real counts
    cache = args.work if args.quick else args.data_cache
    counts = {name: (max(16, round(n * scale)), k) for name, (n, k) in REAL_SETS.items()}
    # at small scales fewer classes, so that each has images on both sides of the split
    sets = {name: make_real_scale_set(cache / f"{name}-{n}", n, min(k, n // 8)) for name, (n, k) in counts.items()}
    spec = user_folder_spec("benchmark")
    cores = available_cores()
    for name, folder in sets.items():
        files = sorted(str(f) for f in folder.rglob("*.jpg"))
        seconds = _clock(lambda: find_bad_images(files, progress=False))
        table_s = _clock(lambda: items_table(spec, folder))
        report.add("datapath", f"{name}: items table", table_s, "s")
        report.add("datapath", f"{name}: screening {len(files):,} files", seconds, "s",
                   f"{len(files) / seconds:.0f} files/s on {cores} threads; {_load()}",
                   goal="< 60" if judge and name == "cats_vs_dogs" else "")
        if name != "pets":  # writing the cache is timed on one set: its rate holds for the other
            continue
        presized = args.work / f"presized-{name}"
        shutil.rmtree(presized, ignore_errors=True)
        cold = _clock(lambda: dataloaders(spec, folder, size, bs, num_workers=workers, device="cpu", presize=presized))
        warm = _clock(lambda: dataloaders(spec, folder, size, bs, num_workers=workers, device="cpu", presize=presized))
        report.add("datapath", f"{name}: loaders, first build (writes the presized cache)", cold, "s",
                   f"{len(files) / cold:.0f} files/s presized to {size}px")
        written_per_s = len(files) / cold
        report.add("datapath", f"{name}: loaders, later builds (cache current)", warm, "s")

    # images per second hardly depend on the count past a few hundred images: a tenth of Pets at most (739: nine
    # training batches and three validation ones an epoch, the workers' start included, as every epoch pays it)
    n_epoch = max(16, round(REAL_SETS["pets"][0] * min(scale, 0.1)))
    folder = make_real_scale_set(cache / f"pets-{n_epoch}", n_epoch, min(REAL_SETS["pets"][1], n_epoch // 8))
    files = sorted(str(f) for f in folder.rglob("*.jpg"))
    ours = dataloaders(spec, folder, size, bs, augment="light", num_workers=workers, device="cpu",
                       presize=args.work / "presized-epochs")
    # with a GPU (Colab's case) the random changes and the float conversion are batch transforms on the device:
    # the CPU's part ends at the 8-bit batches, which is what these loaders deliver (their batch transforms left out)
    on_gpu = dataloaders(spec, folder, size, bs, augment="light", num_workers=workers, device="cpu",
                         presize=args.work / "presized-epochs", augment_on="batches")
    pipelines = {
        "ours": (ours.train, ours.valid),
        "ours_8bit": (ours.train.new(after_batch=None), ours.valid.new(after_batch=None)),  # the CPU run's, unconverted
        "ours_gpu": (on_gpu.train.new(after_batch=None), on_gpu.valid.new(after_batch=None)),
        "fastai": _fastai_stock_loaders(folder, size, bs, workers),
        "torchvision": _torchvision_loaders(folder, size, bs, workers),
    }
    with ProcessPoolExecutor(max(1, cores)) as pool:
        pool.map(_decode_files, [files[:2]] * cores)  # the processes start before the clock does
        first = {name: _epoch(loaders) for name, loaders in pipelines.items()}
        first["decode"] = decode_alone(files, pool)
        runs = {name: partial(_epoch, loaders) for name, loaders in pipelines.items()}
        runs["decode"] = partial(decode_alone, files, pool)
        later = side_by_side(runs, 1 if args.quick else max(2, args.repeats // 2))
    what = (f"{len(files):,} JPEGs of about 500x375 -> {size}px, batches of {bs}, {workers} workers, 'light' augmentation "
            "in training, resize only in validation; an epoch is both passes. ours: a CPU run (augmented image by image, "
            "converted to float); ours_8bit: the same, unconverted; ours_gpu: a GPU run's CPU part (8-bit batches; the GPU "
            "augments and converts them)")
    report.note(what + f"; {_load()}")
    for name in (*pipelines, "decode"):
        report.add("datapath", f"{name}: first epoch / later epochs, images per second", first[name], "img/s",
                   f"later epochs {statistics.median(later[name]):.0f} img/s")
    for name, run in (("ours_gpu", "a GPU run's CPU part"), ("ours", "a CPU run")):
        report.add("datapath", f"later epochs, {run}: {name} / torchvision ImageFolder+v2",
                   median_ratio(later[name], later["torchvision"]), "x", goal=">= 1.5" if judge else "")
        report.add("datapath", f"later epochs, {run}: {name} / decode-alone limit (PIL, full size)",
                   median_ratio(later[name], later["decode"]), "x", f"{cores} processes decoding the originals",
                   goal=">= 1.0" if judge else "")
    report.add("datapath", "later epochs: ours / fastai's stock ImageDataLoaders", median_ratio(later["ours"], later["fastai"]), "x",
               "both augmenting on this CPU")
    # A CPU run converts each batch to float in the main process, which neither a GPU run's CPU part (the GPU
    # converts) nor the decode-alone limit does: what that costs the loader, and the loader's share of the run,
    # say whether it matters
    report.add("datapath", "later epochs, a CPU run: ours / the same loader's 8-bit batches",
               median_ratio(later["ours"], later["ours_8bit"]), "x",
               f"{statistics.median(later['ours']):.0f} against {statistics.median(later['ours_8bit']):.0f} img/s: what converting "
               "each batch to float in the main process costs")
    step = cpu_training_step("resnet18", size, bs)
    batch_s = bs / statistics.median(later["ours"])
    report.add("datapath", f"a CPU run: a training step of ResNet-18 on a batch of {bs} at {size}px", step, "s",
               f"the lightest photo model of the studies; the loader's later epochs deliver a batch in "
               f"{batch_s * 1e3:.0f} ms, {batch_s / (batch_s + step):.1%} of the two")
    report.add("datapath", "first epoch: ours / torchvision ImageFolder+v2", first["ours"] / first["torchvision"], "x",
               "our first epoch reads the cache the loader build wrote (its time is above)")

    # the T4 estimate's rates (estimate.MEASURED_HERE): the photos' from above, the small sets' measured here
    from vision_studies.estimate import COLAB_CPU_SHARE, MEASURED_HERE

    n_small = 200 if args.quick else 2000
    rates = dict(presized=statistics.median(later["ours_gpu"]), write_presized=written_per_s)
    rates |= estimate_rates(cache, args.work, n_small, workers, bs)
    report.note(f"the T4 estimate's rates: photos as above; {n_small:,} PNGs of 32 px (as CIFAR's) at 32 and 224 px "
                f"and of 28 px grey (as MNIST's) held in memory; estimate.py takes {COLAB_CPU_SHARE} of each for Colab")
    for key, value in rates.items():
        report.add("datapath", f"T4 estimate's rate {key!r}", value, "img/s",  # images read, or files written or decoded
                   f"estimate.MEASURED_HERE records {MEASURED_HERE[key]:,.0f} ({value / MEASURED_HERE[key]:.2f}x)")


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one run each: checks that every section runs")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per figure (default 5, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="leave these sections out")
    parser.add_argument("--compile", action="store_true", help="gpu: also time a torch.compile'd loop")
    parser.add_argument("--stock", action="store_true",
                        help="training: also time fastai's own fit_one_cycle, with its Adam and with our AdamW (two more runs a round)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--scale", type=float, default=None,
                        help="datapath: this fraction of the real sets' file counts (default 1; 0.004 with --quick)")
    parser.add_argument("--data-cache", type=Path, default=Path(tempfile.gettempdir()) / "vision-studies-bench-datapath",
                        help="where the generated image sets are written once and reused, and the notebook suite's "
                             "runs kept (their times order the next run)")
    parser.add_argument("--work", type=Path, default=None, help="folder for generated images and runs (default: a temporary one)")
    parser.add_argument("--job", choices=["threads"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from vision_studies.runner import available_cores

    # torch starts as many threads as OMP_NUM_THREADS says, or one per core it sees: never more than we may use
    args.threads = args.threads or min(torch.get_num_threads(), available_cores())
    torch.set_num_threads(args.threads)
    if args.job == "threads":
        print(thread_job(args.steps))
        return 0
    args.repeats = args.repeats or (1 if args.quick else 3)
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    report = Report(judge=not args.quick)
    with contextlib.ExitStack() as stack:
        if args.work is None:
            args.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vision-studies-bench-")))
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"vision-studies benchmark: torch {torch.__version__}, {args.threads} thread(s) of {available_cores()} cores, "
              f"{'quick' if args.quick else f'{args.repeats} rounds'}; {_load()}")
        start = time.perf_counter()
        for name in sections:
            print(f"\n{name}\n{'-' * len(name)}", flush=True)
            seconds = _clock(lambda: globals()[f"section_{name}"](report, args))
            print(f"  ({name}: {seconds:.0f} s)", flush=True)
        if set(sections) == set(SECTIONS):  # the goal is for the whole run, as someone runs it before a change
            print()
            report.add("total", "the whole benchmark, wall time", time.perf_counter() - start, "s",
                       f"sections: {', '.join(sections)}; {_load()}", goal="< 600")
        print(report.summary())
        if args.json:
            args.json.write_text(json.dumps([asdict(f) for f in report.figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
