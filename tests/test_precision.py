"""Mixed precision by compute capability, and the fp16 step with a gradient scaler and our fused AdamW.

What a CPU cannot show: that cuDNN's fp16 convolutions are the fast path on a T4 and bf16 the fast one
from compute capability 8.0 on. That needs the GPUs themselves; the rule is tested here as a function of
the capability, and the fp16 + GradScaler step runs for real on the CPU (torch's CPU autocast and scaler).
"""

from __future__ import annotations

import math

import pytest
import torch
from fastai.callback.core import Callback

from vision_studies.data import dataloaders
from vision_studies.models import AdamW, build_learner
from vision_studies.train import AutocastPrecision, amp_mode


@pytest.mark.parametrize(
    "capability, mode",
    [
        ((7, 5), "fp16"),  # T4, Colab's free GPU: bf16 only by emulation
        ((7, 0), "fp16"),  # V100
        ((6, 0), "fp16"),  # P100
        ((8, 0), "bf16"),  # A100
        ((8, 9), "bf16"),  # L4
        ((9, 0), "bf16"),  # H100
        ((12, 0), "bf16"),
        (None, None),  # no GPU: full precision
    ],
)
def test_bf16_only_from_compute_capability_8(capability, mode):
    assert amp_mode(capability) == mode


@pytest.fixture()
def digits_learner(mnist, tmp_path):
    spec, path = mnist
    dls = dataloaders(spec, path, 28, batch_size=64, augment="none")
    torch.manual_seed(0)
    return build_learner(dls, "lenet5", pretrained=False, path=tmp_path)


class _Watch(Callback):
    """Records the scaler's scale and whether each step changed the weights; can make one step overflow."""

    order = AutocastPrecision.order - 1  # after backward, before the scaler looks at the gradients

    def __init__(self, overflow_at: int | None = None):
        self.overflow_at, self.scales, self.changed = overflow_at, [], []

    def before_fit(self):
        self.i = 0

    def after_backward(self):
        if self.i == self.overflow_at:
            next(self.learn.model.parameters()).grad[0].fill_(math.inf)
        self.before = [p.detach().clone() for p in self.learn.model.parameters()]

    def after_batch(self):
        self.scales.append(self.learn.scaler.get_scale() if self.learn.scaler.is_enabled() else None)
        after = list(self.learn.model.parameters())
        self.changed.append(any(not torch.equal(a, b) for a, b in zip(after, self.before)))
        self.i += 1


def test_fp16_with_a_gradient_scaler_steps_our_fused_adamw(digits_learner):
    learn = digits_learner
    watch = _Watch(overflow_at=3)
    learn.fit_one_cycle(1, 1e-2, cbs=[AutocastPrecision("fp16", "cpu"), watch])
    assert isinstance(learn.opt, AdamW) and learn.opt.opt.defaults["fused"]  # the fused kernel, not a fallback
    # the scaler scales the loss (fastai's default start, 2**16), and gives way by half on the overflow
    assert watch.scales[0] == 2.0**16
    assert watch.scales[3] == watch.scales[2] / 2
    # every step but the overflowing one changes the weights; that one is skipped whole
    assert watch.changed[3] is False
    assert all(watch.changed[:3]) and all(watch.changed[4:])
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    loss = learn.recorder.values[-1][0]  # validation loss after the epoch
    assert math.isfinite(loss) and loss < math.log(10)  # better than a uniform guess over ten digits


def test_bf16_needs_no_scaler(digits_learner):
    learn = digits_learner
    watch = _Watch()
    learn.fit(1, 1e-3, cbs=[AutocastPrecision("bf16", "cpu"), watch])
    assert watch.scales and set(watch.scales) == {None}  # the scaler is off: bf16 has fp32's range
    assert all(watch.changed)


def test_the_gpu_check_trains_in_each_precision_on_a_gpu_and_says_why_not_elsewhere():
    """scripts/gpu_check.py fine-tunes study 08's fixture on CUDA in fp16 with its scaler (a T4's path) and, from
    compute capability 8.0, in bf16; without a GPU it must say so and fail, not pass having checked nothing."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "scripts" / "gpu_check.py")], check=False, capture_output=True,
                          text=True, cwd=repo, timeout=900)
    if torch.cuda.is_available():
        assert done.returncode == 0 and "gpu_check: ok" in done.stdout, done.stdout + done.stderr
        assert "fp16: trained in fp16" in done.stdout
        if torch.cuda.get_device_capability() >= (8, 0):
            assert "bf16: trained in bf16" in done.stdout
    else:
        assert done.returncode == 1 and "no CUDA device here" in done.stdout, done.stdout + done.stderr
