"""Pictures of predictions (gallery.py): the rows they show are the evaluation's own, wrong ones first."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vision_studies.gallery import plot_predictions, prediction_table


@pytest.fixture
def photos(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (40, 30), (60 * i, 100, 150)).save(path)
        paths.append(str(path))
    return paths


def test_single_label_rows_put_the_confident_mistake_first(photos):
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    targets = torch.tensor([0, 0, 1, 1])  # images 1 and 3 are wrong; 1 the more confident
    table = prediction_table(photos, probs, targets, ["cat", "dog"], k=3)
    assert list(table["image"]) == [photos[1], photos[3], photos[2]]
    assert list(table["right"]) == [False, False, True]
    assert table.iloc[0][["predicted", "true"]].tolist() == ["dog", "cat"]
    fig = plot_predictions(table)
    assert [ax.get_title() for ax in fig.axes[:3]][0] == "said: dog\ntrue: cat"


def test_multi_label_rows_decide_at_the_studys_threshold(photos):
    probs = torch.tensor([[0.7, 0.2], [0.35, 0.9], [0.1, 0.1], [0.5, 0.5]])
    targets = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 1]])
    table = prediction_table(photos, probs, targets, ["dog", "person"], threshold=0.3)
    by_image = table.set_index("image")
    assert by_image.loc[photos[1], "predicted"] == "dog, person" and by_image.loc[photos[1], "right"]
    assert by_image.loc[photos[2], "predicted"] == "(nothing)" and not by_image.loc[photos[2], "right"]
    assert table["right"].tolist() == sorted(table["right"].tolist())  # wrong ones first


def test_paths_that_do_not_match_the_predictions_are_named(photos):
    with pytest.raises(ValueError, match="4 image paths for 2 predictions"):
        prediction_table(photos, torch.rand(2, 2), torch.tensor([0, 1]), ["a", "b"])
