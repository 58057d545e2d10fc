"""Pictures and tables of what the model learned and where it errs.

Training curves, confusion matrix, per-class report, top losses, Grad-CAM overlays, and for multi-label
studies the per-label report and the metrics by decision threshold. The numbers come from scikit-learn and
the heatmaps from the `grad-cam` package; this module picks what to feed them and draws the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastai.data.transforms import IntToFloatTensor
from fastai.learner import Learner
from fastai.torch_core import TensorImage
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, hamming_loss
from torch import nn

from .metrics import best_threshold, decide, threshold_sweep
from .predict import _open
from .predict_one import show_prediction  # one new image: its picture, answer and table

__all__ = [
    "plot_training_curves",
    "plot_confusion_matrix",
    "classification_report_table",
    "plot_top_losses",
    "gradcam_target_layer",
    "gradcam",
    "plot_gradcam",
    "multilabel_report",
    "plot_threshold_curve",
    "show_prediction",
    "worst_images",
]

def plot_training_curves(history: Sequence[dict[str, float]], best_epoch: int | None = None) -> Figure:
    """Losses (left) and metrics (right) by epoch, from `TrainingRun.history`; the kept epoch is marked."""
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in history[0] if history else []:
        ax = ax_loss if "loss" in name else ax_metric
        ax.plot(epochs, [row[name] for row in history], marker="o", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_metric, "validation metrics")):
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="grey", linestyle="--", linewidth=1, label="kept epoch")
        ax.set(xlabel="epoch", title=title)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix, classes: Sequence[str], normalize: bool = False) -> Figure:
    """Rows are the true class, columns the prediction; `normalize` shows each row as fractions of its class."""
    cm = np.asarray(matrix, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = min(14.0, max(4.0, 0.28 * n + 2))  # CUB's 200 classes: a 14-inch square, not a 58-inch one
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if n <= 50:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        where = ""
    else:  # names no longer fit: every few classes by index, which the report table's rows follow
        ticks = range(0, n, -(-n // 20))
        ax.set_xticks(ticks, ticks)
        ax.set_yticks(ticks, ticks)
        where = " (class index: the report table's row order)"
    ax.set(xlabel="predicted" + where, ylabel="actual" + where,
           title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    if n <= 20:  # numbers in the cells stay readable up to about 20 classes
        for i in range(n):
            for j in range(n):
                value = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, value, ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def classification_report_table(y_true, y_pred, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class, then their macro and support-weighted averages.

    Labels are class indices into `classes`, as in `metrics.classification_metrics`. A class that is never
    predicted gets precision 0 (scikit-learn's `zero_division=0`), so its row shows the problem instead of
    a warning.
    """
    y_true, y_pred = _class_indices(y_true, "y_true", classes), _class_indices(y_pred, "y_pred", classes)
    report = classification_report(
        y_true, y_pred, labels=list(range(len(classes))), target_names=[str(c) for c in classes],
        output_dict=True, zero_division=0,
    )
    rows = [str(c) for c in classes] + ["macro avg", "weighted avg"]
    return _report_frame({name: report[name] for name in rows})


def _class_indices(labels, name: str, classes: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-d sequence of class indices into classes, got shape {labels.shape} of {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{name} holds class index {labels.max() if labels.max() >= len(classes) else labels.min()}, "
                         f"but there are {len(classes)} classes (indices 0 to {len(classes) - 1})")
    return labels


def _report_frame(rows: dict[str, dict]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index").rename(columns={"f1-score": "f1"})
    table["support"] = table["support"].astype(int)
    return table[["precision", "recall", "f1", "support"]]


def plot_top_losses(learn: Learner, probs: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor, k: int = 9,
                    items: pd.DataFrame | None = None) -> Figure:
    """The `k` images the model got most wrong, titled predicted / actual / loss / prob of actual.

    The predictions are of the validation set, or of `items` (a table with a ``path`` column, in the order
    they were predicted: ``predict_one.evaluated_items(data)`` for a study with a held-out test set)."""
    if items is None and len(losses) != len(learn.dls.valid_ds):
        raise ValueError(f"{len(losses)} losses for {len(learn.dls.valid_ds)} validation images: these predictions are "
                         "of other images (a test set?); pass items=predict_one.evaluated_items(data)")
    if items is not None and len(items) != len(losses):
        raise ValueError(f"{len(items)} items for {len(losses)} losses: pass the items that were predicted")
    k = min(k, len(losses))
    top = losses.argsort(descending=True)[:k]
    vocab = learn.dls.vocab
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, top.tolist()):
        image = learn.dls.valid_ds[i][0] if items is None else _open(items["path"].iloc[i])
        ax.imshow(image, cmap="gray" if image.mode == "L" else None)
        predicted, actual = int(probs[i].argmax()), int(targets[i])
        ax.set_title(f"{vocab[predicted]} / {vocab[actual]}\n{float(losses[i]):.2f} / {float(probs[i, actual]):.2f}", fontsize=9)
    fig.suptitle("top losses: predicted / actual, loss / probability of actual", fontsize=10)
    fig.tight_layout()
    return fig


# Grad-CAM ------------------------------------------------------------------------------------------------


def gradcam_target_layer(model: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, Callable | None]:
    """The layer whose activations Grad-CAM weighs, and the reshape that lays them out as a (N, C, H, W) map.

    - timm CNNs (ResNet, EfficientNet, RegNet...) and ConvNeXt: the last stage that timm's `feature_info`
      lists, the last spatial map before pooling.
    - ViT: the first norm of the last block, as the grad-cam authors advise: the last block's own output
      reaches a class-token head only through the class token, so its patch tokens get no gradient. The
      patch tokens become a grid again once the prefix (class and register) tokens are dropped.
    - anything else (LeNet-5, a small CNN of our own): the last convolution whose output is still a map,
      bigger than 1x1, found by running `example` (one batch of model inputs) through the model.
    """
    net = next((m for m in model.modules() if hasattr(m, "feature_info") and hasattr(m, "forward_features")), None)
    if net is not None and all(hasattr(net, a) for a in ("blocks", "patch_embed", "num_prefix_tokens")):
        rows, cols = net.patch_embed.grid_size
        prefix = net.num_prefix_tokens

        def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, prefix:, :].reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)

        return net.blocks[-1].norm1, tokens_to_grid
    if net is not None and net.feature_info:
        return net.get_submodule(net.feature_info[-1]["module"]), None
    if example is None:
        raise ValueError(f"{type(model).__name__} is not a timm model: pass an example batch to find its last convolution")
    shapes: dict[nn.Module, torch.Size] = {}

    def record(module: nn.Module, args, out: torch.Tensor) -> None:  # a hook that returns nothing keeps the output
        shapes.setdefault(module, out.shape)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    maps = [m for m, shape in shapes.items() if shape[-2] * shape[-1] > 1]  # dicts keep the order they ran in
    if not maps:
        raise ValueError(f"{type(model).__name__} has no convolution with a spatial output; pass target_layer=")
    return maps[-1], None


def _target_indices(target, n: int, vocab: Sequence) -> list[int] | None:
    if target is None:
        return None
    per_image = [target] * n if isinstance(target, (str, int, np.integer)) else list(target)
    if len(per_image) != n:
        raise ValueError(f"target has {len(per_image)} entries for {n} images: give one per image, one for all, or None")
    names = [str(c) for c in vocab]
    out = []
    for t in per_image:
        if isinstance(t, str):
            if t not in names:
                raise ValueError(f"target {t!r} is not one of the learner's classes: {', '.join(names)}")
            t = names.index(t)
        if not 0 <= int(t) < len(names):
            raise ValueError(f"target index {t} is out of range: the learner has {len(names)} classes")
        out.append(int(t))
    return out


def _batches(learn: Learner, images) -> list[torch.Tensor]:
    """Model inputs: a prepared batch as it is, or files / PIL images through the validation transforms."""
    if isinstance(images, torch.Tensor):
        return [images]
    items = list(images)
    if not items:
        raise ValueError("images is empty: pass image files, PIL images, or a batch tensor")
    return [batch[0] for batch in learn.dls.test_dl(items)]


def _gradcam(learn, images, target, target_layer, reshape_transform) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(heatmaps, model outputs, model inputs)."""
    # grad-cam is imported where it is used: it brings scikit-learn's decomposition and linear models, about 0.15 s
    # of every import of this module (each notebook's), where most notebooks draw no Grad-CAM
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    batches = _batches(learn, images)
    model = learn.model
    if target_layer is None:
        target_layer, reshape_transform = gradcam_target_layer(model, batches[0])
    indices = _target_indices(target, sum(len(b) for b in batches), learn.dls.vocab)
    cam = GradCAM(model, [target_layer], reshape_transform=reshape_transform)
    heatmaps, outputs, start = [], [], 0
    try:
        for x in batches:
            # The input asks for gradients so that a frozen backbone (fine-tuning's first phase) still
            # passes them back to the target layer.
            x = x.as_subclass(torch.Tensor).detach().clone().requires_grad_(True)
            targets = None if indices is None else [ClassifierOutputTarget(i) for i in indices[start : start + len(x)]]
            heatmaps.append(cam(x, targets))
            outputs.append(cam.outputs.detach().float().cpu())
            start += len(x)
    finally:
        cam.activations_and_grads.release()  # not `with`: GradCAM's __exit__ swallows IndexErrors
        model.zero_grad(set_to_none=True)  # or the next training step would add Grad-CAM's gradients
    inputs = torch.cat([b.as_subclass(torch.Tensor).detach() for b in batches])
    return np.concatenate(heatmaps), torch.cat(outputs), inputs


def gradcam(
    learn: Learner,
    images,
    target=None,
    *,
    target_layer: nn.Module | None = None,
    reshape_transform: Callable | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W), each scaled to [0, 1], at the size the model sees the images.

    `images`: image files or PIL images, prepared with the validation transforms of `learn.dls`, or a
    batch tensor already prepared. `target`: the class whose evidence to show: None for each image's
    predicted class, a class name or index for all images, or a sequence with one per image. The layer
    is `gradcam_target_layer`'s choice unless `target_layer` (and `reshape_transform`) say otherwise.
    """
    return _gradcam(learn, images, target, target_layer, reshape_transform)[0]


def _display_images(learn: Learner, inputs: torch.Tensor) -> np.ndarray:
    """Model inputs back to (N, H, W, 3) floats in [0, 1]: un-normalised, grey repeated into RGB."""
    # fastai picks decodes by type: only a TensorImage gets un-normalised and turned back into bytes
    decoded = learn.dls.after_batch.decode((TensorImage(inputs.to(learn.dls.device)),))[0]
    decoded = decoded.as_subclass(torch.Tensor).float().cpu()
    to_float = [t for t in learn.dls.after_batch.fs if isinstance(t, IntToFloatTensor)]
    if to_float and to_float[0].div:
        decoded = decoded / to_float[0].div
    images = decoded.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


def plot_gradcam(
    learn: Learner,
    items,
    target=None,
    *,
    labels: Sequence[str] | None = None,
    cols: int = 4,
    image_weight: float = 0.5,
    title: str = "Grad-CAM: where the model looked for its answer",
) -> Figure:
    """Each image with its Grad-CAM heatmap laid over it, titled with the prediction and its probability.

    `items` and `target` are as in `gradcam`; `labels`, the true classes if known, go into the titles too.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    heatmaps, outputs, inputs = _gradcam(learn, items, target, None, None)
    activation = getattr(learn.loss_func, "activation", lambda o: o.softmax(dim=-1))
    probs = activation(outputs)
    vocab = [str(c) for c in learn.dls.vocab]
    indices = _target_indices(target, len(heatmaps), vocab)
    pictures = _display_images(learn, inputs)
    n = len(heatmaps)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.3 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(show_cam_on_image(pictures[i], heatmaps[i], use_rgb=True, image_weight=image_weight))
        predicted = int(probs[i].argmax())
        lines = [f"{vocab[predicted]} {float(probs[i, predicted]):.2f}"]
        if labels is not None:
            lines.append(f"actual: {labels[i]}")
        if indices is not None and indices[i] != predicted:
            lines.append(f"map of: {vocab[indices[i]]}")
        ax.set_title("\n".join(lines), fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


# Multi-label ---------------------------------------------------------------------------------------------


def worst_images(probs: torch.Tensor, targets: torch.Tensor, items: pd.DataFrame, classes: Sequence[str],
                 k: int = 6) -> tuple[pd.DataFrame, str]:
    """The images to look at first, and what they are: the misclassified ones, most confidently wrong first
    (the errors teach more than the first images of the set); when there are none, the top losses.

    `probs`, `targets`: an `Evaluation`'s, on `items` in the same order (the test hold-out if there is one,
    else the validation set). Returns those rows of `items` with ``predicted`` and ``p_true`` columns.
    """
    if len(items) != len(targets):
        raise ValueError(f"{len(items)} items for {len(targets)} predictions: pass the items that were evaluated")
    predicted = probs.argmax(dim=1)
    p_true = probs[torch.arange(len(targets)), targets].numpy()
    order = np.argsort(p_true, kind="stable")  # lowest probability of the true class: the highest loss
    wrong = [i for i in order if predicted[i] != targets[i]]
    picked, what = (wrong[:k], f"{len(wrong)} misclassified images, the {min(k, len(wrong))} most confidently wrong") \
        if wrong else (list(order[:k]), f"no misclassified images: the {min(k, len(order))} top losses instead")
    rows = items.iloc[picked].copy()
    rows["predicted"] = [classes[int(predicted[i])] for i in picked]
    rows["p_true"] = p_true[picked].round(4)
    return rows, what


def _multilabel_inputs(y_true_multi_hot, probs, classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true_multi_hot), np.asarray(probs, dtype=float)
    if y.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"y_true_multi_hot {y.shape} and probs {p.shape} must both be (images, labels) arrays of the same shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true_multi_hot must hold only 0 and 1 (one column per label)")
    if classes is not None and len(classes) != y.shape[1]:
        raise ValueError(f"classes names {len(classes)} labels but the arrays have {y.shape[1]} columns")
    return y.astype(int), p


def multilabel_report(y_true_multi_hot, probs, classes: Sequence[str], threshold: float = 0.5) -> pd.DataFrame:
    """Precision, recall, F1 and support of each label at `threshold`, then micro, macro, weighted and per-image averages.

    A label is predicted as `metrics.decide` rules (above `threshold`, as fastai's `accuracy_multi` decides).
    The table's `attrs` hold the scores of the whole set: `hamming_loss` (the fraction of wrong label
    decisions), `subset_accuracy` (the fraction of images with every label right) and the `threshold`.
    """
    y, p = _multilabel_inputs(y_true_multi_hot, probs, classes)
    predicted = decide(p, threshold).astype(int)
    report = classification_report(y, predicted, target_names=[str(c) for c in classes], output_dict=True, zero_division=0)
    table = _report_frame(report)
    table.attrs.update(
        threshold=float(threshold),
        hamming_loss=float(hamming_loss(y, predicted)),
        subset_accuracy=float((predicted == y).all(axis=1).mean()),
    )
    return table


def plot_threshold_curve(y_true_multi_hot, probs, thresholds: Sequence[float] | None = None) -> Figure:
    """`metrics.threshold_sweep` as curves, with the threshold of best micro F1 marked: where to set the cut-off."""
    y, p = _multilabel_inputs(y_true_multi_hot, probs)
    sweep = threshold_sweep(y, p, thresholds)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for column, style in (("f1_micro", "-"), ("f1_macro", "-"), ("subset_accuracy", "-"), ("hamming_loss", "--")):
        ax.plot(sweep["threshold"], sweep[column], style, marker=".", label=column.replace("_", " "))
    best = best_threshold(y, p, thresholds)  # the threshold the notebook takes, by the same rule
    ax.axvline(best, color="grey", linestyle=":", label=f"best micro F1 at {best:.2f}")
    ax.set(xlabel="decision threshold", ylabel="score (Hamming loss: lower is better)", ylim=(0, 1.02),
           title="multi-label metrics by decision threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
