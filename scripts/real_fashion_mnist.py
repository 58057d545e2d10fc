#!/usr/bin/env python
"""Train on ALL of real Fashion-MNIST on this machine's CPU and write results records marked real and full.

    nice -n 5 python scripts/real_fashion_mnist.py                      # every run, in this order
    nice -n 5 python scripts/real_fashion_mnist.py lenet5 small_bn_cnn  # some of them

The data is Debian's `dataset-fashion-mnist` (found in /usr/share/datasets/fashion-mnist, checked by the
raw sha256s the registry records) or Zalando's download. Training uses 55,000 of the 60,000 training images;
5,000 (seeded) are held out as the validation set that picks the kept epoch, so the official 10,000-image
test set is seen once, at the end, by the model that was kept: the test accuracy is an honest estimate.

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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vision_studies.data import dataloaders, items_table, prepare_dataset  # noqa: E402
from vision_studies.metrics import classification_metrics, predict_validation, results_record, write_results  # noqa: E402
from vision_studies.models import build_learner  # noqa: E402
from vision_studies.train import fit, seed_everything  # noqa: E402

STUDY = "12_fashion_mnist"
VALID_HELD_OUT = 5_000


@dataclass(frozen=True)
class Run:
    """One model's settings, chosen to fit a CPU budget (see the README's measured-on-real-data table)."""

    arch: str
    epochs: int
    lr: float
    image_size: int = 28
    batch_size: int = 128
    pretrained: bool = False
    augment: str = "none"
    why: str = ""


RUNS: dict[str, Run] = {
    "lenet5": Run("lenet5", epochs=8, lr=3e-3, why="LeCun's 1998 network, as study 05 trains it on MNIST"),
    "small_bn_cnn": Run("small_bn_cnn", epochs=6, lr=3e-3,
                        why="the strongest from-scratch model that fits about 10 CPU-minutes here"),
    "small_bn_cnn_long": Run("small_bn_cnn", epochs=8, lr=3e-3, augment="light",
                             why="the same CNN, two epochs more, with light augmentation (flips, small turns)"),
    # 64 px: the smallest size where the stride-32 body still ends on a 2x2 map; 1 frozen epoch for the new
    # head, then 2 epochs of the whole network (about 30 CPU-minutes here), as fine-tuning runs everywhere
    "tf_efficientnet_lite0": Run("tf_efficientnet_lite0", epochs=2, lr=2e-3, image_size=64, batch_size=128,
                                 pretrained=True, why="ImageNet-pretrained EfficientNet-Lite0, fine-tuned"),
}


def split_tables(spec, path, seed: int = 42):
    """(train + validation table, test table): the official test set apart, 5,000 training images held out."""
    table = items_table(spec, path, seed)
    test = table[table["is_valid"]].reset_index(drop=True)
    train = table[~table["is_valid"]].reset_index(drop=True)
    valid = np.zeros(len(train), dtype=bool)
    valid[np.random.default_rng(seed).permutation(len(train))[:VALID_HELD_OUT]] = True
    train["is_valid"] = valid
    return train, test


def train_one(name: str, run: Run, data_root: Path, out: Path, images: Path | None, smoke: int = 0) -> dict:
    seed_everything(42)
    spec, path = prepare_dataset("fashion_mnist", root=data_root)
    train_table, test_table = split_tables(spec, path)
    if smoke:  # a quick check of the script itself: a few images, one epoch; not a result
        train_table, test_table = train_table.sample(smoke, random_state=0), test_table.sample(smoke // 4, random_state=0)
        run = Run(**{**run.__dict__, "epochs": 1})
    dls = dataloaders(spec, path, run.image_size, batch_size=run.batch_size, augment=run.augment, table=train_table)
    learn = build_learner(dls, run.arch, pretrained=run.pretrained, path=out / name)
    load_before = os.getloadavg()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fit(learn, run.epochs, run.lr)  # fine-tunes (frozen epoch first) iff the body is pretrained
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # the official test set, seen once: as the validation loader, so every package function that reads
    # "the validation set" (metrics, top losses) reports the test set
    learn.dls.loaders[1] = learn.dls.test_dl(test_table, with_labels=True)
    probs, targets, losses = predict_validation(learn)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    vocab = list(learn.dls.vocab)
    metrics = classification_metrics(targets.numpy(), probs.argmax(1).numpy(), vocab)
    record = results_record(
        STUDY, arch=run.arch, pretrained=run.pretrained, epochs=run.epochs, image_size=run.image_size,
        fixture=False, device=result.device, seconds=train_wall, metrics=metrics,
        data="real", mode="full", run=name, why=run.why, lr=run.lr, batch_size=run.batch_size, augment=run.augment,
        fine_tune=run.pretrained, freeze_epochs=1 if run.pretrained else 0,
        train_images=int((~train_table["is_valid"]).sum()), valid_images=int(train_table["is_valid"].sum()),
        test_images=len(test_table), evaluated_on="official test set (10,000 images), once",
        best_epoch=result.best_epoch, history=result.history,
        wall_minutes=round(wall / 60, 2), cpu_minutes=round(cpu / 60, 2),
        train_wall_minutes=round(train_wall / 60, 2), train_cpu_minutes=round(train_cpu / 60, 2),
        torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    where = write_results(record, out / name)
    print(f"{name}: test accuracy {metrics['accuracy']:.4f}, {wall / 60:.1f} wall min, {cpu / 60:.1f} CPU min -> {where}",
          flush=True)
    if images is not None:
        save_pictures(name, learn, probs, targets, losses, test_table, images)
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
    if name == "tf_efficientnet_lite0":
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
