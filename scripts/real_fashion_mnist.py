#!/usr/bin/env python
"""Train on ALL of real Fashion-MNIST on this machine's CPU and write results records marked real and full.

    nice -n 5 python scripts/real_fashion_mnist.py                      # every run, in this order
    nice -n 5 python scripts/real_fashion_mnist.py lenet5 small_bn_cnn  # some of them

The data is Debian's `dataset-fashion-mnist` (found in /usr/share/datasets/fashion-mnist, checked by the
raw sha256s the registry records) or Zalando's download. Training uses 55,000 of the 60,000 training images;
5,000 (seeded) are held out as the validation set that picks the kept epoch, so the official 10,000-image
test set is seen once, at the end, by the model that was kept: the test accuracy is an honest estimate.
Each run goes through the pipeline's steps, as `vision-studies train 12` does (`pipeline.data` with TEST_PCT,
which keeps the official test set apart, then learner, train, evaluate, record); the `in_memory` runs swap
the data step's per-item loaders for `memory_data.memory_dataloaders`, which decode every image once.

Each run writes ``models/real/<run>/12_fashion_mnist/results.json`` with the device, the wall-clock and
CPU minutes (the process's user + system time over all its threads) and the load average, and its
pictures (confusion matrix, top losses, Grad-CAM) into ``images/`` with `--images`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastai.callback.channelslast import ChannelsLast  # noqa: E402

from vision_studies import pipeline  # noqa: E402
from vision_studies.data import dataloaders  # noqa: E402
from vision_studies.memory_data import RandomShiftFlip, memory_dataloaders  # noqa: E402
from vision_studies.studies import resolve_config  # noqa: E402
from vision_studies.train import AutocastPrecision  # noqa: E402

STUDY = "12_fashion_mnist"


@dataclass(frozen=True)
class Run:
    """One model's settings, chosen to fit a CPU budget (see the README's measured-on-real-data table)."""

    arch: str
    epochs: int
    lr: float
    image_size: int = 28
    batch_size: int = 128
    pretrained: bool = False
    augment: str = "none"  # a preset of augment.PRESETS (per-item loaders)
    in_memory: bool = False  # batches gathered from the decoded images (memory_data.py), not read item by item
    shift: int = 0  # with in_memory: RandomShiftFlip(shift), up to `shift` pixels each way and left-right flips
    channels_last: bool = False  # the network's tensors in channels-last layout: oneDNN's fast CPU convolutions
    bf16: bool = False  # convolutions and dense layers in bfloat16 (torch.autocast on the CPU; AVX-512 BF16 here)
    why: str = ""


RUNS: dict[str, Run] = {
    "lenet5": Run("lenet5", epochs=8, lr=3e-3, why="LeCun's 1998 network, as study 05 trains it on MNIST"),
    "small_bn_cnn": Run("small_bn_cnn", epochs=6, lr=3e-3,
                        why="the strongest from-scratch model that fits about 10 CPU-minutes here (per-item loaders)"),
    "small_bn_cnn_long": Run("small_bn_cnn", epochs=8, lr=3e-3, augment="light",
                             why="the same CNN, two epochs more, with light augmentation (flips, small turns)"),
    # the in-memory loaders and channels-last layout make an epoch about 2.4 times cheaper (a 12,000-image epoch:
    # 15.4 CPU-seconds item by item, 6.3 in memory), which buys epochs and shift-and-flip augmentation
    "small_bn_cnn_fast": Run("small_bn_cnn", epochs=14, lr=3e-3, in_memory=True, shift=2, channels_last=True,
                             why="the same CNN on in-memory batches: 14 epochs, shifts of up to 2 px and flips"),
    # bf16 on top: 2,580 images per CPU-second for small_bn_cnn, 1,430 for small_bn_cnn3 (1,200 and 720 in fp32)
    "small_bn_cnn_bf16": Run("small_bn_cnn", epochs=18, lr=3e-3, in_memory=True, shift=2, channels_last=True,
                             bf16=True, why="the same CNN, 18 epochs in bf16 on in-memory batches, shifts and flips"),
    "small_bn_cnn3_bf16": Run("small_bn_cnn3", epochs=11, lr=3e-3, in_memory=True, shift=2, channels_last=True,
                              bf16=True, why="a third convolution at 14x14, 11 epochs in bf16, shifts and flips"),
    # 11 epochs ended at 0.9408 on validation, still rising, with 2.2 of the budget's 10 CPU-minutes unspent
    "small_bn_cnn3_bf16_13": Run("small_bn_cnn3", epochs=13, lr=3e-3, in_memory=True, shift=2, channels_last=True,
                                 bf16=True, why="the same, two epochs more (what the 10 CPU-minute budget holds)"),
    # 64 px: the smallest size where the stride-32 body still ends on a 2x2 map; 1 frozen epoch for the new
    # head, then 2 epochs of the whole network (about 30 CPU-minutes here), as fine-tuning runs everywhere
    # the same fine-tune on in-memory batches (decoded once at 48 px) with channels-last convolutions, 2.2 times
    # cheaper a step than 64 px per item (measured: 175 against 81 training images per CPU-second); a higher peak
    # rate, since fastai's fine-tune keeps the early layers at 1/200 of it and grey garments are far from ImageNet
    "tf_efficientnet_lite0_fast": Run("tf_efficientnet_lite0", epochs=3, lr=8e-3, image_size=48, batch_size=128,
                                      pretrained=True, in_memory=True, channels_last=True,
                                      why="ImageNet-pretrained EfficientNet-Lite0, fine-tuned at 48 px, in memory"),
    # at 32 px the body ends on a 1x1 map, but a step costs 2.6 times less than at 48 px (351 images per CPU-second)
    "tf_efficientnet_lite0_32px": Run("tf_efficientnet_lite0", epochs=2, lr=8e-3, image_size=32, batch_size=128,
                                      pretrained=True, in_memory=True, channels_last=True,
                                      why="ImageNet-pretrained EfficientNet-Lite0, fine-tuned at 32 px, in memory"),
    "tf_efficientnet_lite0": Run("tf_efficientnet_lite0", epochs=2, lr=2e-3, image_size=64, batch_size=128,
                                 pretrained=True, why="ImageNet-pretrained EfficientNet-Lite0, fine-tuned"),
}


def train_one(name: str, run: Run, data_root: Path, out: Path, images: Path | None, smoke: int = 0) -> dict:
    """One run through the pipeline's steps: data (the official test set kept apart), learner, train, evaluate
    on the test set once, record. The clock covers everything from reading the images to the test pass."""
    config = resolve_config(STUDY, arch=run.arch, pretrained=run.pretrained, epochs=1 if smoke else run.epochs,
                            image_size=run.image_size, batch_size=run.batch_size, lr=run.lr, augment=run.augment,
                            data_dir=str(data_root), output_dir=str(out / name), seed=42, test_pct=0.1)
    load_before = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    data = pipeline.data(config)  # TEST_PCT: the official 10,000 test images apart, seen once; 5,000 validate
    if smoke:  # a quick check of the script itself: a few images, one epoch; not a result
        data.table, data.test = data.table.sample(smoke, random_state=0), data.test.sample(smoke // 4, random_state=0)
        data.dls = dataloaders(data.spec, data.path, run.image_size, run.batch_size, augment=run.augment,
                               table=data.table)
    if run.in_memory:
        data.dls = memory_dataloaders(data.dls, [RandomShiftFlip(run.shift)] if run.shift else None)
    learn = pipeline.learner(config, data)
    if run.channels_last:
        learn.add_cb(ChannelsLast())
    if run.bf16:
        learn.add_cb(AutocastPrecision("bf16", "cpu"))
    with pipeline._epoch_lines(learn):  # one plain line per epoch
        result = pipeline.train(config, learn)  # fine-tunes (frozen epoch first) iff the body is pretrained
        train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        evaluation = pipeline.evaluate(config, learn, data)  # on data.test: the official test set, once
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    record, where = pipeline.record(
        config, learn, result, evaluation,
        data="real", mode="full", run_name=name, why=run.why, in_memory=run.in_memory, shift_flip=run.shift,
        channels_last=run.channels_last, bf16=run.bf16, fine_tune=run.pretrained,
        freeze_epochs=1 if run.pretrained else 0,
        train_images=int((~data.table["is_valid"]).sum()), valid_images=int(data.table["is_valid"].sum()),
        test_images=len(data.test), evaluated_on=f"official test set ({len(data.test):,} images), once",
        best_epoch=result.best_epoch, history=result.history,
        wall_minutes=round(wall / 60, 2), cpu_minutes=round(cpu / 60, 2),
        train_wall_minutes=round(train_wall / 60, 2), train_cpu_minutes=round(train_cpu / 60, 2),
        torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(f"{name}: test accuracy {evaluation.metrics['accuracy']:.4f}, {wall / 60:.1f} wall min, "
          f"{cpu / 60:.1f} CPU min -> {where}", flush=True)
    if images is not None:
        # the test set as the validation loader, so the plots that read "the validation set" show the test images
        learn.dls.loaders[1] = learn.dls.test_dl(data.test, with_labels=True)
        save_pictures(name, learn, evaluation.probs, evaluation.targets, evaluation.losses, data.test, images)
    return record


def save_pictures(name: str, learn, probs, targets, losses, test_table, images: Path) -> None:
    """Confusion matrix and top losses on the test set; Grad-CAM on test images of the four upper-body classes."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import confusion_matrix

    from vision_studies.interpret import plot_confusion_matrix, plot_gradcam, plot_top_losses

    images.mkdir(parents=True, exist_ok=True)
    vocab = list(learn.dls.vocab)
    matrix = confusion_matrix(targets.numpy(), probs.argmax(1).numpy(), labels=range(len(vocab)))
    plot_confusion_matrix(matrix, vocab).savefig(images / f"fashion_mnist_{name}_confusion.png", dpi=90, bbox_inches="tight")
    plot_top_losses(learn, probs, targets, losses, k=9).savefig(images / f"fashion_mnist_{name}_top_losses.png", dpi=90,
                                                               bbox_inches="tight")
    if name.startswith("tf_efficientnet_lite0"):  # Grad-CAM needs a body with a last convolutional map
        picks = [test_table.index[test_table["label"] == c][0] for c in ("T-shirt_top", "Shirt", "Pullover", "Coat")]
        items = [test_table.loc[i, "path"] for i in picks]
        plot_gradcam(learn, items, labels=[test_table.loc[i, "label"] for i in picks]).savefig(
            images / f"fashion_mnist_{name}_gradcam.png", dpi=90, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", default=list(RUNS), help=f"which runs ({', '.join(RUNS)})")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "real")
    parser.add_argument("--images", type=Path, default=None, help="write the runs' pictures here (images/)")
    # one thread: on a machine whose cores other jobs share, a second torch thread mostly spins waiting for the
    # first (measured here: LeNet-5 trained at 6,150 images per CPU-second on one thread, 1,680 on two)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--smoke", type=int, default=0, help="check the script on this many images (not a result)")
    args = parser.parse_args(argv)
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    torch.set_num_threads(args.threads)
    for name in args.runs:
        train_one(name, RUNS[name], args.data, args.out, args.images, args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
