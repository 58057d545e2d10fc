"""Reading training histories: chance loss against PyTorch's cross-entropy, a dead network's answers, seed 004's
stuck epochs, overfitting told apart from noise and from a learning rate too high, and the side-by-side plot."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision_studies.histories import (SEED_004_HISTORY, answers_alike, chance_loss, overfitting_epoch, overfitting_table,
                                      plot_histories, stuck_epochs, stuck_report)

matplotlib.use("Agg")


@pytest.mark.parametrize("n", [2, 3, 10, 100])
def test_chance_loss_is_pytorchs_cross_entropy_of_answering_one_in_n_whatever_the_labels(n):
    targets = torch.randint(0, n, (50,), generator=torch.Generator().manual_seed(n))
    uniform = torch.zeros(50, n)  # equal logits: 1/n for every class
    assert chance_loss(n) == pytest.approx(float(F.cross_entropy(uniform, targets)), abs=1e-6)
    assert chance_loss(2) == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        chance_loss(1)


def test_a_network_whose_relus_died_answers_alike_and_scores_ln_2():
    """The mechanism behind seed 004's 0.6931: every ReLU's input below zero, so every image gets the last
    layer's bias alone; trained, that bias settles on the classes' shares (here 50/50) and the loss on ln 2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # dead: no input reaches above zero, no gradient flows back through them
    x, y = torch.randn(64, 20), torch.arange(64) % 2
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    probs = net(torch.randn(40, 20)).softmax(dim=1).detach()
    assert answers_alike(probs)
    assert F.cross_entropy(net(x), y).item() == pytest.approx(math.log(2), abs=1e-3)
    learning = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert not answers_alike(learning)
    with pytest.raises(ValueError, match="images, classes"):
        answers_alike(torch.ones(3))


def test_seed_004s_log_is_stuck_at_ln_2_from_its_fourth_epoch():
    assert len(SEED_004_HISTORY) == 33 and SEED_004_HISTORY[3]["valid_loss"] == 0.6931
    assert stuck_epochs(SEED_004_HISTORY, 2) == [3, 4, 5, 6, 7, 9]
    learning = [dict(train_loss=0.7 - 0.1 * i, valid_loss=0.69 - 0.1 * i, accuracy=0.5 + 0.1 * i) for i in range(4)]
    report = stuck_report({"seed 004": SEED_004_HISTORY, "learning": learning}, 2).set_index("run")
    assert report.loc["seed 004", "stuck"] and report.loc["seed 004", "epochs_at_chance"] == [4, 5, 6, 7, 8, 10]
    assert not report.loc["learning", "stuck"] and report.loc["learning", "epochs_at_chance"] == []
    with pytest.raises(KeyError, match="valid_loss"):
        stuck_epochs([dict(train_loss=1.0)], 2)


def test_a_first_epoch_at_chance_is_a_start_but_predictions_all_alike_are_stuck():
    starting = [dict(train_loss=2.3, valid_loss=math.log(10)), dict(train_loss=1.5, valid_loss=1.2)]
    off_by_a_bias = [dict(train_loss=40.0, valid_loss=0.6854), dict(train_loss=17.0, valid_loss=0.6854)]
    constant = torch.tensor([[0.52, 0.48]]).repeat(10, 1)
    report = stuck_report({"starting": starting}, 10).set_index("run")
    assert report.loc["starting", "epochs_at_chance"] == [1] and not report.loc["starting", "stuck"]
    report = stuck_report({"dead": off_by_a_bias}, 2).set_index("run")
    assert not report.loc["dead", "stuck"]  # 0.6854 is not ln 2: the history alone cannot tell
    report = stuck_report({"dead": off_by_a_bias}, 2, probs={"dead": constant}).set_index("run")
    assert report.loc["dead", "stuck"] and report.loc["dead", "answers_alike"]


def _history(train, valid):
    return [dict(train_loss=t, valid_loss=v, accuracy=0.5) for t, v in zip(train, valid)]


def test_overfitting_is_validation_loss_rising_while_training_loss_falls():
    overfits = _history([2.0, 1.2, 0.8, 0.4, 0.1], [1.8, 1.1, 1.0, 1.3, 1.7])
    too_high_lr = _history([1.0, 0.8, 1.5, 2.0, 2.5], [1.0, 0.8, 1.4, 1.9, 2.4])  # both rise: not overfitting
    noise = _history([1.0, 0.5, 0.3, 0.2], [0.02, 0.015, 0.03, 0.04])  # 0.015 -> 0.04: a few dozen images' wobble
    learning = _history([2.0, 1.0, 0.5], [1.5, 0.9, 0.6])
    assert overfitting_epoch(overfits) == 2
    assert overfitting_epoch(too_high_lr) is None
    assert overfitting_epoch(noise) is None
    assert overfitting_epoch(learning) is None and overfitting_epoch(learning[:1]) is None
    table = overfitting_table({"overfits": overfits, "learning": learning}).set_index("run")
    assert table.loc["overfits", "overfits"] and table.loc["overfits", "overfits_after_epoch"] == 3
    assert table.loc["overfits", "lowest_valid_loss"] == 1.0 and table.loc["overfits", "last_valid_loss"] == 1.7
    assert not table.loc["learning", "overfits"]


def test_plot_histories_puts_runs_side_by_side_and_marks_overfitting_and_chance():
    overfits = _history([2.0, 1.2, 0.8, 0.4, 0.1], [1.8, 1.1, 1.0, 1.3, 1.7])
    learning = _history([2.0, 1.0, 0.5], [1.5, 0.9, 0.6])
    fig = plot_histories({"naive": overfits, "better": learning}, n_classes=10)
    loss_axes = fig.axes[:2]  # the top row, a column per run
    assert [ax.get_title() for ax in loss_axes] == ["naive", "better"]
    labels = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in loss_axes}
    assert "overfitting from here" in labels["naive"] and "overfitting from here" not in labels["better"]
    assert all(any(label.startswith("ln 10") for label in found) for found in labels.values())
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="at least one"):
        plot_histories({})
