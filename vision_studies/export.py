"""The safe export format: a trained learner as safetensors weights, the config that rebuilds it, and a card.

fastai's `load_learner` unpickles, and unpickling a file can run any code in it. So an export is
``model.safetensors`` (tensors only) and ``config.json`` (everything needed to rebuild the network and to
prepare an image for it), and loading reads just those two. The config is what the caller built the
learner with (arch, image size, timm arguments, threshold, dataset), as nanoGPT's checkpoint carries its
``model_args`` and timm's weights their ``pretrained_cfg``; nothing is reverse-engineered from the learner.
The fastai ``model.pkl`` (with the ``pyproject.toml`` that `huggingface_hub.from_pretrained_fastai`
checks) may sit beside them for `load_learner` users; it is read only when the caller says it trusts the
source (`trust_pickle=True`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from pickle import DEFAULT_PROTOCOL
from typing import Any, Sequence

import torch
from fastai.learner import Learner
from fastai.vision.learner import create_timm_model
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.parameter import is_lazy

from .card import model_card
from .errors import VisionStudiesError
from .images import channels
from .models import SCRATCH_MODELS
from .predict import TorchPredictor
from .registry import get_spec

__all__ = [
    "CONFIG_FILE", "WEIGHTS_FILE", "PICKLE_FILE", "EXPORT_FILES", "FORMAT_VERSION", "ExportConfig", "ExportError",
    "ExportNotFound", "export_config", "export_learner", "build_model", "load_exported", "read_config",
]

CONFIG_FILE, WEIGHTS_FILE, PICKLE_FILE = "config.json", "model.safetensors", "model.pkl"
# What an export folder may hold, and so all that `hub.push_to_hub` uploads: a stray file in the folder
# (a notebook checkpoint, a .env) never leaves the machine by accident.
EXPORT_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md", PICKLE_FILE, "pyproject.toml", "model.onnx"]
FORMAT_VERSION = 2  # 2 added the dataset fields; version 1 files read as they are


class ExportError(VisionStudiesError, ValueError):
    """An export that cannot be written or read: a config field, the weights, or the learner does not fit."""


class ExportNotFound(VisionStudiesError, FileNotFoundError):
    """No export where one was asked for: the folder, its files, or the Hub repo is missing."""


@dataclass(frozen=True)
class ExportConfig:
    """Everything besides the weights that turns an image into a prediction: ``config.json``'s content."""

    arch: str  # a name in models.SCRATCH_MODELS, or a timm model name (the body under fastai's head)
    classes: tuple[str, ...]
    image_size: int  # images are squished to image_size x image_size
    image_mode: str  # "RGB" or "L": what PIL converts each image to
    mean: tuple[float, ...] | None = None  # per-channel normalisation after scaling to [0, 1], if any
    std: tuple[float, ...] | None = None
    multi_label: bool = False  # sigmoid and metrics.decide at `threshold` instead of softmax and the top class
    threshold: float = 0.5
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # timm arguments that shape the network (img_size)
    dataset: str | None = None  # the registry name of the training data, and what the registry says of it:
    dataset_title: str | None = None
    licence: str | None = None
    homepage: str | None = None
    format_version: int = FORMAT_VERSION
    library: str = "vision-studies"

    @property
    def n_in(self) -> int:
        return channels(self.image_mode)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path | str = CONFIG_FILE) -> "ExportConfig":
        """Check every field's type and value, naming the file and the field that is wrong."""
        known = {f for f in cls.__dataclass_fields__}
        missing = sorted({"arch", "classes", "image_size", "image_mode"} - set(data))
        if missing:
            raise ExportError(f"{where}: missing {', '.join(missing)}; re-export the model with export.export_learner")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExportError(f"{where}: unknown fields {', '.join(unknown)}; was it written by export.export_learner?")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ExportError(f"{where}: format_version {version!r} is not one this package reads; upgrade vision-studies")

        def check(name: str, ok: bool, wanted: str) -> None:
            if not ok:
                raise ExportError(f"{where}: {name} should be {wanted}, not {data[name]!r}")

        check("arch", isinstance(data["arch"], str) and data["arch"] != "", "a model name")
        check("classes", isinstance(data["classes"], list) and len(data["classes"]) > 0
              and all(isinstance(c, str) for c in data["classes"]), "a non-empty list of class names")
        check("image_size", isinstance(data["image_size"], int) and data["image_size"] > 0, "a positive integer")
        check("image_mode", data["image_mode"] in ("RGB", "L"), '"RGB" or "L"')
        n_in = channels(data["image_mode"])
        for name in ("mean", "std"):
            if data.get(name) is not None:
                check(name, isinstance(data[name], list) and len(data[name]) == n_in
                      and all(isinstance(v, (int, float)) for v in data[name]), f"a list of {n_in} numbers or null")
        check("multi_label", isinstance(data.get("multi_label", False), bool), "true or false")
        check("model_kwargs", isinstance(data.get("model_kwargs", {}), dict), "an object of timm arguments")
        threshold = data.get("threshold", 0.5)
        check("threshold", isinstance(threshold, (int, float)) and 0 < threshold < 1, "a number between 0 and 1")
        for name in ("dataset", "dataset_title", "licence", "homepage"):
            check(name, isinstance(data.get(name), (str, type(None))), "a string or null")
        tuples = {k: tuple(data[k]) for k in ("classes", "mean", "std") if data.get(k) is not None}
        return cls(**{**data, **tuples})


def read_config(folder: Path | str) -> ExportConfig:
    """The `ExportConfig` in ``folder/config.json``: plain JSON, checked field by field."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ExportNotFound(f"{path} does not exist: is {folder} a folder written by export.export_learner?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} should hold a JSON object")
    return ExportConfig.from_dict(data, path)


_RECORDED = object()  # "not passed": take the record models.build_learner left on the learner


def export_config(
    learn: Learner,
    *,
    arch: str,
    image_size: int,
    dataset: str | None = None,
    multi_label: bool | None = None,
    threshold: float = 0.5,
    model_kwargs: dict[str, Any] | None = None,
    normalisation: tuple[Sequence[float], Sequence[float]] | None | object = _RECORDED,
    image_mode: str | None = None,
) -> ExportConfig:
    """The `ExportConfig` of a learner the caller built with `arch`, `image_size` and `model_kwargs` (timm's).

    `dataset`, a registry name, supplies the image mode, whether the task is multi-label, and the title,
    homepage and licence the card shows; `multi_label` and `image_mode` say it for data of one's own
    (or override the registry). `normalisation` is the (mean, std) the learner's batches are normalised
    with, or None; by default the one `models.build_learner` recorded on the learner (``learn.normalisation``,
    what fastai's `vision_learner` added for a pretrained body). The classes are the learner's vocabulary.
    """
    spec = get_spec(dataset) if dataset else None
    multi_label = spec.multi_label if multi_label is None and spec is not None else multi_label
    if multi_label is None:
        raise ExportError("pass multi_label= (or dataset=, a registry name): the export must say how to decide labels")
    n_in = getattr(learn, "n_in", None)  # vision_learner's store_attr keeps it; build_learner records it too
    image_mode = image_mode or (spec.image_mode if spec is not None else None) or {1: "L", 3: "RGB"}.get(n_in)
    if image_mode is None:
        raise ExportError("pass image_mode= ('RGB' or 'L') or dataset=: the export must say how to read an image")
    if normalisation is _RECORDED:
        normalisation = getattr(learn, "normalisation", _RECORDED)
        if normalisation is _RECORDED:
            raise ExportError("the learner holds no record of its normalisation (models.build_learner makes one): "
                              "pass normalisation=(mean, std), or normalisation=None when there is none")
    mean, std = (None, None) if normalisation is None else (tuple(map(float, normalisation[0])),
                                                            tuple(map(float, normalisation[1])))
    return ExportConfig(
        arch=arch, classes=tuple(str(c) for c in learn.dls.vocab), image_size=int(image_size), image_mode=image_mode,
        mean=mean, std=std, multi_label=bool(multi_label), threshold=float(threshold),
        model_kwargs=dict(model_kwargs or {}), dataset=dataset,
        dataset_title=spec.title if spec else None, licence=spec.licence if spec else None,
        homepage=spec.homepage if spec else None,
    )


def build_model(config: ExportConfig) -> nn.Module:
    """The network `config` names, with fresh weights: the same code path models.build_learner takes."""
    n_out = len(config.classes)
    if config.arch in SCRATCH_MODELS:
        model = SCRATCH_MODELS[config.arch](n_in=config.n_in, n_out=n_out)
        if any(is_lazy(p) for p in model.parameters()):
            with torch.no_grad():  # lazy layers learn their input size from one batch, as in build_learner
                model.eval()(torch.zeros(2, config.n_in, config.image_size, config.image_size))
        return model
    try:
        model, _ = create_timm_model(config.arch, n_out, pretrained=False, n_in=config.n_in, **config.model_kwargs)
    except RuntimeError as e:  # timm's "Unknown model"
        raise ExportError(
            f"{CONFIG_FILE}: arch {config.arch!r} is neither a timm model nor one of {list(SCRATCH_MODELS)}: {e}"
        ) from None
    return model


def export_learner(
    learn: Learner,
    folder: Path | str,
    record: dict[str, Any] | None = None,
    *,
    include_pickle: bool = True,
    repo_id: str | None = None,
    **config: Any,
) -> Path:
    """Write `learn` to `folder` as ``model.safetensors``, ``config.json`` and a model card ``README.md``.

    `config` are `export_config`'s keywords (arch, image_size, dataset, multi_label, threshold,
    model_kwargs, normalisation): what the learner was built with, recorded as given. `record` is the
    run's results record (metrics.results_record): the card reports its metrics and training setup.
    `include_pickle` adds fastai's ``model.pkl`` and the ``pyproject.toml`` that
    `huggingface_hub.from_pretrained_fastai` reads, for `load_learner` users (it needs the learner to be
    picklable). `repo_id` is the Hub repo the card's usage example names.
    """
    folder = Path(folder)
    exported = export_config(learn, **config)
    state = {k: v.detach().to("cpu").contiguous() for k, v in learn.model.state_dict().items()}
    # Rebuild-and-load now, so an export that could not be loaded back is never written.
    try:
        build_model(exported).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(
            f"the learner's network is not the one build_model makes for arch {exported.arch!r} with model_kwargs "
            f"{exported.model_kwargs} (another arch, timm arguments, or a custom head?), so its export could not be "
            f"loaded back: {str(e)[:300]}"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(exported.to_json(), encoding="utf-8")
    if include_pickle:
        from huggingface_hub.fastai_utils import PYPROJECT_TEMPLATE

        # fastai's own export (dls emptied, optimizer dropped), as push_to_hub_fastai writes it.
        learn.export(folder.resolve() / PICKLE_FILE, pickle_protocol=DEFAULT_PROTOCOL)
        (folder / "pyproject.toml").write_text(PYPROJECT_TEMPLATE, encoding="utf-8")
    card = model_card(exported, record, repo_id=repo_id, include_pickle=include_pickle)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- loading


def _is_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _locate(source: Path | str, revision: str | None, trust_pickle: bool) -> Path:
    """A local folder for `source`: the folder itself, or the Hub repo's snapshot in the local cache."""
    path = Path(source)
    if path.is_dir():
        return path
    if isinstance(source, str) and _is_repo_id(source):
        # The untrusted path never even downloads the pickle.
        patterns = [CONFIG_FILE, WEIGHTS_FILE] + ([PICKLE_FILE] if trust_pickle else [])
        try:
            return Path(snapshot_download(repo_id=source, revision=revision, allow_patterns=patterns))
        except (HfHubHTTPError, LocalEntryNotFoundError) as e:
            raise ExportNotFound(f"{source} is no local folder, and the Hugging Face Hub could not provide it: {e}") from e
    raise ExportNotFound(f"{source} is neither a folder nor a Hugging Face Hub repo id (owner/name)")


def _check_weights(path: Path, model: nn.Module) -> None:
    """Keys and shapes of the safetensors file against the rebuilt model, read from its header alone."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k]} (expected {expected[k]})" for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
    if missing or unexpected or wrong:
        problems = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                    f"wrong shapes: {wrong[:5]}" if wrong else ""]
        raise ExportError(
            f"{path} does not fit the model its config.json describes: {'; '.join(p for p in problems if p)}. "
            "Were the weights and the config written by the same export_learner call?"
        )


def load_exported(source: Path | str, *, trust_pickle: bool = False, revision: str | None = None) -> TorchPredictor:
    """A `predict.TorchPredictor` for an export folder, or a Hub repo id (``owner/name``) holding one.

    By default only ``config.json`` (JSON) and ``model.safetensors`` (tensors) are read: nothing is
    unpickled, so a planted ``model.pkl`` cannot run. `trust_pickle=True` loads fastai's ``model.pkl``
    with `load_learner` instead, which runs whatever code the file holds: only for sources you trust.
    """
    folder = _locate(source, revision, trust_pickle)
    config = read_config(folder)
    if trust_pickle:
        from fastai.learner import load_learner

        if not (folder / PICKLE_FILE).is_file():
            raise ExportNotFound(f"{folder / PICKLE_FILE} does not exist; load without trust_pickle to read the safetensors")
        learn = load_learner(folder / PICKLE_FILE, cpu=True)
        return TorchPredictor(config, learn.model, learner=learn)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        hint = ""
        if (folder / PICKLE_FILE).is_file():
            hint = (f" It has {PICKLE_FILE}, which can run arbitrary code when loaded: pass trust_pickle=True only "
                    "if you trust its source.")
        raise ExportNotFound(f"{weights} does not exist.{hint}")
    model = build_model(config)
    _check_weights(weights, model)
    model.load_state_dict(load_file(weights), strict=True)
    return TorchPredictor(config, model)
