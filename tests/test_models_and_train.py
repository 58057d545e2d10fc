"""LeNet-5, the pretrained-weights paths (local file; offline Hub), and what fit promises."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from vision_studies.data import dataloaders
from fastai.metrics import error_rate

from vision_studies.errors import VisionStudiesError
from vision_studies.models import (LeNet5, PretrainedWeightsUnavailable, body_pretrained, build_learner, count_parameters,
                                   depthwise)
from vision_studies.pipeline import FINDER_STOP_TOO_EARLY, rate_from_finder, suggest_lr
from vision_studies.studies import resolve_config
from vision_studies.train import fit, seed_everything


def test_lenet5_has_lecuns_shape():
    model = LeNet5()
    assert count_parameters(model) == 61_706
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.fixture(scope="module")
def pets_dls(pets):
    spec, path = pets
    return dataloaders(spec, path, 32, batch_size=16, augment="none")


def test_local_weights_file_is_loaded_into_the_body(pets_dls, tmp_path):
    """The offline transfer-learning path: timm weights from a local file, a new head for our classes."""
    torch.manual_seed(0)
    source = timm.create_model("resnet10t", pretrained=False)
    weights = tmp_path / "resnet10t.safetensors"
    save_file(source.state_dict(), weights)
    learn = build_learner(pets_dls, "resnet10t", weights=weights, path=tmp_path)
    body = learn.model[0].model  # fastai's TimmBody wraps the timm model
    assert torch.equal(body.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(body.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert learn.model[-1][-1].out_features == 37  # the head is new: our 37 breeds, not ImageNet's 1000
    # pretrained weights mean fine-tuning: fastai freezes the body so the new head learns first
    assert not body.conv1[0].weight.requires_grad
    from vision_studies.recorder import Recorder  # both kinds of learner record with ours (recorder.py)
    assert type(learn.recorder) is Recorder and learn.recorder in learn.cbs


def test_missing_weights_file_names_the_parameter(pets_dls, tmp_path):
    with pytest.raises(FileNotFoundError, match="WEIGHTS"):
        build_learner(pets_dls, "resnet10t", weights=tmp_path / "nope.safetensors")


def test_offline_pretrained_says_how_to_proceed(pets_dls, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsUnavailable, match="PRETRAINED = False.*WEIGHTS"):
        build_learner(pets_dls, "resnet10t", pretrained=True)


def test_lenet_refuses_pretrained(mnist):
    spec, path = mnist
    dls = dataloaders(spec, path, 28, batch_size=64)
    with pytest.raises(ValueError, match="from scratch"):
        build_learner(dls, "lenet5", pretrained=True)


@pytest.fixture(scope="module")
def mnist_dls(mnist):
    spec, path = mnist
    return dataloaders(spec, path, 28, batch_size=64, augment="none")


def test_fit_learns_and_keeps_the_best_epoch(mnist_dls, tmp_path):
    seed_everything(0)
    learn = build_learner(mnist_dls, "lenet5", pretrained=False, path=tmp_path)
    assert type(learn.recorder).__module__ == "vision_studies.recorder"
    run = fit(learn, 4, 1e-2)
    assert len(run.history) == 4 and run.device == "cpu" and run.mixed_precision is None
    best = min(row["valid_loss"] for row in run.history)
    assert run.history[run.best_epoch]["valid_loss"] == best
    # the model we are left with is the best epoch's, not the last one's
    assert learn.validate()[0] == pytest.approx(best, rel=1e-4)
    assert run.history[-1]["accuracy"] > 0.8


def test_a_cpu_fit_runs_depthwise_nets_channels_last_and_others_as_they_are(pets_dls, tmp_path):
    """EfficientNet's depthwise convolutions go channels-last on a CPU (models.depthwise says why); a ResNet and
    LeNet-5 keep the default layout. Either way the export's weights are plain contiguous tensors."""
    from fastai.callback.channelslast import ChannelsLast

    from vision_studies.export import export_learner

    assert depthwise(timm.create_model("tf_efficientnet_lite0")) and depthwise(timm.create_model("mobilenetv3_small_050"))
    assert not depthwise(timm.create_model("resnet10t")) and not depthwise(LeNet5())
    for arch, channels_last in (("tf_efficientnet_lite0", True), ("resnet10t", False)):
        learn = build_learner(pets_dls, arch, pretrained=False, path=tmp_path / arch)
        fit(learn, 1, 1e-3)
        weight = next(p for p in learn.model.parameters() if p.dim() == 4)
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last, arch
        assert any(isinstance(cb, ChannelsLast) for cb in learn.cbs) == channels_last
    fit(learn := build_learner(pets_dls, "tf_efficientnet_lite0", pretrained=False, path=tmp_path / "twice"), 1, 1e-3)
    fit(learn, 1, 1e-3)
    assert sum(isinstance(cb, ChannelsLast) for cb in learn.cbs) == 1  # a second fit adds no second one
    export = export_learner(learn, tmp_path / "export", include_pickle=False, arch="tf_efficientnet_lite0",
                            image_size=32, multi_label=False)
    assert (export / "model.safetensors").exists()


def test_early_stopping_stops_when_nothing_improves(mnist_dls, tmp_path):
    learn = build_learner(mnist_dls, "lenet5", pretrained=False, path=tmp_path)
    run = fit(learn, 10, 0.0, patience=2)  # lr 0: the validation loss can never improve
    assert len(run.history) == 3  # the first epoch, then two without improvement


def test_fine_tune_records_the_frozen_epoch_too(pets_dls, tmp_path):
    source = timm.create_model("resnet10t", pretrained=False)
    weights = tmp_path / "w.safetensors"
    save_file(source.state_dict(), weights)
    learn = build_learner(pets_dls, "resnet10t", weights=weights, path=tmp_path)
    run = fit(learn, 2, 1e-3, freeze_epochs=1)
    assert len(run.history) == 3 and run.best_epoch >= 1  # kept epoch is from the unfrozen phase


def test_a_weights_file_means_fine_tuning_even_with_pretrained_false(pets_dls, tmp_path):
    """The one rule: the body starts from the file's weights, so it is fine-tuned, unfrozen after the head's
    epoch, and trained (its weights change); the record says pretrained."""
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), weights)
    learn = build_learner(pets_dls, "resnet10t", pretrained=False, weights=weights, path=tmp_path)
    assert body_pretrained(learn) and learn.pretrained  # what the results record's "pretrained" holds
    stem = learn.model[0].model.conv1[0].weight
    before = stem.detach().clone()
    run = fit(learn, 1, 1e-3, freeze_epochs=1)
    assert len(run.history) == 2  # the head's frozen epoch, then one with the body unfrozen
    assert all(p.requires_grad for p in learn.model.parameters())
    assert not torch.equal(stem.detach(), before)  # a convolution of the body, frozen in the first epoch, trained


def test_a_body_from_scratch_trains_every_layer_from_the_start(pets_dls, tmp_path):
    learn = build_learner(pets_dls, "resnet10t", pretrained=False, path=tmp_path)
    assert not body_pretrained(learn)
    stem = learn.model[0].model.conv1[0].weight
    before = stem.detach().clone()
    run = fit(learn, 1, 1e-3)
    assert len(run.history) == 1 and not torch.equal(stem.detach(), before)


def test_best_epoch_follows_fastais_tracker_rule_for_error_metrics(mnist_dls, tmp_path):
    """fastai's TrackerCallback: lower is better when the monitor's name holds 'loss' or 'error'."""
    seed_everything(0)
    learn = build_learner(mnist_dls, "lenet5", pretrained=False, path=tmp_path)
    learn.metrics = [error_rate]
    run = fit(learn, 4, 1e-2, monitor="error_rate")
    errors = [row["error_rate"] for row in run.history]
    assert errors[-1] < errors[0]  # it learned, so "higher is better" would pick another epoch
    assert run.best_epoch == errors.index(min(errors))
    assert learn.validate()[1] == pytest.approx(min(errors))  # and that epoch's weights are the ones kept


def test_seeding_flips_no_cudnn_switch_unless_asked(monkeypatch):
    import torch.backends.cudnn as cudnn

    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    seed_everything(3)
    first = torch.rand(3)
    assert (cudnn.deterministic, cudnn.benchmark) == (False, True)  # left as the caller had them
    seed_everything(3, deterministic=True)
    assert torch.equal(torch.rand(3), first)  # the same seed, the same draws
    assert (cudnn.deterministic, cudnn.benchmark) == (True, False)  # asked for: deterministic, no autotuning


def test_domain_errors_share_one_base_and_keep_their_builtins():
    from vision_studies.download import ChecksumError, CorruptArchiveError, DownloadError, UnsafeArchiveError
    from vision_studies.export import ExportError, ExportNotFound
    from vision_studies.hub import MissingToken
    from vision_studies.images import BadImageError
    from vision_studies.labels import LabelError
    from vision_studies.sources import MissingCredentials
    from vision_studies.train import CheckpointError

    builtins = {DownloadError: RuntimeError, ChecksumError: ValueError, UnsafeArchiveError: ValueError,
                CorruptArchiveError: ValueError, BadImageError: ValueError, LabelError: ValueError,
                PretrainedWeightsUnavailable: RuntimeError, MissingCredentials: RuntimeError,
                CheckpointError: OSError, ExportError: ValueError, ExportNotFound: FileNotFoundError,
                MissingToken: PermissionError}
    for error, builtin in builtins.items():
        assert issubclass(error, VisionStudiesError) and issubclass(error, builtin), error


def test_the_finders_rate_is_its_valley_unless_that_is_its_noisy_flat_start():
    assert rate_from_finder(3.98e-3, 1.2e-2) == 3.98e-3  # the valley, as fastai suggests
    assert rate_from_finder(2e-4, 1.2e-2) == 2e-4  # well below the rule of thumb, still within two decades
    assert rate_from_finder(6.31e-7, 1.2e-2) == 1.2e-2  # CI's noisy curve: a tenth of the lowest loss's rate


def test_suggest_lr_runs_fastais_finder_and_follows_its_curve(mnist_dls, tmp_path):
    from fastai.callback.schedule import minimum, valley

    seed_everything(0)
    learn = build_learner(mnist_dls, "lenet5", pretrained=False, path=tmp_path)
    lr = suggest_lr(resolve_config("05_mnist", fixture=True), learn, show_plot=False)
    # the reference: fastai's own suggestion functions on the curve the finder recorded, trimmed as lr_find trims it
    num_it = 40  # a fixture run's
    lrs = torch.tensor(learn.recorder.lrs[num_it // 10 : -5])
    losses = torch.tensor([float(v) for v in learn.recorder.losses[num_it // 10 : -5]])
    expected = rate_from_finder(valley(lrs, losses, num_it)[0], minimum(lrs, losses, num_it)[0])
    assert lr == pytest.approx(expected) and 1e-7 < lr < 10


def test_a_finder_stopped_by_a_lucky_first_batch_sweeps_the_whole_range_again(mnist_dls, tmp_path, capsys):
    from fastai.callback.core import Callback
    from fastai.callback.schedule import minimum, valley

    class LuckyFirstBatch(Callback):
        """CI's fixture run of 02: a first batch whose loss is far below the next ones'."""
        order = -1  # before the Recorder smooths the loss

        def after_loss(self):
            if self.training and self.train_iter == 0:
                self.learn.loss = self.learn.loss / 100

    seed_everything(0)
    learn = build_learner(mnist_dls, "lenet5", pretrained=False, path=tmp_path)
    learn.add_cb(LuckyFirstBatch())
    learn.lr_find(num_it=40, show_plot=False, suggest_funcs=None)  # (its suggestions would raise IndexError)
    assert learn.recorder.lrs[-1] < FINDER_STOP_TOO_EARLY  # fastai's own finder is fooled: it stopped at once
    lr = suggest_lr(resolve_config("05_mnist", fixture=True), learn, show_plot=False)
    assert "sweeping the whole range again without stopping" in capsys.readouterr().out
    assert len(learn.recorder.lrs) == 40 and learn.recorder.lrs[-1] > 1  # the second sweep ran to its end
    lrs = torch.tensor(learn.recorder.lrs[4:-5])
    losses = torch.tensor([float(v) for v in learn.recorder.losses[4:-5]])
    assert lr == pytest.approx(rate_from_finder(valley(lrs, losses, 40)[0], minimum(lrs, losses, 40)[0]))
    assert lr > FINDER_STOP_TOO_EARLY
