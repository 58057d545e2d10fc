"""The lessons the notebooks teach: the package side of each (early stopping, one new image's prediction, the
T4 estimate), and that each lesson shows in the EXECUTED notebook: its plot or table is there, with the rows
it should hold. The executed notebooks come from the session fixture `runs` (tests/conftest.py); cells are
found by their tags (tests/lessons.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision_studies import pipeline
from vision_studies.studies import STUDIES, ConfigError, check_config, resolve_config

REPO = Path(__file__).resolve().parent.parent


# --- reading an executed notebook's outputs (tests/lessons.py) ------------------------------------------------------

def test_one_print_flushed_in_two_messages_reads_as_one_line():
    from lessons import text

    # as CI's kernel once sent it: one print(), two stream messages
    split = [{"output_type": "stream", "name": "stdout", "text": "the class above:"},
             {"output_type": "stream", "name": "stdout", "text": " True\n"}]
    assert text(split) == "the class above: True\n"
    # a different stream, or a displayed value, is a part of its own
    mixed = [{"output_type": "stream", "name": "stdout", "text": "a\n"},
             {"output_type": "stream", "name": "stderr", "text": "b\n"},
             {"output_type": "execute_result", "data": {"text/plain": ["4", "2"]}},
             {"output_type": "stream", "name": "stdout", "text": ["c", "\n"]}]
    assert text(mixed) == "a\n\nb\n\n42\nc\n"


# --- early stopping: PATIENCE ------------------------------------------------------------------------------------

def test_patience_reaches_fit_and_stops_a_run_that_cannot_improve(tmp_path, capsys):
    # a learning rate so small that no weight moves (below float32's resolution): the validation loss never
    # gets lower, so the run stops after the first epoch and PATIENCE more
    config = resolve_config("05", fixture=True, epochs=8, lr=1e-12, patience=2, data_dir=str(tmp_path / "data"),
                            output_dir=str(tmp_path / "models"))
    data = pipeline.data(config)
    run = pipeline.train(config, pipeline.learner(config, data))
    assert len(run.history) == 3
    assert "EarlyStoppingCallback(monitor='valid_loss', patience=2)" in capsys.readouterr().out
    assert config.record_settings()["patience"] == 2


def test_patience_zero_never_stops_early_and_a_negative_one_is_named():
    assert all(study.full.patience == 0 for study in STUDIES.values())
    with pytest.raises(ConfigError, match="PATIENCE must be 0"):
        check_config(resolve_config("05", patience=-1))


# --- one new image: interpret.show_prediction ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_study(tmp_path_factory):
    """05's fixture run, cut to one epoch: its config, data and trained LeNet-5."""
    import matplotlib

    matplotlib.use("Agg")
    tmp = tmp_path_factory.mktemp("mnist_study")
    config = resolve_config("05", fixture=True, epochs=1, data_dir=str(tmp / "data"), output_dir=str(tmp / "models"))
    data = pipeline.data(config)
    learn = pipeline.learner(config, data)
    pipeline.train(config, learn)
    return config, data, learn


def _reference_probs(learn, path):
    """The learner's probabilities for one file through the validation pipeline, without Learner.predict."""
    probs, _ = learn.get_preds(dl=learn.dls.test_dl([path]))
    return probs[0].numpy()


def test_show_prediction_draws_the_image_titled_with_the_learners_top_k(mnist_study):
    import matplotlib.pyplot as plt
    import numpy as np

    from vision_studies.interpret import show_prediction
    from vision_studies.predict_one import unseen_image

    config, data, learn = mnist_study
    path, label = unseen_image(data)
    assert str(path) not in set(data.table.loc[~data.table["is_valid"], "path"])  # never trained on
    assert str(path) == str(data.test["path"].iloc[0])  # 05 holds its test digits out: the first of them
    fig, ax = plt.subplots()
    table = show_prediction(learn, path, k=3, ax=ax)
    reference = _reference_probs(learn, path)
    top = np.argsort(-reference)[:3]
    assert list(table.columns) == ["label", "probability", "predicted"]
    assert list(table.label) == [str(learn.dls.vocab[i]) for i in top]
    assert np.allclose(table.probability, reference[top], atol=1e-4)
    assert list(table.predicted) == [True, False, False]
    assert len(ax.images) == 1 and ax.get_title().startswith(f"{table.label[0]} (")
    # a PIL image is predicted as its file is
    from PIL import Image

    with Image.open(path) as im:
        assert show_prediction(learn, im.copy(), k=3, ax=ax).equals(table)
    plt.close("all")


def test_the_export_predicts_the_new_image_as_the_learner_does(mnist_study):
    import matplotlib.pyplot as plt

    from vision_studies.export import load_exported
    from vision_studies.interpret import show_prediction
    from vision_studies.predict_one import unseen_image

    config, data, learn = mnist_study
    folder = pipeline.export(config, learn, {})
    path, _ = unseen_image(data)
    from_learner = show_prediction(learn, path, k=2)
    from_export = show_prediction(load_exported(folder), path, k=2)
    assert list(from_export.label) == list(from_learner.label)
    assert (from_export.probability - from_learner.probability).abs().max() < 1e-3
    plt.close("all")


def test_show_prediction_of_a_multi_label_model_lists_every_label_above_the_threshold(tmp_path):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vision_studies.interpret import show_prediction
    from vision_studies.predict_one import unseen_image

    config = resolve_config("04", fixture=True, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "m"))
    data = pipeline.data(config)
    learn = pipeline.learner(config, data)  # untrained: every label's probability near one half
    path, _ = unseen_image(data)
    reference = _reference_probs(learn, path)
    threshold = float(np.sort(reference)[-4])  # three labels lie above it
    fig, ax = plt.subplots()
    table = show_prediction(learn, path, k=1, threshold=threshold, ax=ax)
    above = [str(learn.dls.vocab[i]) for i in np.argsort(-reference) if reference[i] > threshold]
    assert len(above) == 3 and list(table.label[table.predicted]) == above
    assert len(table) == 3  # k=1, but every label the model predicts is listed
    assert ax.get_title().split("\n")[0].startswith(f"{above[0]} (")
    table = show_prediction(learn, path, k=2, threshold=1.0, ax=ax)
    assert not table.predicted.any() and len(table) == 2 and ax.get_title().startswith("no label above 1.00")
    plt.close("all")


def test_show_prediction_names_a_missing_image_and_a_bad_k(mnist_study, tmp_path):
    from vision_studies.interpret import show_prediction
    from vision_studies.predict import ImageNotFound

    learn = mnist_study[2]
    with pytest.raises(ImageNotFound, match="nope.png"):
        show_prediction(learn, tmp_path / "nope.png")
    with pytest.raises(ValueError, match="k must be at least 1"):
        show_prediction(learn, tmp_path / "nope.png", k=0)


# --- the T4 estimate -----------------------------------------------------------------------------------------------

def test_the_flop_count_matches_published_figures():
    from vision_studies.estimate import training_flops

    # torchvision's model card: ResNet-50 4.09 GFLOPS (multiply-adds), ResNet-18 1.81: twice that in FLOPs
    assert training_flops("resnet50", 224, n_out=1000) == pytest.approx(2 * 4.09e9, rel=0.02)
    assert training_flops("resnet18.tv_in1k", 224, n_out=1000) == pytest.approx(2 * 1.81e9, rel=0.02)
    # LeNet-5 by hand: C1 6x28x28 outputs of 25 weights, C3 16x10x10 of 150, C5 120 of 400, F6 84x120, 10x84
    lenet = 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84)
    assert training_flops("lenet5", 28, n_in=1) == pytest.approx(lenet, rel=0.05)


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "vgg11.tv_in1k", "inception_v3.tv_in1k", "conv_pool_cnn"])
def test_flops_for_a_third_class_count_follow_from_two_counted(arch):
    """Past two class counts, training_flops extrapolates: it must give what counting gives."""
    from vision_studies import estimate

    size = 32 if arch == "conv_pool_cnn" else 75
    estimate._COUNTED.pop((arch, size, 3), None)
    for n_out in (2, 37):
        estimate.training_flops(arch, size, 3, n_out)
    assert len(estimate._COUNTED[(arch, size, 3)]) == 2
    for n_out in (10, 200):
        assert estimate.training_flops(arch, size, 3, n_out) == estimate._count_flops(arch, size, 3, n_out)
    assert len(estimate._COUNTED[(arch, size, 3)]) == 2  # extrapolated, not counted


def test_the_t4_estimate_adds_up_and_says_its_basis():
    from vision_studies import estimate
    from vision_studies.estimate import FULL_MODE_IMAGES, colab_rate, t4_estimate, training_flops

    mnist = t4_estimate("05")  # TEST_PCT: the 10,000 test digits are seen once; validation comes from training
    n_train, _, _ = FULL_MODE_IMAGES["mnist"]
    # held in memory (the registry's in_memory): decoded once, then each of 10 epochs gathers its batches
    assert mnist.prepare_seconds == pytest.approx(n_train / colab_rate("decode_in_memory"))
    assert mnist.data_seconds == pytest.approx(10 * n_train / colab_rate("in_memory"))
    assert "48,000 training and 12,000 validation" in str(mnist) and "held in memory" in str(mnist)
    assert str(mnist).splitlines()[0].endswith("(mostly preparing the data once)")  # LeNet-5 on a T4: no time at all
    cifar100 = t4_estimate("07")  # 4 epochs after one frozen, at 224 px: 32 px images enlarged image by image
    n_train, n_valid, _ = FULL_MODE_IMAGES["cifar100"]
    forward = training_flops(STUDIES["07_cifar100"].full.arch, 224, 3, 100)
    flops = (4 * 3 * n_train + n_train + 5 * n_valid) * forward
    assert cifar100.gpu_seconds == pytest.approx(flops / estimate.T4_EFFECTIVE_FLOPS)
    assert cifar100.data_seconds == pytest.approx(5 * (n_train + n_valid) / colab_rate("per_item"))
    assert cifar100.seconds == pytest.approx(max(cifar100.gpu_seconds, cifar100.data_seconds))
    text = str(cifar100)
    assert "Colab T4" in text and "8 TFLOP/s" in text and "50,000 training" in text and "enlarged image by image" in text
    # fixture mode estimates the full-mode run; what a full-mode run changed counts
    assert t4_estimate(resolve_config("07", fixture=True)).seconds == pytest.approx(cifar100.seconds)
    assert t4_estimate(resolve_config("07", epochs=8)).gpu_seconds > 1.5 * cifar100.gpu_seconds
    # the notebook's other models add their time; photos bigger than the size are presized once, then read
    pets = t4_estimate("08")
    photos = sum(FULL_MODE_IMAGES["pets"][:2])
    assert pets.prepare_seconds == pytest.approx(photos / colab_rate("write_presized"))
    assert pets.data_seconds == pytest.approx(6 * photos / colab_rate("presized"))  # 5 epochs after one frozen
    alone, with_cnns = t4_estimate("06", also=[]), t4_estimate("06")  # 06 trains three CNNs from scratch too
    assert with_cnns.seconds > alone.seconds and len(with_cnns.basis) == 5 and "naive_cnn at 32 px" in str(with_cnns)
    assert "raw copies" in with_cnns.basis[1]  # CIFAR's 32 px read at 32: copied once, for all four CNN runs
    assert with_cnns.prepare_seconds == pytest.approx(60_000 / colab_rate("write_copied"))
    clouds = t4_estimate("03")  # trained twice: before and after cleaning, both fine-tuned
    assert len(clouds.basis) == 2 and clouds.basis[0] == clouds.basis[1] and "body frozen" in clouds.basis[1]


def test_the_t4_estimate_reads_each_set_as_full_mode_does():
    """`loader_path` against data.dataloaders' own rules: in memory when the registry says so and it fits the
    budget, presized copies for photos larger than the size, raw copies at their size, enlarged otherwise."""
    from vision_studies.estimate import loader_path
    from vision_studies.memory_data import MEMORY_BUDGET

    assert loader_path("mnist", 28, 1, 60_000) == "in_memory"
    assert loader_path("fashion_mnist", 224, 1, MEMORY_BUDGET // 224**2) == "in_memory"  # just within the budget
    assert loader_path("fashion_mnist", 224, 1, MEMORY_BUDGET // 224**2 + 1) == "per_item"  # over it: enlarged
    assert loader_path("pets", 224, 3, 7_349) == "presized"
    assert loader_path("cifar10", 32, 3, 60_000) == "copied"
    assert loader_path("cifar10", 224, 3, 60_000) == "per_item"


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_has_a_t4_estimate(name):
    from vision_studies.estimate import t4_estimate

    found = t4_estimate(name)
    assert 0 < found.seconds < 24 * 3600, str(found)


# --- every notebook's lessons, in the executed notebooks -----------------------------------------------------------

NOTEBOOKS = sorted(STUDIES)
PREDICTS_ONE = NOTEBOOKS


def _committed(name):
    import nbformat

    from vision_studies.runner import find_notebooks

    [path] = find_notebooks(REPO / "notebooks", [name])
    return nbformat.read(str(path), as_version=4)


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_every_notebook_tells_of_early_stopping_before_it_trains(nb):
    from lessons import lesson_cells

    notebook = _committed(nb)
    [note] = lesson_cells(notebook, "lesson-early-stopping")
    assert note.cell_type == "markdown" and "PATIENCE" in note.source and "EarlyStoppingCallback" in note.source
    at = notebook.cells.index(note)
    trains = [i for i, c in enumerate(notebook.cells)
              if any(call in c.source for call in ("pipeline.train(", "compare(", "compare_runs("))]
    assert trains and at < max(trains), "the note comes before the training it is about"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_executed_notebook_shows_the_t4_estimate(runs, name):
    from lessons import lesson_outputs, text

    from vision_studies.estimate import t4_estimate

    shown = text(lesson_outputs(runs[name], "lesson-t4-estimate"))
    # the figure of the study's full-mode run, even in a fixture run, with its basis
    assert str(t4_estimate(name)).splitlines()[0] in shown
    assert "GFLOP a forward pass" in shown and "TFLOP/s effective fp16" in shown


@pytest.mark.parametrize("name", PREDICTS_ONE)
def test_the_executed_notebook_predicts_one_new_image(runs, name):
    from lessons import has_plot, lesson_outputs, tables, text

    from vision_studies.registry import get_spec

    outputs = lesson_outputs(runs[name], "lesson-predict-one")
    assert has_plot(outputs), "the picture, titled with the answer"
    assert "labelled" in text(outputs)
    [table] = tables(outputs)
    assert list(table.columns)[1:] == ["label", "probability", "predicted"]
    probs = table["probability"].astype(float).tolist()
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    predicted = table["predicted"].tolist()
    full = STUDIES[name].full  # 11 predicts with its last set's model
    classes = get_spec(full.datasets[-1] if hasattr(full, "datasets") else STUDIES[name].dataset).classes
    if STUDIES[name].multi_label:
        assert len(table) >= 3 and predicted == sorted(predicted, reverse=True)  # the chosen labels lead
    else:
        assert len(table) == min(3, len(classes) or 3) and predicted == ["True"] + ["False"] * (len(table) - 1)
    if classes:
        assert set(table["label"]) <= set(classes)


# --- 07, 08, 09: fastai's most_confused beside the many-class matrix (seed 001's sets) -------------------------

@pytest.mark.parametrize("name", ["07_cifar100", "08_pets", "09_cub200"])
def test_the_executed_notebook_lists_the_pairs_it_confuses_most(runs, name):
    import re

    from lessons import lesson_outputs, tables, text

    outputs = lesson_outputs(runs[name], "lesson-most-confused")
    said = re.search(r"(\d+) of (\d+) validation images wrong; (\d+) \(actual, predicted\) pairs", text(outputs))
    assert said, text(outputs)
    wrong, total, pairs = map(int, said.groups())
    [table] = tables(outputs)
    assert list(table.columns)[1:] == ["actual", "predicted", "images"]
    counts = table["images"].astype(int).tolist()
    assert len(table) == min(20, pairs) and counts == sorted(counts, reverse=True) and all(c >= 1 for c in counts)
    assert sum(counts) <= wrong < total and (pairs > 0) == (wrong > 0)  # fixture mode lists every pair (min_val 1)
    assert (table["actual"] != table["predicted"]).all()


# --- 04: pictures of predictions and the demo (seed 000 deployed one) ------------------------------------------

@pytest.mark.parametrize("name", ["04_multilabel"])
def test_04_shows_its_predictions_on_photos_wrong_ones_first(runs, name):
    from lessons import has_plot, lesson_outputs, tables

    from vision_studies.registry import VOC_CLASSES

    outputs = lesson_outputs(runs[name], "lesson-prediction-pictures")
    assert has_plot(outputs)
    [table] = tables(outputs)
    assert list(table.columns)[1:] == ["predicted", "true", "right", "confidence"] and len(table) == 9
    right = (table["right"] == "True").tolist()
    assert right == sorted(right)  # the mistakes come first
    for said, true, ok in zip(table["predicted"], table["true"], right):
        assert (said == true) == ok
        assert set(true.split(", ")) <= set(VOC_CLASSES)


@pytest.mark.parametrize("name", ["04_multilabel"])
def test_04_builds_its_demo_and_asks_it_about_a_photo_without_blocking(runs, name):
    from lessons import lesson_cells, lesson_outputs, text

    shown = text(lesson_outputs(runs[name], "lesson-demo"))
    assert "the demo's answer for" in shown and "vision-studies demo" in shown  # fixture mode: how to open it
    [cell] = lesson_cells(runs[name], "lesson-demo")
    assert "if in_colab() and not config.fixture:" in cell.source
    assert "prevent_thread_lock=True" in cell.source  # a launch in Colab returns at once


# --- 11: seed 003's five sets, split train / validate / test, each backbone at its size -----------------------

@pytest.mark.parametrize("name", ["11_backbone_comparison"])
def test_11_splits_all_five_sets_and_scores_every_backbone_on_each(runs, name):
    from lessons import lesson_outputs, tables

    [splits] = tables(lesson_outputs(runs[name], "lesson-five-sets"))
    assert splits["dataset"].tolist() == ["noodles", "leaves", "dogs6", "birds10", "butterflies"]
    for column in ("train", "validate", "test"):
        assert (splits[column].astype(int) > 0).all(), column
    own = dict(zip(splits["dataset"], splits["test images"]))
    assert own["birds10"] == own["noodles"] == "the dataset's own" and own["leaves"].startswith("10%")
    outputs = lesson_outputs(runs[name], "lesson-backbone-table")
    [table] = tables(outputs)
    assert set(table.columns[1:]) == set(splits["dataset"])  # a column per set, a row per backbone
    assert set(table.iloc[:, 0]) == set(STUDIES[name].fixture["archs"])
    values = table.iloc[:, 1:].astype(float).to_numpy()
    assert ((0 <= values) & (values <= 1)).all()


# --- 05: LeNet-5's code in the notebook; the test digits seen once ----------------------------------------------------

def test_the_notebooks_lenet5_is_the_packages():
    import torch
    from lessons import lesson_cells

    from vision_studies.models import LeNet5, count_parameters

    [cell] = lesson_cells(_committed("05_mnist"), "lesson-lenet5-code")
    namespace: dict = {}
    exec(compile(cell.source, "05_mnist.ipynb: lesson-lenet5-code", "exec"), namespace)  # the cell, as a kernel runs it
    ours, theirs = namespace["LeNet5"](), LeNet5()
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
    assert count_parameters(ours) == count_parameters(theirs) == 61_706
    ours.load_state_dict(theirs.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize("name", ["05_mnist"])
def test_the_executed_mnist_notebook_shows_its_lenet5_and_three_sets(runs, name):
    import re

    from lessons import lesson_outputs, text

    assert "61,706 parameters" in text(lesson_outputs(runs[name], "lesson-lenet5-code"))
    assert "the learner's LeNet-5 is the class above: True" in text(lesson_outputs(runs[name], "lesson-lenet5-check"))
    shown = text(lesson_outputs(runs[name], "lesson-validation-split"))
    found = re.search(r"([\d,]+) training and ([\d,]+) validation images, ([\d,]+) held out for testing", shown)
    assert found, shown
    n_train, n_valid, n_test = (int(g.replace(",", "")) for g in found.groups())
    assert n_valid == round(0.2 * (n_train + n_valid)) and n_test > 0  # validation from the training digits
    assert runs[name].record["test_pct"] == 0.1


# --- 02: ImageNet overlap said; Grad-CAM on the errors ------------------------------------------------------------

def test_worst_images_are_the_errors_most_confidently_wrong_first_else_the_top_losses():
    import pandas as pd
    import torch

    from vision_studies.interpret import worst_images

    items = pd.DataFrame({"path": [f"{i}.jpg" for i in range(5)], "label": ["a", "b", "a", "b", "a"]})
    targets = torch.tensor([0, 1, 0, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.55, 0.45]])  # 1 and 2 are wrong
    worst, what = worst_images(probs, targets, items, ["a", "b"], k=6)
    assert list(worst["path"]) == ["2.jpg", "1.jpg"] and list(worst["predicted"]) == ["b", "a"]
    assert what.startswith("2 misclassified images")
    right = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.1, 0.9], [0.55, 0.45]])
    worst, what = worst_images(right, targets, items, ["a", "b"], k=2)
    assert list(worst["path"]) == ["4.jpg", "1.jpg"] and "no misclassified images" in what
    with pytest.raises(ValueError, match="5 predictions"):
        worst_images(probs, targets, items.iloc[:3], ["a", "b"])


def test_the_huskies_notebook_says_what_imagenet_overlap_does_to_its_figure():
    from lessons import lesson_cells

    notebook = _committed("02_huskies")
    [note] = lesson_cells(notebook, "lesson-imagenet-overlap")
    for fact in ("ImageNet's own photos", "n02110185", "n02110063", "ImageNet-1k", "upper bound"):
        assert fact in note.source, fact
    evaluating = next(i for i, c in enumerate(notebook.cells) if "pipeline.evaluate(" in c.source)
    assert notebook.cells.index(note) == evaluating + 1, "right under the figure it is about"


@pytest.mark.parametrize("name", ["02_huskies"])
def test_the_executed_huskies_notebook_shows_gradcam_on_its_errors(runs, name):
    import nbformat
    from lessons import has_plot, lesson_outputs, tables, text

    outputs = lesson_outputs(runs[name], "lesson-gradcam-errors")
    assert has_plot(outputs)
    [table] = tables(outputs)
    assert {"path", "label", "predicted", "p_true"} <= set(table.columns) and 1 <= len(table) <= 6
    shown = text(outputs)
    wrong = (table["label"] != table["predicted"]).sum()
    if "misclassified images, the" in shown:  # the errors, and only they
        assert wrong == len(table)
    else:
        assert "no misclassified images: the" in shown and wrong == 0
    p_true = table["p_true"].astype(float).tolist()
    assert p_true == sorted(p_true), "most confidently wrong (the highest loss) first"
    executed = nbformat.read(str(runs[name].output), as_version=4)
    accuracy = runs[name].record["metrics"]["accuracy"]
    assert (accuracy < 1) == ("misclassified images, the" in shown), (accuracy, shown, len(executed.cells))


# --- 03: cleaning by top losses, then retraining; skies that can happen -------------------------------------------

@pytest.mark.parametrize("name", ["03_clouds"])
def test_03_retrains_on_the_cleaned_data_and_sets_both_models_side_by_side(runs, name):
    from lessons import lesson_outputs, tables

    from vision_studies.fixtures import CLOUD_MISLABELS

    [report] = tables(lesson_outputs(runs[name], "lesson-cleaning-report"))
    planted = {f"{genus}/{genus}-N{n}.jpg" for genus in CLOUD_MISLABELS for n in (29, 30)}  # filed in the wrong genus
    suspects = report[report["issue"] == "high_loss"]
    assert len(planted & set(suspects["path"])) >= 3, f"the report missed the planted wrong labels: {list(suspects['path'])}"
    outputs = lesson_outputs(runs[name], "lesson-cleaned-vs-uncleaned")
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # both runs' curves, and the bars
    [table] = [t for t in tables(outputs) if "validated_on" in t.columns]  # (fastai's epoch tables come first)
    assert list(zip(table["model"], table["validated_on"])) == [
        ("uncleaned", "all validation images"), ("uncleaned", "cleaned validation images"),
        ("cleaned", "all validation images"), ("cleaned", "cleaned validation images")]
    trained = table["training_images"].astype(int)
    training_suspects = int(suspects["detail"].str.endswith("training image").sum())
    assert trained.iloc[0] - trained.iloc[2] >= training_suspects > 0  # gone from the cleaned model's training images
    record = runs[name].record
    assert [row["valid_loss"] for row in record["cleaning"]] == table["valid_loss"].astype(float).tolist()
    assert record["augment"] == "sky"


# --- 06: the three CNNs' curves, their reports, nothing trained twice; EfficientNetV2 offered -------------------------

@pytest.mark.parametrize("name", ["06_cifar10"])
def test_06_shows_each_scratch_cnns_curves_and_reports_and_trains_none_twice(runs, name):
    import nbformat
    from lessons import has_plot, lesson_outputs, tables, text

    from vision_studies.studies import get_study

    cnns = ["naive_cnn", "conv_pool_cnn", "bn_dropout_cnn"]
    outputs = lesson_outputs(runs[name], "lesson-cnn-curves")
    assert has_plot(outputs)
    steps, overfitting = tables(outputs)
    assert list(steps["arch"]) == cnns and list(overfitting["run"]) == cnns
    epochs = get_study(name).fixture["scratch_epochs"]
    assert set(overfitting["epochs"].astype(int)) == {epochs}
    assert {"lowest_valid_loss", "last_train_loss", "last_valid_loss", "overfits"} <= set(overfitting.columns)
    outputs = lesson_outputs(runs[name], "lesson-cnn-reports")
    [report] = tables(outputs)
    assert list(report["arch"]) == cnns and {"precision_macro", "recall_macro"} <= set(report.columns)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # a confusion matrix each
    accuracies = [round(a, 4) for a in (row["accuracy"] for row in runs[name].record["scratch_steps"])]
    assert report["accuracy"].astype(float).tolist() == accuracies  # the comparison's own evaluations
    executed = nbformat.read(str(runs[name].output), as_version=4)
    printed = "".join(text(c.get("outputs", [])) for c in executed.cells if c.cell_type == "code")
    # each from-scratch CNN trains from the start once: the comparison's three runs, and no fourth
    assert printed.count(f"learn.fit_one_cycle({epochs}, lr_max=") == 3


def test_06_offers_seed_001s_efficientnetv2_fine_tunes_as_archs_timm_has():
    import timm

    source = "\n".join(c.source for c in _committed("06_cifar10").cells)
    for arch, figure in (("tf_efficientnetv2_l.in21k_ft_in1k", "98.1%"), ("tf_efficientnetv2_xl.in21k_ft_in1k", "99.04%")):
        assert f'"{arch}"' in source and figure in source
        assert arch in timm.list_pretrained(arch.split(".")[0] + ".*"), arch
        assert timm.models.get_pretrained_cfg(arch).input_size[-1] == 384  # the IMAGE_SIZE the notebook names
    assert "IMAGE_SIZE = 384" in source
    assert "efficientnetv2" not in STUDIES["06_cifar10"].full.arch + str(STUDIES["06_cifar10"].fixture)  # CI never runs them


# --- 10: augmentation and dropout on vs off; the model stuck at ln 2 -----------------------------------------------

@pytest.mark.parametrize("name", ["10_cats_vs_dogs"])
def test_10_trains_with_and_without_augmentation_and_dropout_side_by_side(runs, name):
    from lessons import has_plot, lesson_outputs, tables

    from vision_studies.studies import get_study

    outputs = lesson_outputs(runs[name], "lesson-augmentation-dropout")
    assert has_plot(outputs)
    runs_table, overfitting = tables(outputs)
    fixture = {**get_study(name).full.values(), **{k.upper(): v for k, v in get_study(name).fixture.items()}}
    assert list(zip(runs_table["arch"], runs_table["augment"])) == [("bn_cnn", "none"),
                                                                  (fixture["SCRATCH_ARCH"], fixture["AUGMENT"])]
    assert list(overfitting["run"]) == list(runs_table["run"])
    assert set(overfitting["epochs"].astype(int)) == {fixture["SCRATCH_EPOCHS"]}
    scratch = next(row for row in runs[name].record["comparison"] if row["how"] == "from scratch")
    assert scratch["accuracy"] == pytest.approx(float(runs_table["accuracy"].iloc[1]), abs=1e-4)  # the same run


@pytest.mark.parametrize("name", ["10_cats_vs_dogs"])
def test_10_flags_seed_004s_stuck_model_and_one_it_provokes(runs, name):
    from lessons import has_plot, lesson_outputs, tables

    outputs = lesson_outputs(runs[name], "lesson-stuck-at-ln2")
    assert has_plot(outputs)
    [report] = tables(outputs)
    report = report.set_index("run")
    seed = report.loc["seed 004's CNN (its log)"]
    assert seed["stuck"] == "True" and seed["epochs_at_chance"] == "[4, 5, 6, 7, 8, 10]" and seed["chance_loss"] == "0.6931"
    provoked = report.loc["conv_pool_cnn, 100x the learning rate"]
    assert provoked["stuck"] == "True" and provoked["answers_alike"] == "True"
    assert len(report) == 4  # and the two runs that learn, checked alike


def test_top_losses_of_a_test_set_need_its_items(mnist_study):
    import matplotlib.pyplot as plt

    from vision_studies.interpret import plot_top_losses

    learn = mnist_study[2]
    items = mnist_study[1].table[~mnist_study[1].table["is_valid"]].head(7)  # any images not in the validation set
    probs, targets, losses = learn.get_preds(dl=learn.dls.test_dl(items, with_labels=True), with_loss=True)
    with pytest.raises(ValueError, match="pass items="):
        plot_top_losses(learn, probs, targets, losses, k=4)
    fig = plot_top_losses(learn, probs, targets, losses, k=4, items=items)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    worst = int(losses.argmax())
    assert shown[0].get_title().startswith(f"{learn.dls.vocab[int(probs[worst].argmax())]} / {learn.dls.vocab[int(targets[worst])]}")
    plt.close("all")
