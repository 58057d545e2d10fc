#!/usr/bin/env python
"""Make the README's pictures from real training runs: training curves, confusion matrix, Grad-CAM.

    python scripts/make_images.py                # fixture runs on the CPU: images/<study>_<picture>_fixture.png
    python scripts/make_images.py pets           # one study
    python scripts/make_images.py --full         # the real datasets, pretrained (internet; a GPU wanted)

Each study trains as its notebook does (`pipeline.run_study`), with the study table's settings for that
mode, and every picture says in its title and its file name whether it comes from a fixture run or a full run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package as it is in this checkout, installed or not

from vision_studies.interpret import plot_confusion_matrix, plot_gradcam, plot_training_curves  # noqa: E402
from vision_studies.pipeline import run_study  # noqa: E402
from vision_studies.studies import resolve_config  # noqa: E402

# The studies pictured, and their titles; their settings are the study table's, full mode or fixture mode.
STUDIES: dict[str, dict] = {"mnist": dict(study="05_mnist", title="MNIST, LeNet-5"),
                            "pets": dict(study="08_pets", title="Oxford-IIIT Pets")}
GRADCAM_IMAGES = 8


def _validation_examples(dls, n: int) -> tuple[list[Path], list[str]]:
    """Up to `n` validation images of different classes (files and labels), for the Grad-CAM picture."""
    items = dls.valid_ds.items
    paths = list(items["path"]) if isinstance(items, pd.DataFrame) else list(items)
    chosen, labels = [], []
    for i, path in enumerate(paths):
        label = str(dls.vocab[int(dls.valid_ds[i][1])])
        if label not in labels:
            chosen.append(Path(path))
            labels.append(label)
        if len(chosen) == n:
            break
    return chosen, labels


def make_images(study: str, full: bool, data_dir: Path, out_dir: Path) -> list[Path]:
    """Train `study` as its notebook does (`pipeline.run_study`) and write its three pictures; returns their paths."""
    settings = STUDIES[study]
    mode = "full run" if full else "fixture run"
    with tempfile.TemporaryDirectory() as checkpoints:  # fit's best-epoch checkpoint; only the pictures stay
        config = resolve_config(settings["study"], fixture=not full, data_dir=str(data_dir), output_dir=checkpoints)
        done = run_study(config, write=False, quiet=True)
    learn, run, dls, metrics = done.learn, done.run, done.data.dls, done.evaluation.metrics
    caption = (f"{settings['title']} ({config.arch}, {config.epochs} epochs at {config.image_size} px)\n"
               f"{mode}: {metrics['accuracy']:.1%} validation accuracy")
    suffix = "full" if full else "fixture"

    figures = {
        "training_curves": plot_training_curves(run.history, run.best_epoch),
        "confusion_matrix": plot_confusion_matrix(metrics["confusion_matrix"], list(dls.vocab), normalize=len(dls.vocab) > 20),
    }
    items, labels = _validation_examples(dls, GRADCAM_IMAGES)
    figures["gradcam"] = plot_gradcam(learn, items, labels=labels, title=f"Grad-CAM: where the model looked\n{caption}")
    written = []
    for name, fig in figures.items():
        if name != "gradcam":
            # about 11 characters of 10-point text to the inch: wrap rather than cut at the figure's edge
            width = int(fig.get_figwidth() * 11)
            fig.suptitle("\n".join(textwrap.fill(line, width) for line in caption.splitlines()), fontsize=10)
            fig.tight_layout()
        out = out_dir / f"{study}_{name}_{suffix}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    print(f"{study}: {caption.replace(chr(10), ', ')}; {run.seconds:.0f} s of training on {run.device}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", help=f"studies to picture: {', '.join(STUDIES)} (default: all)")
    parser.add_argument("--full", action="store_true", help="the real datasets, pretrained: internet needed, a GPU wanted")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="where datasets and fixtures live")
    parser.add_argument("--out", type=Path, default=ROOT / "images", help="where the pictures go")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.studies) - set(STUDIES))
    if unknown:
        parser.error(f"no pictures are made for {', '.join(unknown)}; choose among {', '.join(STUDIES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for study in args.studies or STUDIES:
        for path in make_images(study, args.full, args.data, args.out):
            print(f"  wrote {os.path.relpath(path)}")
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
