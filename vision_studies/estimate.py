"""How long a study's full-mode run takes on Colab's T4: an estimate from counted work and stated rates.

Two things bound a training run, and the slower one sets its pace:
- the GPU's arithmetic: the model's floating-point operations per image (counted by
  `torch.utils.flop_counter` on the "meta" device: no weights, no memory, instant) times the images of every
  epoch, over an effective T4 rate in mixed precision;
- the data path on Colab's 2 vCPUs: the images of every epoch over the rate two loader processes deliver
  them on the set's path (`loader_path`: presized copies, raw copies, enlarged image by image, or held in
  memory), plus preparing the set once (writing the copies, presize.py; or decoding it into memory).
Each model's time is the larger of the two; the figure is their sum, plus the preparing (the learning-rate
finder's steps, when LR is 0, count as training).
It leaves out downloading and unpacking (the network's speed) and the kernel's start. Every constant names
its evidence; each is a rounded judgement, so the figure is good to about a factor of two, no better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .images import channels
from .registry import get_spec
from .studies import StudyConfig, get_study

__all__ = ["T4Estimate", "t4_estimate", "training_flops", "notebook_models", "loader_path", "colab_rate",
           "FULL_MODE_IMAGES", "MEASURED_HERE", "T4_EFFECTIVE_FLOPS"]

# Effective T4 rate in fp16 mixed-precision training, FLOP/s. NVIDIA's DeepLearningExamples
# (PyTorch/Classification/ConvNets/resnet50v1.5/README.md) measure ResNet-50 on a T4 at 1,190 img/s in
# mixed-precision inference (batch 128), and on a V100 at 1,200 img/s training against 3,249 img/s
# inference: training about 2.7 times slower. So a T4 trains ResNet-50 at about 440 img/s, 3 x 8.2 GFLOP
# each: about 11 TFLOP/s, a sixth of the T4's 65 TFLOP/s fp16 tensor-core peak (NVIDIA's T4 datasheet).
# fastai's loop is not NVIDIA's tuned one (DALI, a fused optimizer), and a T4 lowers its clocks under sustained
# load to stay within its 70 W: we take 8.
T4_EFFECTIVE_FLOPS = 8e12
# The data path on Colab's 2 vCPUs, by how full mode reads a set (`loader_path`, as data.dataloaders does). Each
# rate was measured on this project's 2-core machine (an AMD EPYC VM) in the whole run of `python
# scripts/benchmark.py` of 2026-12-06 04:43 UTC, the README's table: its datapath section's "T4 estimate's rate"
# lines, which print the figures recorded here beside new ones (runs an hour apart differed by up to 1.5 times).
# Two loader workers, as Colab has; the batches left 8-bit, as a GPU run's are (the GPU augments and converts
# them). Compute Engine runs each vCPU as one hardware thread, two to a physical core
# (cloud.google.com/compute/docs/instances/set-threads-per-core), so Colab's 2 vCPUs are one core's two threads,
# which do about 1.2 to 1.3 times the work of one; we take Colab at half this machine's rates, a judgement.
COLAB_CPU_SHARE = 0.5
MEASURED_HERE: dict[str, float] = {  # images (or files) a second on this project's 2-core machine
    "presized": 6_430,  # photos read from their presized copies at 224 px (500 x 375 JPEGs, as Pets')
    "copied": 19_700,  # small images read at their own size from raw copies (32 px PNGs at 32, as CIFAR's)
    "per_item": 1_420,  # small images enlarged by fastai's per-item path (32 px PNGs at 224): no copies
    "in_memory": 755_000,  # batches gathered from a set decoded into memory (28 px PNGs, as MNIST's)
    "write_presized": 764,  # writing the presized copies, once per set and size (500 x 375 JPEGs to 224 px)
    "write_copied": 1_240,  # writing raw copies of small images at their own size, once
    "decode_in_memory": 1_120,  # decoding a set into memory, once per run
}
ONCE = {"presized": "write_presized", "copied": "write_copied", "in_memory": "decode_in_memory"}


def colab_rate(what: str) -> float:
    """Images (or files) a second on Colab's 2 vCPUs: `MEASURED_HERE[what]` times `COLAB_CPU_SHARE`."""
    return MEASURED_HERE[what] * COLAB_CPU_SHARE


LR_FINDER_STEPS = 100  # pipeline.train: learn.lr_find(num_it=100) in full mode
# Backward costs about twice the forward pass (Kaplan et al. 2020, "Scaling Laws for Neural Language
# Models", section 2.1: 2N forward, 4N backward), so a training step is 3 forward passes. The forward pass
# is counted; the backward is not, because torch's counter over-counts a grouped convolution's backward
# (ConvNeXt's depthwise 7 x 7: 52 GFLOP counted against 9 forward). A frozen body (fine-tuning's first
# epoch) needs no backward pass through it: one forward pass.
TRAIN_TO_FORWARD = 3

# Full-mode images per dataset: (training, validation, pixels a side of a typical image), from the
# publishers' own counts.
_DOGS_PER_BREED = 20_580 / 120  # Stanford Dogs' page: 20,580 images of 120 breeds (a breed holds 148 to 252)
_CUB_PER_SPECIES = 11_788 / 200  # CUB-200-2011's page: 11,788 images of 200 species, split about half and half
FULL_MODE_IMAGES: dict[str, tuple[int, int, int]] = {
    "mnist": (60_000, 10_000, 28),  # LeCun's MNIST page; fastai's copy: training/ and testing/
    "fashion_mnist": (60_000, 10_000, 28),  # Zalando's README
    "cifar10": (50_000, 10_000, 32),  # Krizhevsky's CIFAR page: 50,000 training and 10,000 test images
    "cifar100": (50_000, 10_000, 32),
    "pets": (3_680, 3_669, 500),  # the official trainval / test lists (registry.py)
    "cub200": (5_994, 5_794, 500),  # CUB-200-2011's train_test_split.txt
    "pascal_2007": (2_501, 2_510, 500),  # VOC2007 trainval: 2,501 train and 2,510 val (fastai's train.csv is_valid)
    "cats_vs_dogs": (18_610, 4_652, 500),  # 25,000 files less TFDS's 1,738 corrupt ones, 20% held out
    "huskies": (round(2 * _DOGS_PER_BREED * 0.8), round(2 * _DOGS_PER_BREED * 0.2), 500),
    "dogs6": (round(6 * _DOGS_PER_BREED * 0.8), round(6 * _DOGS_PER_BREED * 0.2), 500),
    "birds10": (round(10 * _CUB_PER_SPECIES / 2), round(10 * _CUB_PER_SPECIES / 2), 500),
    # CCSN's Ci, Cu and St: 139, 182 and 202 photos as we read the CCSN paper's table (Zhang et al. 2018, GRL;
    # not rechecked against the archive here), 20% held out
    "clouds": (418, 105, 400),
    # the Kaggle set's 681 photos in normal/ and potholes/ (as public projects using it count them), 20% held out
    "potholes": (545, 136, 600),
    # study 11's other sets (small_sets.py), 20% held out: Food-101's 1,000 photos a class (Bossard et al. 2014)
    # of pad thai, ramen and pho; the 177 Caltech leaves seed 003 sorted; Leeds' 832 butterflies
    "noodles": (2_400, 600, 512),
    "leaves": (142, 35, 896),
    "butterflies": (666, 166, 500),
}


def training_flops(arch: str, image_size: int, n_in: int = 3, n_out: int = 10) -> float:
    """FLOPs of one image's forward pass through `arch` (a timm name or a from-scratch model) at `image_size`:
    torch's counter, 2 per multiply-add, on the meta device (no weights are made) or, for a from-scratch
    model with lazy layers, on the CPU.

    Only the classifier depends on `n_out`, and its FLOPs grow in step with it: once an architecture has been
    counted for two class counts, the others follow on that line (study 11 asks for five backbones on five sets
    of 2 to 10 classes: 10 counts instead of 25, about 1 s of its notebook)."""
    counted = _COUNTED.setdefault((arch, image_size, n_in), {})
    if n_out not in counted and len(counted) >= 2:
        (a, flops_a), (b, flops_b) = list(counted.items())[:2]
        return flops_a + (n_out - a) * (flops_b - flops_a) / (b - a)
    if n_out not in counted:
        counted[n_out] = _count_flops(arch, image_size, n_in, n_out)
    return counted[n_out]


_COUNTED: dict[tuple[str, int, int], dict[int, float]] = {}  # (arch, size, channels): {classes: FLOPs counted}


def _count_flops(arch: str, image_size: int, n_in: int, n_out: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import SCRATCH_MODELS

    counter = FlopCounterMode(display=False)
    if arch in SCRATCH_MODELS:
        model = SCRATCH_MODELS[arch](n_in=n_in, n_out=n_out).eval()
        x = torch.zeros(2, n_in, image_size, image_size)
        with torch.no_grad():
            model(x)  # lazy layers learn their input size
            with counter:
                model(x)
        return counter.get_total_flops() / 2
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=n_out, in_chans=n_in).eval()
        x = torch.empty(1, n_in, image_size, image_size)
    with torch.no_grad(), counter:
        model(x)
    return float(counter.get_total_flops())


@dataclass
class T4Estimate:
    """The estimate and its basis: seconds of GPU arithmetic, of the data path, of preparing the data once."""

    seconds: float
    gpu_seconds: float
    data_seconds: float
    prepare_seconds: float  # once per set and size: presized or raw copies written, or a set decoded into memory
    basis: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = {"bound by the GPU's arithmetic": self.gpu_seconds, "bound by the data path on 2 vCPUs": self.data_seconds,
                 "preparing the data once": self.prepare_seconds}
        most = max(parts, key=parts.get)
        lines = [f"Estimated full-mode run on a Colab T4: about {_minutes(self.seconds)} (mostly {most})"]
        lines += [f"  {line}" for line in self.basis]
        lines.append(f"  GPU: {_minutes(self.gpu_seconds)} at {T4_EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s effective "
                     f"fp16; data path: {_minutes(self.data_seconds)} (photos from presized copies at "
                     f"{colab_rate('presized'):,.0f}/s, small images at {colab_rate('copied'):,.0f}/s, enlarged at "
                     f"{colab_rate('per_item'):,.0f}/s); preparing once: {_minutes(self.prepare_seconds)} (presized "
                     f"copies written at {colab_rate('write_presized'):,.0f} files/s)")
        lines.append("  a rough figure (about a factor of two): downloads and the kernel's start are not in it; "
                     "vision_studies/estimate.py names the evidence for each rate")
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


PATHS = {"in_memory": "held in memory", "presized": "presized copies", "copied": "raw copies",
         "per_item": "enlarged image by image"}  # each loader path, as the estimate's basis names it


def loader_path(dataset: str, image_size: int, n_in: int, n_images: int) -> str:
    """How full mode reads `dataset` at `image_size` (data.dataloaders, pipeline.data): "in_memory" (decoded
    once, when the registry says so and it fits memory_data's budget), "presized" (photos larger than the size:
    copies written once), "copied" (images already that size: raw copies) or "per_item" (smaller: enlarged
    image by image every epoch)."""
    from .memory_data import fits_in_memory

    side = FULL_MODE_IMAGES[dataset][2]
    if get_spec(dataset).in_memory and fits_in_memory(dataset, n_images, n_in, image_size, explain=False):
        return "in_memory"
    return "presized" if side > image_size else "copied" if side == image_size else "per_item"


def _run(dataset: str, arch: str, image_size: int, epochs: int, pretrained: bool, batch_size: int,
         lr_finder: bool, held_out_test: bool = False) -> tuple[float, float, float, str, str]:
    """(GPU seconds, data seconds, seconds preparing the set once, the loader path, one line of basis) of
    training one model."""
    if dataset not in FULL_MODE_IMAGES:
        raise ValueError(f"no full-mode image count for dataset {dataset!r}; estimate.FULL_MODE_IMAGES knows "
                         f"{', '.join(FULL_MODE_IMAGES)}")
    n_train, n_valid, side = FULL_MODE_IMAGES[dataset]
    spec = get_spec(dataset)
    from .data import has_official_split

    if held_out_test and has_official_split(spec):  # data.test_split: validation from the training images
        n_train, n_valid = round(n_train * (1 - spec.valid_pct)), round(n_train * spec.valid_pct)
    n_in = 1 if spec.image_mode == "L" and not pretrained else 3
    forward = training_flops(arch, image_size, n_in, max(len(spec.classes), 2))
    frozen = 1 if pretrained else 0  # fine-tuning's first epoch: the new head alone, on a frozen body
    finder = LR_FINDER_STEPS * batch_size if lr_finder else 0
    flops = (epochs * n_train * TRAIN_TO_FORWARD + frozen * n_train + finder * TRAIN_TO_FORWARD
             + (epochs + frozen) * n_valid) * forward
    images = (epochs + frozen) * (n_train + n_valid) + finder
    path = loader_path(dataset, image_size, channels(spec.image_mode), n_train + n_valid)
    once = (n_train + n_valid) / colab_rate(ONCE[path]) if path in ONCE else 0.0
    gpu, data = flops / T4_EFFECTIVE_FLOPS, images / colab_rate(path)
    line = (f"{arch} at {image_size} px on {dataset}: {n_train:,} training and {n_valid:,} validation images, "
            f"{epochs} epoch(s)" + (" after 1 with the body frozen" if frozen else "")
            + (f", {LR_FINDER_STEPS} learning-rate finder steps" if finder else "")
            + f"; {forward / 1e9:.3g} GFLOP a forward pass: GPU {_minutes(gpu)}, data {_minutes(data)} ({PATHS[path]})")
    return gpu, data, once, path, line


# The CNNs a notebook trains from scratch beside ARCH (its notebook-only SCRATCH_* settings), by study
CIFAR10_CNNS = ("naive_cnn", "conv_pool_cnn", "bn_dropout_cnn")  # notebook 06, seed 002's steps


def notebook_models(config: StudyConfig) -> list[tuple]:
    """(arch, image size, epochs[, pretrained]) of the models `config`'s notebook trains besides ARCH (from
    scratch unless the fourth says otherwise)."""
    if config.study == "03_clouds":  # retrained on the cleaned data, side by side with the first run
        return [(config.arch, config.image_size, config.epochs, config.pretrained)]
    if config.study == "06_cifar10":  # the three steps, then the best one on at a tenth of the rate
        return [(arch, 32, config.scratch_epochs) for arch in CIFAR10_CNNS] + [
            (CIFAR10_CNNS[-1], 32, max(1, config.scratch_epochs // 2))]
    if config.study == "10_cats_vs_dogs":  # seed 004's CNN, then batch norm alone, and a CNN stuck at ln 2
        size, epochs = config.scratch_size, config.scratch_epochs
        return [(config.scratch_arch, size, epochs), ("bn_cnn", size, epochs), ("conv_pool_cnn", size, 3)]
    if config.study == "12_fashion_mnist":
        return [("lenet5", 28, config.scratch_epochs)]
    return []


def t4_estimate(config: StudyConfig | str, also: Sequence[tuple] | None = None) -> T4Estimate:
    """The time of `config`'s study in full mode on a Colab T4, explained (print it).

    A fixture-mode config is estimated with the study's full-mode settings (the fixture's sizes say nothing
    of the real run); a full-mode one with its own (what you changed counts). `also`: the notebook's other
    models, as (arch, image size, epochs[, pretrained]), on the same dataset; by default `notebook_models`.
    """
    config = get_study(config).full if isinstance(config, str) else config
    if config.fixture:
        config = get_study(config.study).full
    also = notebook_models(config) if also is None else also
    if getattr(config, "archs", ()):  # a comparison: every backbone, at the size it trains at, on every set
        from .experiment import backbone_settings

        models = [(s["arch"], s["image_size"], s["pretrained"]) for s in backbone_settings(config)]
    else:
        models = [(config.arch, config.image_size, config.pretrained)]
    datasets = getattr(config, "datasets", ()) or (config.dataset,)
    runs = [(d, arch, size, config.epochs, pretrained, not config.lr)
            for d in datasets for arch, size, pretrained in models]
    runs += [(config.dataset, m[0], m[1], m[2], bool(m[3:] and m[3]), False) for m in also]
    total = gpu = data = prepare = 0.0
    basis = []
    prepared = set()
    for dataset, arch, size, epochs, pretrained, finder in runs:
        g, d, once, path, line = _run(dataset, arch, size, epochs, pretrained, config.batch_size, finder,
                                      bool(getattr(config, "test_pct", 0.0)))
        gpu, data, total = gpu + g, data + d, total + max(g, d)  # each model at the pace of its slower side
        # copies are written once per dataset and size, then reused; a set held in memory is decoded every run
        if path == "in_memory" or (dataset, size) not in prepared:
            prepare += once
            prepared.add((dataset, size))
        basis.append(line)
    return T4Estimate(total + prepare, gpu, data, prepare, basis)
