"""The studies as data, their parameters read from their own notebooks, and one study trained from the command line.

A notebook's `parameters` cell is the one place a study's settings live: the command line reads it (with
papermill, as papermill reads it to inject parameters) and offers each one as a flag, with the cell's
values as defaults and its comments as help, so the two cannot drift apart. The cell after it changes
some of them for fixture mode (``if FIXTURE: ARCH, EPOCHS = "resnet10t", 8``); those literals are read too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Study", "STUDIES", "get_study", "NotebookParameters", "notebook_parameters", "study_notebook",
           "check_parameters", "TrainedStudy", "train_study", "NOT_TRAINING"]


@dataclass(frozen=True)
class Study:
    """What the command needs to know about a study beyond its notebook's parameters."""

    name: str  # the notebook's file name without .ipynb
    dataset: str  # the registry name the notebook passes to prepare_dataset
    positive: str | None = None  # a binary study's class of interest: its own precision and recall are reported
    multi_label: bool = False
    notebook_only: tuple[str, ...] = ()  # parameters of notebook parts the command does not run
    model_kwargs: str = ""  # the variable the cell after `parameters` sets to timm's keyword arguments
    trains: str = ""  # what the command trains, where the notebook trains more than one model
    refused: str = ""  # why the command does not train this study at all


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("01_potholes", "potholes", positive="potholes"),
    Study("02_huskies", "huskies", notebook_only=("COMPARE",),
          trains="the main model; the notebook's comparison of settings (COMPARE) is not run"),
    Study("03_clouds", "clouds", notebook_only=("APPLY_CLEANING",),
          trains="the model; the notebook's cleaning report (APPLY_CLEANING) is not made"),
    Study("04_multilabel", "pascal_2007", multi_label=True),
    Study("05_mnist", "mnist"),
    Study("06_cifar10", "cifar10", notebook_only=("SCRATCH_EPOCHS", "SCRATCH_LR"),
          trains="the fine-tuned model (ARCH) only; the notebook's from-scratch CNNs are not trained"),
    Study("07_cifar100", "cifar100"),
    Study("08_pets", "pets"),
    Study("09_cub200", "cub200"),
    Study("10_cats_vs_dogs", "cats_vs_dogs", positive="Dog", model_kwargs="VIT_KWARGS",
          notebook_only=("SCRATCH_ARCH", "SCRATCH_EPOCHS", "SCRATCH_SIZE", "SCRATCH_LR"),
          trains="the fine-tuned model (ARCH) only; the notebook's from-scratch CNN is not trained"),
    Study("11_backbone_comparison", "dogs6",
          refused="it trains several backbones on several datasets and has no one model to train; run its "
                  "notebook: vision-studies run-notebooks 11"),
)}

# Parameters of where things go, not of the training: left out of the results record, as the notebooks do.
NOT_TRAINING = ("DATA_DIR", "OUTPUT_DIR", "PUSH_TO_HUB", "HUB_REPO")


def get_study(name: str) -> Study:
    """A study by its notebook name (``05_mnist``), its number (``05`` or ``5``), or its dataset (``mnist``)."""
    for study in STUDIES.values():
        number = study.name.split("_")[0]
        if name in (study.name, number, study.dataset) or (name.isdigit() and int(name) == int(number)):
            return study
    raise KeyError(f"no study {name!r}; the studies are: {', '.join(STUDIES)} (a number such as 05 will do)")


def study_notebook(study: Study, notebooks_dir: Path | str = "notebooks") -> Path:
    path = Path(notebooks_dir) / f"{study.name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the command reads each study's parameters from its notebook; run it from "
            "the repository root, or pass --notebooks-dir"
        )
    return path


@dataclass(frozen=True)
class NotebookParameters:
    """A notebook's `parameters` cell, and what the cell after it sets, in fixture mode and always."""

    notebook: Path
    defaults: dict[str, Any]  # the parameters cell, in its order
    help: dict[str, str]  # each parameter's comment in the cell, where it has one
    fixture: dict[str, Any] = field(default_factory=dict)  # set under `if FIXTURE:`
    settings: dict[str, Any] = field(default_factory=dict)  # set for every run (``VIT_KWARGS = {}``)

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every value a run uses: the notebook's, then its fixture values in fixture mode, then `given`."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise KeyError(f"{self.notebook.name} has no parameter {', '.join(unknown)}; "
                           f"it has {', '.join(self.defaults)}")
        fixture = given.get("FIXTURE", self.defaults.get("FIXTURE", False))
        return {**self.defaults, **self.settings, **(self.fixture if fixture else {}), **given}


def _literal(node: ast.expr, where: str) -> Any:
    """A literal's value; ``dict(a=1)`` counts as one, as the notebooks write small keyword sets that way."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, where) for kw in node.keywords}
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(
            f"{where}, line {node.lineno}: {ast.unparse(node)!r} is not a literal; the command line reads only "
            "literals in the parameters cell and in the fixture settings after it"
        ) from None


def _assignments(statements: list[ast.stmt], where: str) -> dict[str, Any]:
    """``NAME = literal`` and ``A, B = 1, 2`` statements as {name: value}."""
    values: dict[str, Any] = {}
    for statement in statements:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            raise ValueError(f"{where}, line {statement.lineno}: only literals are assigned under `if FIXTURE:`")
        target, value = statement.targets[0], statement.value
        if isinstance(target, ast.Name):
            values[target.id] = _literal(value, where)
        elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for name, item in zip(target.elts, value.elts):
                values[ast.unparse(name)] = _literal(item, where)
        else:
            raise ValueError(f"{where}, line {statement.lineno}: cannot read {ast.unparse(statement)!r}")
    return values


def _fixture_cell(source: str, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values set under ``if FIXTURE:``, literals set for every run) in the cell after `parameters`."""
    fixture: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.If) and ast.unparse(statement.test) == "FIXTURE":
            fixture.update(_assignments(statement.body, where))
        elif isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
            try:  # `config = dict(fixture=FIXTURE, ...)` is the notebook's own bookkeeping, not a setting
                value = _literal(statement.value, where)
            except ValueError:
                continue
            settings.update({t.id: value for t in statement.targets})
    return fixture, settings


def notebook_parameters(notebook: Path | str) -> NotebookParameters:
    """The parameters of `notebook`: papermill's reading of its `parameters` cell, the values parsed as literals."""
    from papermill.inspection import find_first_tagged_cell_index, inspect_notebook, load_notebook_node

    notebook = Path(notebook)
    found = inspect_notebook(str(notebook))
    if not found:
        raise ValueError(f"{notebook} has no cell tagged `parameters`")
    where = f"{notebook.name}, parameters cell"
    defaults = {name: _literal(ast.parse(p["default"], mode="eval").body, where) for name, p in found.items()}
    comments = {name: p["help"] for name, p in found.items() if p["help"]}
    nb = load_notebook_node(str(notebook))
    index = find_first_tagged_cell_index(nb, "parameters")
    after = next((c for c in nb.cells[index + 1:] if c.cell_type == "code"), None)
    fixture, settings = {}, {}
    if after is not None:
        fixture, settings = _fixture_cell(after.source, f"{notebook.name}, the cell after parameters")
    return NotebookParameters(notebook, defaults, comments, fixture, settings)


def check_parameters(params: dict[str, Any]) -> None:
    """Refuse, before anything is downloaded or trained, settings that could only fail later."""
    from .augment import PRESETS
    from .models import SCRATCH_MODELS

    for name in ("EPOCHS", "BATCH_SIZE", "IMAGE_SIZE"):
        if name in params and not (isinstance(params[name], int) and params[name] >= 1):
            raise ValueError(f"{name} must be a whole number of at least 1, not {params[name]!r}")
    if params.get("LR", 0) < 0:
        raise ValueError(f"LR must be positive (or 0 for the learning-rate finder's suggestion), not {params['LR']}")
    if params.get("AUGMENT", "none") not in PRESETS:
        raise ValueError(f"AUGMENT {params['AUGMENT']!r} is not a preset; the presets are {', '.join(PRESETS)}")
    arch = params["ARCH"]
    if arch in SCRATCH_MODELS:
        if params.get("PRETRAINED") or params.get("WEIGHTS"):
            raise ValueError(f"ARCH {arch} learns from scratch here: set PRETRAINED to False (--no-pretrained) "
                             "and no WEIGHTS")
    else:
        import timm

        if not timm.is_model(arch):
            raise ValueError(
                f"ARCH {arch!r} is neither a timm model nor one of {', '.join(SCRATCH_MODELS)}; "
                "python -c \"import timm; print(timm.list_models('*resnet*'))\" lists timm's"
            )
    must_exist = ["WEIGHTS", "EXTRA_TRAIN_FOLDER", "URL_LIST"] + ([] if params.get("URL_LIST") else ["DATA_FOLDER"])
    for name in must_exist:  # DATA_FOLDER is made from URL_LIST when there is one
        if params.get(name) and not Path(params[name]).exists():
            raise FileNotFoundError(f"{name} {params[name]} does not exist")
    if params.get("PUSH_TO_HUB") and not params.get("HUB_REPO"):
        raise ValueError("PUSH_TO_HUB needs HUB_REPO, the repository to create or update: 'your-name/model-name'")


@dataclass
class TrainedStudy:
    """A finished run: its results record (in every process) and, in process 0, where it was written."""

    record: dict[str, Any]
    results: Path | None
    export: Path | None


def _download_url_list(url_list: str, folder: str) -> None:
    from .sources import download_image_urls, read_url_list

    left_out = download_image_urls(read_url_list(url_list), folder)
    for reason, urls in left_out.items():
        print(f"left out ({reason}): {len(urls)}", *urls[:5], sep="\n  ")


@contextmanager
def _epoch_lines(learn) -> Iterator[None]:
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


def _scores(study: Study, params: dict[str, Any], probs, targets, classes: list[str]) -> dict[str, Any]:
    """The notebook's metrics on the whole validation set; a multi-label study's include its threshold."""
    from .metrics import best_threshold, classification_metrics, multilabel_metrics

    if study.multi_label:
        threshold = params.get("THRESHOLD") or best_threshold(targets, probs)  # 0: the one that maximises F1
        return multilabel_metrics(targets, probs, classes, threshold=threshold)
    positive = study.positive if study.positive in classes else None  # a DATA_FOLDER may name its classes otherwise
    return classification_metrics(targets, probs.argmax(dim=1), classes, positive=positive)


def _write(study: Study, params: dict[str, Any], learn, record: dict[str, Any], model_kwargs) -> tuple[Path, Path]:
    """The results record and the export, where the notebook writes them; the upload when asked for."""
    from .hub import export_learner, push_to_hub
    from .metrics import write_results

    results = write_results(record, params["OUTPUT_DIR"])
    overrides: dict[str, Any] = {"threshold": record["threshold"]} if study.multi_label else {}
    if model_kwargs is not None:
        overrides["model_kwargs"] = model_kwargs
    export = export_learner(learn, Path(params["OUTPUT_DIR"]) / study.name / "export", record,
                            repo_id=params.get("HUB_REPO") or None, **overrides)
    if params.get("PUSH_TO_HUB"):
        print(push_to_hub(export, params["HUB_REPO"]))
    return results, export


def train_study(study: Study | str, params: dict[str, Any], trained: list[str]) -> TrainedStudy:
    """The notebook's steps for `study` with `params` (resolved), in this process and any others launched
    with it: data, model, fit, validation metrics; then process 0 writes the results record and the export.

    `trained` names the parameters that belong in the results record. With several processes, BATCH_SIZE
    is the batch of one optimizer step, split evenly between them.
    """
    # torch and fastai load here, not when the module is imported: `train STUDY --help` reads only the notebook
    from .data import dataloaders, prepare_dataset
    from .distributed import (ItemCounter, data_parallel, in_turn, items_per_process, per_process_batch_size,
                              process_device, process_state)
    from .metrics import results_record
    from .models import build_learner
    from .train import fit, seed_everything

    study = get_study(study) if isinstance(study, str) else study
    if study.refused:
        raise ValueError(f"vision-studies train does not train {study.name}: {study.refused}")
    check_parameters(params)
    p, state = params, process_state()
    batch_size = per_process_batch_size(p["BATCH_SIZE"], state.num_processes)
    if not p["LR"] and state.num_processes > 1:
        # fastai's finder saves and reloads the model from process 0 alone, and waits there for the others
        raise ValueError(
            "LR 0 asks for the learning-rate finder, which runs in one process only: pass --lr, or run the same "
            "command without the launcher to see the finder's suggestion"
        )
    config = {name.lower(): p[name] for name in trained}
    state.print(f"{study.name} on {state.num_processes} process(es), {process_device(state)}: {config}")

    seed_everything(p["SEED"])
    folder = p.get("DATA_FOLDER") or None
    if p.get("URL_LIST"):  # the folder is made from web images first, as the notebook does: once per node
        folder = folder or f"{p['DATA_DIR']}/{study.dataset}_from_urls"
        in_turn(lambda: _download_url_list(p["URL_LIST"], folder), state, everyone=False)
    spec, path = in_turn(lambda: prepare_dataset(study.dataset, p["FIXTURE"], p["DATA_DIR"], folder), state)
    dls = dataloaders(spec, path, p["IMAGE_SIZE"], batch_size, augment=p["AUGMENT"], seed=p["SEED"],
                      extra_train_folder=p.get("EXTRA_TRAIN_FOLDER") or None, device=process_device(state))
    state.print(f"{len(dls.train_ds)} training and {len(dls.valid_ds)} validation images, {len(dls.vocab)} classes, "
                f"from {path}")
    model_kwargs = p.get(study.model_kwargs) if study.model_kwargs else None
    learn = in_turn(lambda: build_learner(  # process 0 alone fetches pretrained weights; the rest find them cached
        dls, p["ARCH"], pretrained=p["PRETRAINED"], weights=p["WEIGHTS"] or None,
        path=Path(p["OUTPUT_DIR"]) / study.name, model_kwargs=model_kwargs), state)
    lr = p["LR"]
    if not lr:  # 0: the learning-rate finder's suggestion, as the notebook takes it
        lr = config["lr"] = float(learn.lr_find(num_it=40 if p["FIXTURE"] else 100, show_plot=False).valley)
        print(f"learning rate from the finder: {lr:.2e}")

    counter = ItemCounter()
    learn.add_cb(counter)
    resume = bool(p.get("RESUME", False))
    # progress bars for a terminal; a log file (a cluster job's) gets one line per epoch instead
    with data_parallel(learn, state, resume=resume), (nullcontext() if sys.stdout.isatty() else _epoch_lines(learn)):
        run = fit(learn, p["EPOCHS"], lr, fine_tune=p["PRETRAINED"], resume=resume)
        probs, targets = learn.get_preds(ds_idx=1)  # every process's share, gathered, padding dropped
    learn.remove_cb(counter)
    if len(targets) != len(dls.valid_ds):
        raise RuntimeError(f"the processes returned {len(targets)} predictions for {len(dls.valid_ds)} validation "
                           "images")
    metrics = _scores(study, p, probs, targets, list(dls.vocab))
    if study.multi_label:
        config["threshold"] = metrics["threshold"]
    record = results_record(
        study.name, **config, device=run.device, seconds=run.seconds, metrics=metrics, processes=state.num_processes,
        batch_size_per_process=batch_size, items_per_process=items_per_process(counter, state),
    )
    results = export = None
    if state.is_main_process:
        results, export = _write(study, p, learn, record, model_kwargs)
    state.wait_for_everyone()  # no process leaves before the files are whole
    return TrainedStudy(record, results, export)
