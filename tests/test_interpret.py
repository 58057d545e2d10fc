"""Interpretation: the tables against scikit-learn, and Grad-CAM finding the region a trained model must use."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from fastai.data.block import CategoryBlock, DataBlock  # noqa: E402
from fastai.data.transforms import GrandparentSplitter, get_image_files, parent_label  # noqa: E402
from fastai.vision.data import ImageBlock  # noqa: E402
from fastai.vision.learner import vision_learner  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support  # noqa: E402

from vision_studies.data import dataloaders  # noqa: E402
from vision_studies.interpret import (  # noqa: E402
    classification_report_table,
    gradcam,
    gradcam_target_layer,
    multilabel_report,
    plot_confusion_matrix,
    plot_gradcam,
    plot_threshold_curve,
)
from vision_studies.metrics import threshold_sweep  # noqa: E402
from vision_studies.models import build_learner  # noqa: E402
from vision_studies.train import fit, seed_everything  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# Tables ----------------------------------------------------------------------------------------------------


def test_classification_report_hand_worked():
    # truth a a b b c, prediction a b b b a: precision a 1/2, b 2/3, c 0; recall a 1/2, b 1, c 0
    table = classification_report_table([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c", "macro avg", "weighted avg"]
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    assert table.loc["b", "precision"] == pytest.approx(2 / 3)
    assert table.loc["b", "f1"] == pytest.approx(0.8)
    assert table.loc["c", "precision"] == 0 and table.loc["c", "support"] == 1
    assert table.loc["macro avg", "recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert table.loc["weighted avg", "support"] == 5


@pytest.mark.parametrize("seed", range(3))
def test_classification_report_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = [f"class {i}" for i in range(6)]
    y_true = rng.integers(0, 5, 150)  # the last class never occurs in the truth
    y_pred = np.where(rng.random(150) < 0.6, y_true, rng.integers(0, 6, 150))
    table = classification_report_table(y_true, y_pred, classes)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(6), zero_division=0)
    np.testing.assert_allclose(table.loc[classes, "precision"], p)
    np.testing.assert_allclose(table.loc[classes, "recall"], r)
    np.testing.assert_allclose(table.loc[classes, "f1"], f)
    np.testing.assert_array_equal(table.loc[classes, "support"], s)
    for row, average in (("macro avg", "macro"), ("weighted avg", "weighted")):
        expected = precision_recall_fscore_support(y_true, y_pred, labels=range(6), average=average, zero_division=0)
        np.testing.assert_allclose(table.loc[row, ["precision", "recall", "f1"]].astype(float), expected[:3])


def test_classification_report_names_bad_labels():
    with pytest.raises(ValueError, match="y_pred holds class index 3, but there are 3 classes"):
        classification_report_table([0, 1, 2], [0, 1, 3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="y_true must be a 1-d sequence of class indices"):
        classification_report_table([0.5, 1.0], [0, 1], ["a", "b"])


def _multilabel(seed: int, n: int = 120, labels: int = 5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype(int)
    y[:, -1] = 0  # a label no image has
    probs = np.clip(0.6 * y + rng.normal(0.2, 0.25, y.shape), 0, 1)
    return y, probs


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_multilabel_report_agrees_with_scikit_learn(threshold):
    y, probs = _multilabel(0)
    classes = ["person", "dog", "car", "bird", "boat"]
    table = multilabel_report(y, probs, classes, threshold)
    predicted = (probs > threshold).astype(int)
    p, r, f, s = precision_recall_fscore_support(y, predicted, zero_division=0)
    np.testing.assert_allclose(table.loc[classes, "precision"], p)
    np.testing.assert_allclose(table.loc[classes, "recall"], r)
    np.testing.assert_allclose(table.loc[classes, "f1"], f)
    np.testing.assert_array_equal(table.loc[classes, "support"], s)
    for average in ("micro", "macro", "samples"):
        expected = precision_recall_fscore_support(y, predicted, average=average, zero_division=0)
        np.testing.assert_allclose(table.loc[f"{average} avg", ["precision", "recall", "f1"]].astype(float), expected[:3])
    assert table.attrs["hamming_loss"] == pytest.approx(hamming_loss(y, predicted))
    assert table.attrs["subset_accuracy"] == pytest.approx(accuracy_score(y, predicted))  # sklearn's is subset accuracy
    assert table.attrs["threshold"] == threshold


def test_multilabel_inputs_are_checked():
    y, probs = _multilabel(1)
    with pytest.raises(ValueError, match="same shape"):
        multilabel_report(y, probs[:, :3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="classes names 2 labels but the arrays have 5 columns"):
        multilabel_report(y, probs, ["a", "b"])
    with pytest.raises(ValueError, match="only 0 and 1"):
        plot_threshold_curve(y * 2, probs)


def test_threshold_sweep_and_curve():
    y, probs = _multilabel(2)
    sweep = threshold_sweep(y, probs, [0.1, 0.4, 0.6, 0.9])
    for row in sweep.itertuples():
        predicted = (probs > row.threshold).astype(int)
        assert row.f1_micro == pytest.approx(f1_score(y, predicted, average="micro", zero_division=0))
        assert row.f1_macro == pytest.approx(f1_score(y, predicted, average="macro", zero_division=0))
        assert row.hamming_loss == pytest.approx(hamming_loss(y, predicted))
        assert row.subset_accuracy == pytest.approx(accuracy_score(y, predicted))
    default = threshold_sweep(y, probs)
    assert len(default) == 19 and default["threshold"].iloc[0] == 0.05 and default["threshold"].iloc[-1] == 0.95
    fig = plot_threshold_curve(y, probs)
    ax = fig.axes[0]
    best = default["threshold"][default["f1_micro"].idxmax()]
    marker = ax.lines[-1]  # the vertical line at the best threshold
    assert marker.get_xdata()[0] == pytest.approx(best)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), default["f1_micro"])


def test_confusion_matrix_normalised_rows():
    fig = plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.75", "0.25", "0.00", "1.00"]


def test_confusion_matrix_of_200_classes_stays_a_readable_size():
    """CUB's 200 species: a 14-inch square with every tenth class index, not 58 inches of overlapping names."""
    fig = plot_confusion_matrix(np.eye(200, dtype=int), [f"species {i}" for i in range(200)])
    ax = fig.axes[0]
    assert max(fig.get_size_inches()) <= 14
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(0, 200, 10)]
    assert "class index" in ax.get_xlabel() and not ax.texts
    few = plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"])
    assert [t.get_text() for t in few.axes[0].get_xticklabels()] == ["a", "b", "c"]


# Grad-CAM --------------------------------------------------------------------------------------------------

SIZE, PATCH = 64, 10


@pytest.fixture(scope="module")
def patch_images(tmp_path_factory):
    """Two classes of random-noise images; "patch" images alone carry a white square in the top-left quadrant.

    The noise is the same for both classes, so the square, wherever it sits in that quadrant, is the only
    thing that tells them apart.
    """
    root = tmp_path_factory.mktemp("patch")
    rng = np.random.default_rng(0)
    for split, n in (("train", 80), ("valid", 20)):
        for cls in ("patch", "plain"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                if cls == "patch":
                    y, x = rng.integers(0, SIZE // 2 - PATCH, 2)
                    pixels[y : y + PATCH, x : x + PATCH] = 255
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def patch_dls(patch_images):
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                      splitter=GrandparentSplitter(), get_y=parent_label)
    return block.dataloaders(patch_images, bs=16, num_workers=0)


def test_gradcam_finds_the_region_a_trained_cnn_uses(patch_dls, patch_images, tmp_path):
    seed_everything(0)
    learn = build_learner(patch_dls, "resnet10t", pretrained=False, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        run = fit(learn, 6, 3e-3)
    assert run.history[run.best_epoch]["accuracy"] >= 0.95, "the model must have learned the patch first"
    items = sorted((patch_images / "valid" / "patch").glob("*.png"))
    heatmaps = gradcam(learn, items, target="patch")
    assert heatmaps.shape == (len(items), SIZE, SIZE)
    assert heatmaps.min() >= 0 and heatmaps.max() == pytest.approx(1, abs=1e-3)
    # The top-left quadrant is a quarter of the image; it must hold at least twice that share of every
    # image's heatmap (a model looking everywhere alike would give it 25%).
    share = heatmaps[:, : SIZE // 2, : SIZE // 2].sum(axis=(1, 2)) / heatmaps.sum(axis=(1, 2))
    assert share.min() > 2 * 0.25, f"heatmap share of the patch quadrant: {np.round(share, 2)}"
    # Grad-CAM leaves no gradients behind to leak into the next training step.
    assert all(p.grad is None for p in learn.model.parameters())
    # None means each image's prediction, which here is "patch" for all of them.
    np.testing.assert_allclose(gradcam(learn, items[:4]), heatmaps[:4], atol=1e-6)


def _reference_gradcam(model, x, layer, targets, vit_grid=None):
    """Grad-CAM by its definition (Selvaraju et al., 2017), written out here: the layer's feature maps weighted
    by the spatial mean of the target score's gradient, ReLU, scaled to [0, 1] and resized bilinearly to the
    input, as pytorch-grad-cam scales and resizes. For a ViT the layer's tokens (N, T, C) lose their prefix
    tokens and the patches are laid out row by row, the order timm's patch embedding flattens them in."""
    import cv2

    store = {}
    hook = layer.register_forward_hook(lambda module, args, out: store.update(out=out))
    try:
        scores = model.eval()(x.clone().requires_grad_(True))
        acts = store["out"]
        grads = torch.autograd.grad(scores[torch.arange(len(x)), torch.tensor(targets)].sum(), acts)[0]
    finally:
        hook.remove()
    if vit_grid is not None:
        prefix, rows, cols = vit_grid
        acts, grads = (t[:, prefix:].reshape(len(t), rows, cols, -1).permute(0, 3, 1, 2) for t in (acts, grads))
    cams = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)).detach().numpy()
    out = []
    for cam in cams:
        cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
        cam = np.maximum(cv2.resize(np.float32(cam), (x.shape[3], x.shape[2])), 0)
        out.append((cam - cam.min()) / (1e-7 + (cam - cam.min()).max()))
    return np.stack(out)


@pytest.mark.parametrize(
    "arch, kwargs, layer_type",
    [
        ("convnext_atto", {}, "ConvNeXtStage"),
        ("vit_tiny_patch16_224", dict(img_size=SIZE, patch_size=8), "LayerNorm"),  # an 8x8 grid of patches
    ],
)
def test_gradcam_on_convnext_and_vit(patch_dls, patch_images, arch, kwargs, layer_type):
    torch.manual_seed(0)
    learn = vision_learner(patch_dls, arch, pretrained=False, **kwargs)
    layer, reshape = gradcam_target_layer(learn.model)
    assert type(layer).__name__ == layer_type and (reshape is not None) == arch.startswith("vit")
    items = sorted((patch_images / "valid" / "plain").glob("*.png"))[:3]
    heatmaps = gradcam(learn, items, target=["patch", "plain", 0])
    assert heatmaps.shape == (3, SIZE, SIZE) and np.isfinite(heatmaps).all()
    assert heatmaps.std(axis=(1, 2)).min() > 0  # a map, not a constant
    # the very maps Grad-CAM's definition gives for that layer: a wrong layer, a transposed or shifted patch
    # grid, or the class token left in would each give other maps
    body = learn.model[0].model
    grid = (body.num_prefix_tokens, *body.patch_embed.grid_size) if reshape is not None else None
    x = learn.dls.test_dl(items).one_batch()[0].as_subclass(torch.Tensor)
    expected = _reference_gradcam(learn.model, x, layer, [0, 1, 0], grid)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)
    with pytest.raises(ValueError, match="'dog' is not one of the learner's classes: patch, plain"):
        gradcam(learn, items, target="dog")
    with pytest.raises(ValueError, match="3 entries for 2 images"):
        gradcam(learn, items[:2], target=[0, 1, 0])


def test_gradcam_through_a_frozen_pretrained_body(patch_dls, patch_images, tmp_path):
    """Fine-tuning starts with the backbone frozen; the heatmap must not need its weights to want gradients."""
    weights = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    learn = build_learner(patch_dls, "resnet10t", weights=weights, path=tmp_path)
    assert not learn.model[0].model.conv1[0].weight.requires_grad
    items = sorted((patch_images / "valid" / "patch").glob("*.png"))[:2]
    heatmaps = gradcam(learn, items)
    assert heatmaps.shape == (2, SIZE, SIZE) and heatmaps.max() > 0
    # Pretrained weights bring ImageNet normalisation; the overlay must show the image as it was, not
    # normalised: with all the weight on the image, the picture is the file's pixels.
    fig = plot_gradcam(learn, items, image_weight=1.0)
    shown = fig.axes[0].images[0].get_array().astype(int)
    original = np.asarray(Image.open(items[0]), dtype=int)
    assert np.abs(shown - original).max() <= 1


def test_gradcam_on_lenet_uses_the_last_spatial_convolution(mnist, tmp_path):
    spec, path = mnist
    dls = dataloaders(spec, path, 28, batch_size=8, augment="none")
    learn = build_learner(dls, "lenet5", pretrained=False, path=tmp_path)
    layer, reshape = gradcam_target_layer(learn.model, dls.one_batch()[0])
    assert layer is learn.model[3] and reshape is None  # C3 (10x10 maps); C5's output is 1x1
    items = sorted((path / spec.valid_folder).glob("*/*.png"))[::60][:6]  # a few digits of the held-out set
    labels = [p.parent.name for p in items]
    fig = plot_gradcam(learn, items, labels=labels, cols=3, title="LeNet-5")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6 and shown[0].images[0].get_array().shape == (28, 28, 3)
    assert f"actual: {labels[0]}" in shown[0].get_title()
    assert fig._suptitle.get_text() == "LeNet-5"


def test_importing_interpret_leaves_grad_cam_until_a_heatmap_is_drawn():
    """Every notebook imports this module, most draw no Grad-CAM: grad-cam (and the scikit-learn it brings) waits."""
    import subprocess
    import sys

    code = "import sys, vision_studies.interpret; print('pytorch_grad_cam' in sys.modules, 'sklearn.decomposition' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
