"""One study run, written once: data -> learner -> train -> evaluate -> record -> export.

Each step is a small function of a study's config (`studies.resolve_config`) and what the steps before it
returned; a notebook calls them one per cell so the story stays visible, and `run_study` chains them for
the command line, the scripts, the comparisons and the data-parallel path. Launched by accelerate or
torchrun, `run_study` trains in every process together; a plain run is one process, and the steps then do
what a notebook's cells do.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from accelerate import PartialState
from fastai.data.block import DataBlock
from fastai.data.core import DataLoaders
from fastai.learner import Learner

from .data import augment_on_for, dataloaders, image_datablock, items_table, prepare_dataset, test_split
from .memory_data import MemoryDL
from .distributed import (ItemCounter, data_parallel, in_turn, items_per_process, per_process_batch_size,
                          process_device, process_state)
from .metrics import best_threshold, classification_metrics, multilabel_metrics, results_record, write_results
from .models import SCRATCH_MODELS, body_pretrained, build_learner, count_parameters
from .registry import DatasetSpec
from .studies import ConfigError, StudyConfig, check_config
from .train import TrainingRun, fit, seed_everything

__all__ = ["StudyData", "Evaluation", "StudyRun", "data", "study_data", "learner", "suggest_lr", "rate_from_finder",
           "train", "evaluate", "record", "export", "share", "run_study", "describe_datablock", "describe_learner",
           "training_plan"]

T = TypeVar("T")


def _once(work: Callable[[], T], state: PartialState | None, everyone: bool = True) -> T | None:
    """`work()` here, or, among launched processes, in process 0 first (downloads, shared folders)."""
    return work() if state is None else in_turn(work, state, everyone=everyone)


@dataclass
class StudyData:
    """The study's images: registry entry, folder, the table of items, the DataBlock and its DataLoaders."""

    spec: DatasetSpec
    path: Path
    table: pd.DataFrame  # every usable image with its label and split (less the test hold-out)
    block: DataBlock
    dls: DataLoaders
    test: pd.DataFrame | None = None  # held out before training (TEST_PCT): the figures are measured on it

    def __str__(self) -> str:
        test = f", {len(self.test)} held out for testing" if self.test is not None else ""
        return (f"{len(self.dls.train_ds)} training and {len(self.dls.valid_ds)} validation images{test}, "
                f"{len(self.dls.vocab)} classes, from {self.path}")


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def describe_datablock(data: StudyData) -> str:
    """The fastai `DataBlock` the data step built, written out as the call that makes it."""
    block, vocab = data.block, list(data.dls.vocab)
    target = "MultiCategoryBlock" if data.spec.multi_label else "CategoryBlock"
    image = "ImageBlock(cls=PILImageBW)" if data.spec.image_mode == "L" else "ImageBlock"
    shown = ", ".join(map(repr, vocab[:4])) + (f", ... {len(vocab)} in all" if len(vocab) > 4 else "")
    item = ", ".join(_name(t) for t in block.item_tfms)
    batch = ", ".join(_name(t) for t in block.batch_tfms)
    return "\n".join([
        "dls = DataBlock(",
        f"    blocks=({image}, {target}(vocab=[{shown}])),",
        "    get_x=ColReader('path'), get_y=ColReader('label'),  # columns of the items table",
        "    splitter=ColSplitter('is_valid'),",
        f"    item_tfms=[{item}],",
        f"    batch_tfms=[{batch}],",
        f").dataloaders(table, bs={data.dls.bs})",
    ])


def data(config: StudyConfig, *, state: PartialState | None = None) -> StudyData:
    """Seed everything, fetch the dataset (or write its fixture, or read DATA_FOLDER), read its items,
    hold out TEST_PCT, and build the DataLoaders; among several processes each gets its share of a batch.

    With TEST_PCT a dataset's own test split (Fashion-MNIST's 10,000 images) is the test set `evaluate` sees
    once, and the registry's VALID_PCT of its training images the validation set that picks the kept epoch."""
    seed_everything(config.seed, deterministic=config.deterministic)
    folder = getattr(config, "data_folder", "") or None
    url_list = getattr(config, "url_list", "")
    if url_list:  # the folder is made from web images first: checked, de-duplicated, what was dropped listed
        folder = folder or f"{config.data_dir}/{config.dataset}_from_urls"
        _once(lambda: _download_url_list(url_list, folder), state, everyone=False)
    spec, path = _once(lambda: prepare_dataset(config.dataset, config.fixture, config.data_dir, folder), state)
    table = items_table(spec, path, config.seed, getattr(config, "extra_train_folder", "") or None)
    test = None
    # a test set touched once, at the end; validation only picks the epoch
    if getattr(config, "test_pct", 0.0):
        # the dataset's own test images (validation held out of its training ones), else TEST_PCT held out
        table, test = test_split(spec, table, getattr(config, "test_pct", 0.0), config.seed)
    return study_data(config, spec, path, table, test, state=state)


def study_data(config: StudyConfig, spec: DatasetSpec, path: Path | str, table: pd.DataFrame,
               test: pd.DataFrame | None = None, *,
               state: PartialState | None = None) -> StudyData:
    """The DataLoaders of an items table as the study's settings make them, with the DataBlock they were
    built from: `data`'s last step, and a retrain's (retrain.py) on a cleaned table."""
    processes = 1 if state is None else state.num_processes
    batch_size = per_process_batch_size(config.batch_size, processes)
    device = None if state is None else process_device(state)
    dls = dataloaders(spec, path, config.image_size, batch_size, augment=config.augment, seed=config.seed,
                      device=device, table=table,
                      in_memory=spec.in_memory and processes == 1)  # several processes each read their share
    held = isinstance(dls.train, MemoryDL)  # in memory, the random changes run on batches
    block = image_datablock(spec, list(dls.vocab), config.image_size, config.augment,  # the one dls was built from
                            augment_on="batches" if held else augment_on_for(dls.device))
    return StudyData(spec, Path(path), table, block, dls, test)


def _download_url_list(url_list: str, folder: str) -> None:
    from .sources import download_image_urls, read_url_list

    left_out = download_image_urls(read_url_list(url_list), folder)
    for reason, urls in left_out.items():
        print(f"left out ({reason}): {len(urls)}", *urls[:5], sep="\n  ")


def describe_learner(config: StudyConfig, learn: Learner) -> str:
    """The fastai and timm calls the learner step made, and the network's size."""
    loss = type(learn.loss_func).__name__
    size = f"{count_parameters(learn.model):,} parameters"
    if config.arch in SCRATCH_MODELS:
        return (f"Learner(dls, {type(learn.model).__name__}(n_in={learn.dls.one_batch()[0].shape[1]}, "
                f"n_out={len(learn.dls.vocab)}), loss_func={loss}(), opt_func=AdamW)  # {size}")
    kwargs = "".join(f", {k}={v!r}" for k, v in (getattr(config, "model_kwargs", None) or {}).items())
    weights = getattr(config, "weights", "")
    source = f", pretrained_cfg_overlay=dict(file={weights!r})" if weights else ""
    return "\n".join([
        f"vision_learner(dls, {config.arch!r}, pretrained={body_pretrained(learn)}{kwargs}{source}, "
        f"loss_func={loss}(), opt_func=AdamW)",
        f"  # the body: timm.create_model({config.arch!r}, pretrained={body_pretrained(learn)}, num_classes=0"
        f"{kwargs}); fastai's new head has {len(learn.dls.vocab)} outputs; {size}",
    ])


def learner(config: StudyConfig, data: StudyData, *, state: PartialState | None = None,
            **options: Any) -> Learner:
    """The study's network on `data`: a timm body with a new fastai head, or a model from scratch;
    checkpoints go to OUTPUT_DIR/<study>. `options` go to models.build_learner (label_smoothing)."""
    weights = getattr(config, "weights", "") or None
    return _once(lambda: build_learner(  # process 0 alone fetches pretrained weights; the rest find them cached
        data.dls, config.arch, pretrained=config.pretrained, weights=weights,
        path=Path(config.output_dir) / config.study, model_kwargs=getattr(config, "model_kwargs", None) or None,
        weights_dir=Path(config.data_dir) / "weights",
        **options), state)


def training_plan(learn: Learner, epochs: int, lr: float) -> str:
    """The fastai calls the train step makes (train.fit adds checkpoints and keeps the best epoch):
    fastai's `fine_tune` when the body starts from pretrained weights, else one cycle for every layer."""
    if not body_pretrained(learn):
        return f"learn.fit_one_cycle({epochs}, lr_max={lr:.2e})  # every layer from the start"
    return (f"learn.fine_tune({epochs}, base_lr={lr:.2e}), that is: learn.freeze(); learn.fit_one_cycle(1, "
            f"slice({lr:.2e}), pct_start=0.99); learn.unfreeze(); learn.fit_one_cycle({epochs}, "
            f"slice({lr / 200:.2e}, {lr / 2:.2e}), pct_start=0.3, div=5)")


def rate_from_finder(valley: float, minimum: float) -> float:
    """The rate a run takes from the finder's two suggestions: the valley of its curve (fastai's default), unless
    that lies more than two decades below `minimum`, fastbook's rule of thumb (a tenth of the rate at the lowest
    loss). On a few dozen fixture images the curve can be noise whose "valley" is its flat start: CI once met
    6.3e-07 there, and a fine-tune at that rate learns nothing."""
    return float(minimum) if valley < minimum / 100 else float(valley)


# fastai's finder stops once its smoothed loss passes 4 times its lowest (`stop_div`), taking that for divergence.
# No fine-tune diverges at rates this low: a stop under it is one lucky first batch (CI's fixture run of 02 once
# began at loss 0.28 against batches of about 1.0, stopped at 2.5e-06, and "suggested" 6.3e-07).
FINDER_STOP_TOO_EARLY = 1e-4


def suggest_lr(config: StudyConfig, learn: Learner, show_plot: bool = True) -> float:
    """fastai's learning-rate finder (its plot when `show_plot`) and the rate taken from it (`rate_from_finder`).
    A sweep that stopped below `FINDER_STOP_TOO_EARLY` runs again over its whole range, without stopping."""
    from fastai.callback.schedule import SuggestionMethod

    sweep = dict(num_it=40 if config.fixture else 100, show_plot=False,
                 suggest_funcs=(SuggestionMethod.Valley, SuggestionMethod.Minimum))
    try:
        found = learn.lr_find(**sweep)
    except IndexError:  # fastai's suggestions need at least 10 points of curve, and the sweep stopped sooner
        found = None
    if (stopped := learn.recorder.lrs[-1]) < FINDER_STOP_TOO_EARLY or found is None:
        print(f"the finder stopped at {stopped:.1e}, where no fine-tune diverges: its first batches' loss was low by "
              f"chance, not a sign of divergence; sweeping the whole range again without stopping")
        found = learn.lr_find(**sweep, stop_div=False)
    if show_plot:  # the curve, with the two suggestions on it (lr_find's own plot, drawn once the sweep stands)
        lrs, losses = torch.tensor(learn.recorder.lrs), learn.recorder.losses  # (suggestions went through float32)
        points = [(lr, float(losses[int((lrs - lr).abs().argmin())])) for lr in found]
        learn.recorder.plot_lr_find(suggestions=points, nms=list(found._fields))
    lr = rate_from_finder(found.valley, found.minimum)
    if lr != found.valley:
        print(f"the curve's valley, {found.valley:.2e}, lies over two decades below a tenth of the rate at its "
              f"lowest loss: taking that instead (fastbook's rule)")
    print(f"suggested learning rate: {lr:.2e}")
    return lr


def train(config: StudyConfig, learn: Learner) -> TrainingRun:
    """Fit with the one-cycle policy, keeping the best epoch; LR 0 takes the learning-rate finder's
    suggestion (then in ``run.extra["lr"]``); PATIENCE stops after that many epochs without a lower validation
    loss. With RESUME, continue from an interrupted run's checkpoint."""
    lr = config.lr
    if not lr:
        lr = suggest_lr(config, learn, show_plot=False)
    print(training_plan(learn, config.epochs, lr))
    if config.patience:
        print(f"  with EarlyStoppingCallback(monitor='valid_loss', patience={config.patience})")
    run = fit(learn, config.epochs, lr, patience=config.patience or None, resume=getattr(config, "resume", False))
    run.extra["lr"] = lr
    return run


@dataclass
class Evaluation:
    """Predictions on the validation set (or the held-out test set) and the study's metrics on them."""

    probs: torch.Tensor
    targets: torch.Tensor
    losses: torch.Tensor | None  # per image; None among several processes
    classes: list[str]
    metrics: dict[str, Any]
    threshold: float | None = None  # a multi-label study's decision threshold


def evaluate(config: StudyConfig, learn: Learner, data: StudyData, *, state: PartialState | None = None,
             threshold: float | None = None) -> Evaluation:
    """The study's metrics on every validation image (the test hold-out, if there is one), without
    augmentation. A multi-label study decides at THRESHOLD, or (0) at the threshold that maximises F1."""
    with_loss = state is None or state.num_processes == 1  # losses are not gathered across processes
    dl = learn.dls.test_dl(data.test, with_labels=True) if data.test is not None else learn.dls.valid
    preds = learn.get_preds(dl=dl, with_loss=with_loss)  # every process's share, gathered, padding dropped
    probs, targets = preds[0], preds[1]
    losses = preds[2] if with_loss else None
    expected = len(data.test) if data.test is not None else len(data.dls.valid_ds)
    if len(targets) != expected:
        raise RuntimeError(f"{len(targets)} predictions for {expected} images: the processes' shares do not add up")
    classes = [str(c) for c in learn.dls.vocab]
    if config.about.multi_label:
        threshold = threshold or getattr(config, "threshold", 0.0) or best_threshold(targets, probs)
        metrics = multilabel_metrics(targets, probs, classes, threshold=threshold)
    else:
        positive = config.about.positive if config.about.positive in classes else None  # DATA_FOLDER's own names
        metrics = classification_metrics(targets, probs.argmax(dim=1), classes, positive=positive)
    return Evaluation(probs, targets, losses, classes, metrics, threshold)


def record(config: StudyConfig, learn: Learner, run: TrainingRun, evaluation: Evaluation, *, write: bool = True,
           **extra: Any) -> tuple[dict[str, Any], Path | None]:
    """The run's results record (DESIGN.md's fields, the study's settings, `extra`), written to
    OUTPUT_DIR/<study>/results.json unless `write` is False; returns it and where it went."""
    settings = config.record_settings() | {"lr": run.extra.get("lr", config.lr), "pretrained": body_pretrained(learn)}
    if evaluation.threshold is not None:
        settings["threshold"] = evaluation.threshold
    rec = results_record(config.study, **settings, dataset=config.dataset, device=run.device, seconds=run.seconds,
                         metrics=evaluation.metrics, **extra)
    return rec, write_results(rec, config.output_dir) if write else None


def export(config: StudyConfig, learn: Learner, record: dict[str, Any]) -> Path:
    """OUTPUT_DIR/<study>/export: safetensors weights, the config that rebuilds the network (what this
    config says, not guessed from the learner) and a model card naming the dataset and its licence."""
    from .export import export_learner

    threshold = record.get("threshold")
    return export_learner(
        learn, Path(config.output_dir) / config.study / "export", record,
        arch=config.arch, image_size=config.image_size, multi_label=config.about.multi_label,
        **({"threshold": threshold} if threshold is not None else {}),
        model_kwargs=getattr(config, "model_kwargs", None) or {}, dataset=config.dataset,
        repo_id=getattr(config, "hub_repo", "") or None,
    )


def share(config: StudyConfig, folder: Path, *, dry_run: bool | None = None):
    """Upload the export to HUB_REPO with PUSH_TO_HUB; otherwise (or `dry_run`) list what would go."""
    from .hub import push_to_hub

    push = getattr(config, "push_to_hub", False)
    if push and not config.hub_repo:
        raise ConfigError("PUSH_TO_HUB needs HUB_REPO, the repository to create or update: 'your-name/model-name'")
    repo = getattr(config, "hub_repo", "") or f"your-name/{config.study.replace('_', '-')}"
    return push_to_hub(folder, repo, dry_run=not push if dry_run is None else dry_run)


@contextmanager
def _epoch_lines(learn: Learner) -> Iterator[None]:
    """No progress bars, which fill a log file with redrawn lines: one plain line per epoch instead."""

    def log(row: list) -> None:
        names = learn.recorder.metric_names
        if len(row) != len(names):  # an epoch a resumed run had done before: fastai logs only its number
            return
        print("  ".join(f"{n} {v:.4f}" if isinstance(v, float) else f"{n} {v}" for n, v in zip(names, row)), flush=True)

    logger, learn.logger = learn.logger, log
    try:
        with learn.no_bar():
            yield
    finally:
        learn.logger = logger


@dataclass
class StudyRun:
    """A finished run: in every process its record; in process 0, where the record and export went."""

    config: StudyConfig
    data: StudyData
    learn: Learner
    run: TrainingRun
    evaluation: Evaluation
    record: dict[str, Any]
    results: Path | None = None
    export: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_study(config: StudyConfig, *, write: bool = True, quiet: bool | None = None) -> StudyRun:
    """Every step for `config`, in this process and any launched with it: data, learner, train, evaluate;
    then process 0 writes the record and the export (`write`), and uploads it with PUSH_TO_HUB.

    `quiet`: one plain line per epoch instead of progress bars (default: when the output is not a terminal).
    With several processes, BATCH_SIZE is the batch of one optimizer step, split evenly between them.
    """
    check_config(config)
    state = process_state()
    if not config.lr and state.num_processes > 1:
        # fastai's finder saves and reloads the model from process 0 alone, and waits there for the others
        raise ConfigError("LR 0 asks for the learning-rate finder, which runs in one process only: pass --lr, or run "
                          "the same command without the launcher to see the finder's suggestion")
    state.print(f"{config.study} on {state.num_processes} process(es), {process_device(state)}")
    study_data = data(config, state=state)
    state.print(study_data)
    learn = learner(config, study_data, state=state)
    counter = ItemCounter()
    learn.add_cb(counter)
    quiet = not sys.stdout.isatty() if quiet is None else quiet
    with data_parallel(learn, state, resume=getattr(config, "resume", False)), \
            (_epoch_lines(learn) if quiet else nullcontext()):
        run = train(config, learn)
        evaluation = evaluate(config, learn, study_data, state=state)
    learn.remove_cb(counter)
    rec, results = record(
        config, learn, run, evaluation, write=write and state.is_main_process, processes=state.num_processes,
        batch_size_per_process=study_data.dls.bs, items_per_process=items_per_process(counter, state),
    )
    folder = None
    if write and state.is_main_process:
        folder = export(config, learn, rec)
        if getattr(config, "push_to_hub", False):
            print(share(config, folder))
    state.wait_for_everyone()  # no process leaves before the files are whole
    return StudyRun(config, study_data, learn, run, evaluation, rec, results, folder)
