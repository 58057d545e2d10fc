"""Models: timm backbones with a fastai head for transfer learning, and LeNet-5 for learning from scratch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat
from fastai.optimizer import OptimWrapper
from fastai.vision.learner import vision_learner
from fastcore.basics import even_mults
from fastcore.foundation import L
from torch import nn

from . import dispatch
from .errors import VisionStudiesError
from .losses import BCEWithLogitsLoss, CrossEntropyLoss
from .recorder import accuracy, accuracy_multi, use_recorder

dispatch.install()  # fastai's callbacks called as fastai calls them, without sorting them again at every event

__all__ = ["LeNet5", "SmallBNCNN", "SmallBNCNN3", "NaiveCNN", "ConvPoolCNN", "BatchNormDropoutCNN", "BatchNormCNN",
           "build_learner", "body_pretrained", "count_parameters", "depthwise", "PretrainedWeightsUnavailable",
           "SCRATCH_MODELS", "AdamW", "weight_decay_groups"]


class PretrainedWeightsUnavailable(VisionStudiesError, RuntimeError):
    """timm could not fetch the pretrained weights (offline, or the Hub is unreachable)."""


class LeNet5(nn.Sequential):
    """LeNet-5 (LeCun et al., 1998) for 28x28 grayscale digits: 61,706 parameters.

    As LeCun built it: 5x5 convolutions C1 (6 maps) and C3 (16 maps), 2x2 average-pooling subsampling,
    tanh squashing, C5 (120 maps), F6 (84 units). The 28x28 input is padded by 2 to the paper's 32x32.
    Two modern simplifications, as in every textbook version: C3 sees all of S2's maps (the paper wired
    a hand-picked subset to break symmetry) and the output is a linear layer for cross-entropy instead of
    the paper's Euclidean RBF units.
    """

    def __init__(self, n_in: int = 1, n_out: int = 10):
        super().__init__(
            nn.Conv2d(n_in, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),  # C1, S2: 28 -> 14
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),  # C3, S4: 14 -> 10 -> 5
            nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),  # C5: 5 -> 1
            nn.Linear(120, 84), nn.Tanh(),  # F6
            nn.Linear(84, n_out),
        )


def _conv(n_in: int, n_out: int, bn: bool) -> list[nn.Module]:
    return [nn.Conv2d(n_in, n_out, 3, padding=1), *([nn.BatchNorm2d(n_out)] if bn else []), nn.ReLU()]


class NaiveCNN(nn.Sequential):
    """Step 1 of seed 002's CIFAR-10 story: one convolution, then a huge dense layer doing all the work.

    Most of its parameters sit in a layer that sees every pixel position separately, so it memorises
    where things are instead of learning what they look like: it overfits early.
    """

    def __init__(self, n_in: int = 3, n_out: int = 10):
        super().__init__(*_conv(n_in, 32, bn=False), nn.Flatten(), nn.LazyLinear(512), nn.ReLU(), nn.Linear(512, n_out))


class ConvPoolCNN(nn.Sequential):
    """Step 2: stacked 3x3 convolutions with max-pooling, so features are shared across positions."""

    def __init__(self, n_in: int = 3, n_out: int = 10, bn: bool = False, dropout: float = 0.0):
        blocks = []
        for a, b in ((n_in, 32), (32, 64), (64, 128)):
            blocks += [*_conv(a, b, bn), *_conv(b, b, bn), nn.MaxPool2d(2), nn.Dropout(dropout)]
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 256), nn.ReLU(),
                         nn.Dropout(2 * dropout), nn.Linear(256, n_out))


class BatchNormDropoutCNN(ConvPoolCNN):
    """Step 3: the same network with batch norm (steadier, faster training) and dropout (less overfitting)."""

    def __init__(self, n_in: int = 3, n_out: int = 10):
        super().__init__(n_in, n_out, bn=True, dropout=0.25)


class BatchNormCNN(ConvPoolCNN):
    """Step 3 without its dropout: what dropout does, seen by training both (notebook 10, seed 004's lesson)."""

    def __init__(self, n_in: int = 3, n_out: int = 10):
        super().__init__(n_in, n_out, bn=True, dropout=0.0)


class SmallBNCNN(nn.Sequential):
    """Two 3x3 convolutions with batch norm and 2x2 max-pooling, then a dense layer: Zalando's benchmark row
    "2 Conv + pooling + BN" (0.934 on Fashion-MNIST), for 28x28 grayscale images. 0.83M parameters.

    Small on purpose, so a whole epoch of Fashion-MNIST's 60,000 images fits in about a CPU-minute: most of
    the compute sits in the second convolution at 14x14, most of the parameters in the dense layer.
    """

    def __init__(self, n_in: int = 1, n_out: int = 10, extra_conv: bool = False):
        def conv(a: int, b: int) -> list[nn.Module]:  # no bias: the batch norm's shift takes its place
            return [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]

        second = conv(32, 64) + (conv(64, 64) if extra_conv else [])
        super().__init__(*conv(n_in, 32), nn.MaxPool2d(2), *second, nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.3), nn.LazyLinear(256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(256, n_out))


class SmallBNCNN3(SmallBNCNN):
    """`SmallBNCNN` with a third 3x3 convolution (64 maps) at 14x14: a 5x5 view before pooling instead of 3x3,
    for twice the compute per image (0.87M parameters). The from-scratch model for the CPU budget once the
    loading costs nothing (memory_data.py) and the convolutions run in bf16 (1,430 images per CPU-second)."""

    def __init__(self, n_in: int = 1, n_out: int = 10):
        super().__init__(n_in, n_out, extra_conv=True)


SCRATCH_MODELS: dict[str, type[nn.Module]] = {
    "lenet5": LeNet5,
    "small_bn_cnn": SmallBNCNN,
    "small_bn_cnn3": SmallBNCNN3,
    "naive_cnn": NaiveCNN,
    "conv_pool_cnn": ConvPoolCNN,
    "bn_dropout_cnn": BatchNormDropoutCNN,
    "bn_cnn": BatchNormCNN,
}


def weight_decay_groups(params, weight_decay: float) -> list[dict]:
    """Two torch parameter groups: weights that decay, and norm scales and biases (every 1-D tensor) that do not.

    fastai's rule (``wd_bn_bias=False``) and timm's (``param_groups_weight_decay``): decaying a batch-norm
    scale or a bias towards zero only fights the normalisation, it regularises nothing.
    """
    params = list(params)
    return [dict(params=[p for p in params if p.ndim > 1], weight_decay=weight_decay),
            dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)]


class AdamW(OptimWrapper):
    """fastai's default optimizer (Adam, decoupled weight decay 0.01, none on norms and biases) run by
    PyTorch's fused AdamW: the same update in one kernel per step instead of Python calls per tensor.

    fastai's own `Adam` steps each parameter tensor through five Python callbacks; on a CPU that cost
    a third of a ResNet-18 training step at 64 px. To fastai this looks like any optimizer: one group per
    layer group of the splitter (for freezing and discriminative learning rates), each held as two torch
    groups, so that norms and biases keep a weight decay of 0 whatever ``wd`` the schedule sets.
    """

    def __init__(self, params, lr: float = 1e-3, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                 wd: float = 0.01):
        params = list(params)  # a splitter's layer groups (lists of tensors), or the tensors of a single group
        groups = [list(g) for g in params] if params and isinstance(params[0], (list, tuple)) else [params]
        torch_groups = [g for group in groups for g in weight_decay_groups(group, wd)]
        every = [p for g in torch_groups for p in g["params"]]
        # the fused kernel takes floating-point tensors on the CPU or CUDA; anything else steps tensor by tensor
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in every)
        super().__init__(opt=torch.optim.AdamW(torch_groups, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd,
                                               fused=fused or None))

    @property
    def param_lists(self):
        pgs = self.opt.param_groups
        return [pgs[i]["params"] + pgs[i + 1]["params"] for i in range(0, len(pgs), 2)]

    @param_lists.setter
    def param_lists(self, v):
        for i, params in enumerate(v):
            decay, no_decay = weight_decay_groups(params, 0.0)
            self.opt.param_groups[2 * i]["params"] = decay["params"]
            self.opt.param_groups[2 * i + 1]["params"] = no_decay["params"]

    @property
    def hypers(self):
        # each group's hyper-parameters, as its decaying half holds them, in fastai's names. Read five times a
        # batch (the scheduler's two reads and two writes, the recorder), so this is fastai's detuplify_pg
        # with a plain isinstance for its is_listy: a torch group holds numbers, flags and the betas tuple
        fwd, out = self.fwd_map, []
        for pg in self.opt.param_groups[::2]:
            h = {}
            for k, v in pg.items():
                if k == "params":
                    continue
                if isinstance(v, (tuple, list)):
                    for i, v_ in enumerate(v):
                        name = f"{k}__{i}"
                        h[fwd.get(name, name)] = v_
                else:
                    h[fwd.get(k, k)] = v
            out.append(h)
        return out

    def set_hyper(self, k, v):
        """fastai's `set_hyper`, counting the groups rather than building their tensor lists and hypers to count."""
        n = len(self.opt.param_groups) // 2
        if type(v) is float:  # the scheduler's momentum, every batch: what L(v) * n makes of it
            return self._set_hyper(k, [v] * n)
        if isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == n:  # its rates, one per group: what L(v) holds
            return self._set_hyper(k, v)
        if isinstance(v, slice):
            v = even_mults(v.start, v.stop, n) if v.start else [v.stop / 10] * (n - 1) + [v.stop]
        v = L(v, use_list=None)
        if len(v) == 1:
            v = v * n
        if len(v) != n:
            raise ValueError(f"Trying to set {len(v)} values for {k} but there are {n} parameter groups.")
        self._set_hyper(k, v)

    def _set_hyper(self, k, v):
        # fastai's set_item_pg on each half of each group: a name with "__i" is the i-th entry of a tuple (betas)
        name, _, entry = self.bwd_map[k].partition("__")
        at = int(entry) if entry else None
        groups = self.opt.param_groups
        for i, v_ in enumerate(v):
            for j in ((2 * i,) if k == "wd" else (2 * i, 2 * i + 1)):  # norms and biases never decay
                pg = groups[j]
                if at is None:
                    pg[name] = v_
                else:
                    old = pg[name]
                    pg[name] = tuple(v_ if m == at else old[m] for m in range(len(old)))

    def state_dict(self) -> dict:
        # "hypers" as fastai's own optimizers have it, so checkpoints of either kind resume the same way
        return {**self.opt.state_dict(), "hypers": [dict(h) for h in self.hypers]}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict({k: v for k, v in state.items() if k != "hypers"})


def build_learner(
    dls: DataLoaders,
    arch: str,
    pretrained: bool = True,
    weights: Path | str | None = None,
    path: Path | str = ".",
    model_kwargs: dict | None = None,
    label_smoothing: float = 0.0,
    weights_dir: Path | str = "data/weights",
) -> Learner:
    """A fastai Learner for `arch`: a name in `SCRATCH_MODELS`, or any timm model name.

    For timm models, `pretrained=True` fetches the weights timm names for `arch` from the Hugging Face
    Hub; `weights` loads them from a local file instead (the offline path, and how tests exercise
    transfer learning without a network). The classifier head is new either way: it has this dataset's
    classes. `model_kwargs` go to timm (``img_size`` for a ViT at another resolution, say).
    A multi-label dataset gets binary cross-entropy per label and accuracy over labels at threshold 0.5.
    `label_smoothing` (single-label only) trains towards 1 - e on the true class and e spread over all
    classes instead of all-or-nothing targets: on small sets it keeps the model from growing over-confident
    on the training images (0.1 is the usual value).
    With `pretrained` and no `weights`, an installed package's real weights for `arch` are used offline
    when there are any (`weights.offline_weights`, converted once into `weights_dir`), else the Hub's.
    The optimizer is `AdamW`: fastai's default Adam, stepped by PyTorch's fused kernel.
    """
    xb = dls.one_batch()[0]
    n_in, n_out = xb.shape[1], len(dls.vocab)
    multi_label = isinstance(dls.loss_func, BCEWithLogitsLossFlat)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} should be at least 0 and below 1 (0.1 is usual)")
    if label_smoothing and multi_label:
        raise ValueError("label_smoothing applies to single-label datasets; this one is multi-label")
    common = dict(
        metrics=[partial(accuracy_multi, thresh=0.5)] if multi_label else [accuracy],
        loss_func=BCEWithLogitsLoss() if multi_label else CrossEntropyLoss(label_smoothing=label_smoothing),
        path=path,
        opt_func=AdamW,
    )
    if arch in SCRATCH_MODELS:
        if pretrained or weights:
            raise ValueError(f"{arch} is trained from scratch here: pass pretrained=False and no weights")
        model = SCRATCH_MODELS[arch](n_in=n_in, n_out=n_out)
        with torch.no_grad():  # lazy layers learn their input size from one real batch
            model(xb[:2].cpu())
        return _record(Learner(dls, model, **common), arch, pretrained=False, n_in=n_in, model_kwargs=None)
    timm_args = dict(model_kwargs or {})
    if pretrained and weights is None:  # real weights an installed package supplies offline (weights.py), else the Hub
        from .weights import offline_weights

        weights = offline_weights(arch, weights_dir)  # converted once, cached beside the datasets
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist (the WEIGHTS parameter)")
        timm_args["pretrained_cfg_overlay"] = dict(file=str(weights))
        pretrained = True
    try:
        learn = vision_learner(dls, arch, pretrained=pretrained, n_in=n_in, **timm_args, **common)
    except OSError as e:  # huggingface_hub's "not found locally and cannot reach the Hub" is an OSError
        if weights is not None or not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"could not fetch pretrained weights for {arch!r} ({e.__class__.__name__}). Connect to the internet, "
            f"or set PRETRAINED = False to train from scratch, or set WEIGHTS to a local weights file "
            f"(.safetensors or .pth) for {arch}."
        ) from e
    if pretrained and n_in == 1:
        _normalise_grey(learn)
    return _record(learn, arch, pretrained=pretrained, n_in=n_in, model_kwargs=model_kwargs)


def _normalise_grey(learn: Learner) -> None:
    """A pretrained body's normalisation for one grey channel, which fastai adds for 3-channel inputs only.

    timm folds the RGB stem into one channel by summing its weights, which is the RGB network seeing a grey
    picture only if the grey picture is normalised as the RGB ones were: by the mean of timm's statistics
    (Fashion-MNIST into EfficientNet-Lite0, mean = std = 0.5).
    """
    if any(isinstance(t, Normalize) for t in learn.dls.after_batch.fs):
        return
    net = getattr(learn.model[0], "model", learn.model[0])  # fastai's TimmBody holds the timm model
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if cfg.get("mean") and cfg.get("std"):
        mean, std = sum(cfg["mean"]) / len(cfg["mean"]), sum(cfg["std"]) / len(cfg["std"])
        learn.dls.add_tfms([Normalize.from_stats([mean], [std])], "after_batch")


def _record(learn: Learner, arch: str, *, pretrained: bool, n_in: int, model_kwargs: dict | None) -> Learner:
    """Keep on the learner what it was built with, as fastai's `vision_learner` keeps ``arch``, ``pretrained``
    and ``n_in`` (its ``store_attr``), so later steps read the record instead of guessing from the network.

    ``pretrained`` is True when the body starts from pretrained weights (the Hub's, an offline package's or
    a weights file): `body_pretrained` reads it. ``normalisation`` is the (mean, std) fastai normalises the
    batches with (it adds timm's statistics for a pretrained body), or None.
    """
    # a plain PyTorch DataLoader wrapped in fastai's DataLoaders (the benchmark's) has no Pipeline of transforms
    steps = getattr(learn.dls.valid.after_batch, "fs", [])
    found = [t for t in steps if isinstance(t, Normalize)]
    use_recorder(learn)
    learn.arch, learn.pretrained, learn.n_in = arch, bool(pretrained), int(n_in)
    learn.model_kwargs = dict(model_kwargs or {})
    learn.normalisation = (
        (tuple(found[0].mean.flatten().tolist()), tuple(found[0].std.flatten().tolist())) if found else None
    )
    return learn


def body_pretrained(learn: Learner) -> bool:
    """Whether the learner's body starts from pretrained weights (``pretrained=True``, or a weights file).

    The one rule for fine-tuning: `train.fit` trains the new head alone first and then unfreezes exactly
    when this is True, and the results record's ``pretrained`` is this value. It reads the record
    `build_learner` (or fastai's `vision_learner`) made; a plain `Learner` has none and trains from scratch.
    """
    return bool(getattr(learn, "pretrained", False))


def depthwise(model: nn.Module) -> bool:
    """Whether `model` has depthwise convolutions (EfficientNet's, MobileNet's), which a CPU runs far faster
    channels-last: an EfficientNet-Lite0 training step at 48 px took 1.7 times less time (one thread, side by
    side), while ResNet-18 at 64 px, without them, ran at 0.93 times its speed; so `train.fit` asks this."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
