"""Share a trained learner safely: export to safetensors + config + model card, push to the Hub, load it back.

fastai's `load_learner` unpickles, and unpickling a file can run any code in it. So an export is
``model.safetensors`` (tensors only) and ``config.json`` (everything needed to rebuild the network and to
prepare an image for it), and loading reads just those two. The fastai ``model.pkl`` (with the
``pyproject.toml`` that `huggingface_hub.from_pretrained_fastai` checks) may sit beside them for
`load_learner` users; it is read only when the caller says it trusts the source (`trust_pickle=True`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from pickle import DEFAULT_PROTOCOL
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.vision.augment import Resize
from fastai.vision.learner import create_timm_model
from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.special import expit, softmax
from torch import nn
from torch.nn.parameter import is_lazy

from .models import SCRATCH_MODELS

__all__ = [
    "CONFIG_FILE", "WEIGHTS_FILE", "PICKLE_FILE", "EXPORT_FILES", "ExportConfig", "Predictions", "Predictor", "TorchPredictor",
    "export_learner", "learner_config", "build_model", "load_exported", "read_config", "preprocess", "model_card",
    "push_to_hub", "PushResult",
]

CONFIG_FILE, WEIGHTS_FILE, PICKLE_FILE = "config.json", "model.safetensors", "model.pkl"
# What an export folder may hold, and so all that `push_to_hub` uploads: a stray file in the folder
# (a notebook checkpoint, a .env) never leaves the machine by accident.
EXPORT_FILES = [CONFIG_FILE, WEIGHTS_FILE, "README.md", PICKLE_FILE, "pyproject.toml", "model.onnx"]
FORMAT_VERSION = 1

ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class ExportConfig:
    """Everything besides the weights that turns an image into a prediction: ``config.json``'s content."""

    arch: str  # a name in models.SCRATCH_MODELS, or a timm model name (the body under fastai's head)
    classes: tuple[str, ...]
    image_size: int  # images are squished to image_size x image_size
    image_mode: str  # "RGB" or "L": what PIL converts each image to
    mean: tuple[float, ...] | None = None  # per-channel normalisation after scaling to [0, 1], if any
    std: tuple[float, ...] | None = None
    multi_label: bool = False  # sigmoid and a threshold instead of softmax and the top class
    threshold: float = 0.5
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # timm arguments that shape the network (img_size)
    format_version: int = FORMAT_VERSION
    library: str = "vision-studies"

    @property
    def n_in(self) -> int:
        return 1 if self.image_mode == "L" else 3

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path | str = CONFIG_FILE) -> "ExportConfig":
        """Check every field's type and value, naming the file and the field that is wrong."""
        known = {f for f in cls.__dataclass_fields__}
        missing = sorted({"arch", "classes", "image_size", "image_mode"} - set(data))
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}; re-export the model with hub.export_learner")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown fields {', '.join(unknown)}; was it written by hub.export_learner?")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{where}: format_version {version!r} is not one this package reads; upgrade vision-studies")

        def check(name: str, ok: bool, wanted: str) -> None:
            if not ok:
                raise ValueError(f"{where}: {name} should be {wanted}, not {data[name]!r}")

        check("arch", isinstance(data["arch"], str) and data["arch"] != "", "a model name")
        check("classes", isinstance(data["classes"], list) and len(data["classes"]) > 0
              and all(isinstance(c, str) for c in data["classes"]), "a non-empty list of class names")
        check("image_size", isinstance(data["image_size"], int) and data["image_size"] > 0, "a positive integer")
        check("image_mode", data["image_mode"] in ("RGB", "L"), '"RGB" or "L"')
        n_in = 1 if data["image_mode"] == "L" else 3
        for name in ("mean", "std"):
            if data.get(name) is not None:
                check(name, isinstance(data[name], list) and len(data[name]) == n_in
                      and all(isinstance(v, (int, float)) for v in data[name]), f"a list of {n_in} numbers or null")
        check("multi_label", isinstance(data.get("multi_label", False), bool), "true or false")
        check("model_kwargs", isinstance(data.get("model_kwargs", {}), dict), "an object of timm arguments")
        threshold = data.get("threshold", 0.5)
        check("threshold", isinstance(threshold, (int, float)) and 0 < threshold < 1, "a number between 0 and 1")
        tuples = {k: tuple(data[k]) for k in ("classes", "mean", "std") if data.get(k) is not None}
        return cls(**{**data, **tuples})


class Predictions(NamedTuple):
    """`probs`: one row per image, one column per class. `labels`: the top class of each image, or for
    a multi-label model the list of classes above the threshold (fastai's rule for multi-label)."""

    probs: np.ndarray
    labels: list


def read_config(folder: Path | str) -> ExportConfig:
    """The `ExportConfig` in ``folder/config.json``: plain JSON, checked field by field."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {folder} a folder written by hub.export_learner?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} should hold a JSON object")
    return ExportConfig.from_dict(data, path)


def _open(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    with Image.open(image) as im:
        im.load()
        return im


def preprocess(images: ImageInput | Sequence[ImageInput], config: ExportConfig) -> np.ndarray:
    """A float32 batch (N, C, H, W), prepared exactly as fastai prepares a validation image.

    PIL converts to the dataset's mode and squishes to `image_size` with bilinear resampling (fastai's
    ``Resize(size, method='squish')``), the pixels scale to [0, 1], and the pretrained model's
    normalisation applies when the learner had one.
    """
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    size = config.image_size
    arrays = []
    for image in images:
        im = _open(image).convert(config.image_mode).resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.float32).reshape(size, size, config.n_in))
    batch = np.stack(arrays).transpose(0, 3, 1, 2) / np.float32(255)
    if config.mean is not None:
        mean = np.asarray(config.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(config.std, dtype=np.float32).reshape(1, -1, 1, 1)
        batch = (batch - mean) / std
    return np.ascontiguousarray(batch, dtype=np.float32)


class Predictor:
    """An exported model ready to predict: `config` prepares the images, `logits` runs the network.

    `TorchPredictor` runs the network with PyTorch; `onnx_export.OnnxPredictor` with onnxruntime.
    """

    def __init__(self, config: ExportConfig):
        self.config = config

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores (N, classes) for a batch from `preprocess`."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return expit(logits) if self.config.multi_label else softmax(logits, axis=1)

    def decode(self, probs: np.ndarray) -> list:
        classes = self.config.classes
        if self.config.multi_label:
            return [[classes[i] for i in np.flatnonzero(row > self.config.threshold)] for row in probs]
        return [classes[i] for i in probs.argmax(axis=1)]

    def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 64) -> Predictions:
        """Probabilities and labels for one image or many (paths or PIL images), `batch_size` at a time."""
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("predict() got no images")
        probs = np.concatenate([
            self.probabilities(self.logits(preprocess(images[i : i + batch_size], self.config)))
            for i in range(0, len(images), batch_size)
        ])
        return Predictions(probs, self.decode(probs))

    def scores(self, image: ImageInput, top_k: int = 5) -> dict[str, float]:
        """What a person wants to see for one image: the `top_k` classes with their probabilities, or for
        a multi-label model every class above the threshold."""
        probs = self.predict(image).probs[0]
        order = np.argsort(-probs, kind="stable")
        if self.config.multi_label:
            order = [i for i in order if probs[i] > self.config.threshold]
        else:
            order = order[:top_k]
        return {self.config.classes[i]: float(probs[i]) for i in order}


class TorchPredictor(Predictor):
    """A `Predictor` that runs the PyTorch network on the CPU."""

    def __init__(self, config: ExportConfig, model: nn.Module, learner: Learner | None = None):
        super().__init__(config)
        self.model = model.eval()
        self.learner = learner  # the fastai Learner, on the trusted pickle path only

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).float().numpy()


# ---------------------------------------------------------------------------------------------- export


def _arch(learn: Learner) -> str:
    arch = getattr(learn, "arch", None)  # vision_learner records the timm name it was given
    if isinstance(arch, str):
        return arch
    for name, cls in SCRATCH_MODELS.items():
        if type(learn.model) is cls:
            return name
    raise ValueError(
        "cannot tell which architecture this learner is: export_learner rebuilds models.build_learner's "
        f"models (timm names through vision_learner, or {', '.join(SCRATCH_MODELS)}); pass arch= to name it"
    )


def _image_size(learn: Learner) -> int:
    sizes = [t.size for t in learn.dls.valid.after_item.fs if isinstance(t, Resize)]
    if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
        raise ValueError(
            f"the learner's validation images should be squished to one square size (found {sizes}); "
            "build the DataLoaders with data.dataloaders, or pass image_size="
        )
    return int(sizes[0][0])


def _normalisation(learn: Learner) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    found = [t for t in learn.dls.valid.after_batch.fs if isinstance(t, Normalize)]
    if not found:
        return None, None
    norm = found[0]
    return tuple(norm.mean.flatten().tolist()), tuple(norm.std.flatten().tolist())


def _n_in(model: nn.Module) -> int:
    # The stem is the first convolution: how many channels the network takes.
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the model has no convolution to tell its input channels from")
    return conv.in_channels


def _multi_label(learn: Learner) -> tuple[bool, float]:
    loss = learn.loss_func
    inner = getattr(loss, "func", loss)  # fastai's flattened losses wrap the torch one
    if isinstance(inner, nn.BCEWithLogitsLoss):
        return True, float(getattr(loss, "thresh", 0.5))
    if isinstance(inner, nn.CrossEntropyLoss):
        return False, 0.5
    raise ValueError(
        f"cannot tell from the loss {type(loss).__name__} whether the model is multi-label; pass multi_label= "
        "(and threshold=) to export_learner"
    )


# timm arguments that change a network's shapes, which vision_learner keeps as attributes of the learner.
_SHAPE_KWARGS = ("img_size",)


def learner_config(
    learn: Learner,
    *,
    arch: str | None = None,
    image_size: int | None = None,
    multi_label: bool | None = None,
    threshold: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> ExportConfig:
    """The `ExportConfig` of `learn`, read from the learner itself: its model, its validation transforms,
    its loss; the keyword arguments override what cannot be read (`model_kwargs`: what was passed to
    models.build_learner for timm, when it changes the network's shapes)."""
    n_in = _n_in(learn.model)
    if n_in not in (1, 3):
        raise ValueError(f"the model takes {n_in} input channels; exports handle grayscale (1) or RGB (3) images")
    found_multi, found_threshold = _multi_label(learn) if multi_label is None else (multi_label, 0.5)
    mean, std = _normalisation(learn)
    return ExportConfig(
        arch=arch or _arch(learn),
        classes=tuple(str(c) for c in learn.dls.vocab),
        image_size=image_size or _image_size(learn),
        image_mode="L" if n_in == 1 else "RGB",
        mean=mean,
        std=std,
        multi_label=found_multi,
        threshold=threshold if threshold is not None else found_threshold,
        model_kwargs=dict(model_kwargs) if model_kwargs is not None
        else {k: v for k, v in vars(learn).items() if k in _SHAPE_KWARGS},
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
        raise ValueError(
            f"{CONFIG_FILE}: arch {config.arch!r} is neither a timm model nor one of {list(SCRATCH_MODELS)}: {e}"
        ) from None
    return model


def export_learner(
    learn: Learner,
    folder: Path | str,
    record: dict[str, Any] | None = None,
    *,
    include_pickle: bool = True,
    dataset: str | None = None,
    repo_id: str | None = None,
    **overrides: Any,
) -> Path:
    """Write `learn` to `folder` as ``model.safetensors``, ``config.json`` and a model card ``README.md``.

    `record` is the run's results record (metrics.results_record): the card reports its data, metrics
    and training setup. `include_pickle` adds fastai's ``model.pkl`` and the ``pyproject.toml`` that
    `huggingface_hub.from_pretrained_fastai` reads, for `load_learner` users (it needs the learner to be
    picklable). `dataset` names the registry entry the card describes (default: the record's
    ``dataset``, else the registry name the study ends with). `overrides` go to `learner_config`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = learner_config(learn, **overrides)
    state = {k: v.detach().to("cpu").contiguous() for k, v in learn.model.state_dict().items()}
    # Rebuild-and-load now, so an export that could not be loaded back is never written.
    try:
        build_model(config).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"the learner's network is not the one build_model makes for arch {config.arch!r} (a custom head or "
            f"body?), so its export could not be loaded back: {str(e)[:300]}"
        ) from None
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
    if include_pickle:
        from huggingface_hub.fastai_utils import PYPROJECT_TEMPLATE

        # fastai's own export (dls emptied, optimizer dropped), as push_to_hub_fastai writes it.
        learn.export(folder.resolve() / PICKLE_FILE, pickle_protocol=DEFAULT_PROTOCOL)
        (folder / "pyproject.toml").write_text(PYPROJECT_TEMPLATE, encoding="utf-8")
    card = model_card(config, record, dataset=dataset, repo_id=repo_id, include_pickle=include_pickle)
    (folder / "README.md").write_text(str(card), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- the card

_CARD = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## Data
{{ data }}

## Results
{% if metrics %}| metric | value |
|---|---|
{% for name, value in metrics.items() %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}No results record was given with this export.{% endif %}

## Training
{% for name, value in training.items() %}- {{ name }}: {{ value }}
{% endfor %}
## How to use
Without unpickling anything (the weights are safetensors, the configuration plain JSON):
```python
from vision_studies.hub import load_exported

model = load_exported("{{ source }}")
probs, labels = model.predict(["photo.jpg"])
```
{% if include_pickle %}fastai users can load the full Learner, which unpickles `model.pkl`: do so only if you trust
this repository.
```python
from huggingface_hub import from_pretrained_fastai

learn = from_pretrained_fastai("{{ source }}")
```
{% endif %}
## Intended use and limits
{{ limits }}
"""


# Our metric names -> the Hub's metric ids, for the card's metadata.
_HUB_METRICS = {"accuracy": "accuracy", "f1_macro": "f1", "precision_macro": "precision", "recall_macro": "recall"}


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 4) for v in values]


def _dataset_spec(record: dict[str, Any] | None, dataset: str | None):
    from .registry import DATASETS

    name = dataset or (record or {}).get("dataset")
    if name is None and record and "study" in record:
        name = next((n for n in DATASETS if str(record["study"]).endswith(n)), None)
    return DATASETS.get(name) if name else None


def model_card(
    config: ExportConfig,
    record: dict[str, Any] | None = None,
    *,
    dataset: str | None = None,
    repo_id: str | None = None,
    include_pickle: bool = True,
) -> ModelCard:
    """A model card filled from the config and the results record: data, metrics, training, use, limits."""
    record = record or {}
    spec = _dataset_spec(record, dataset)
    fixture = bool(record.get("fixture", False))
    task = "multi-label" if config.multi_label else "single-label"
    names = ", ".join(config.classes[:40]) + (f" and {len(config.classes) - 40} more" if len(config.classes) > 40 else "")
    about = f"[{spec.title}]({spec.homepage}), licence {spec.licence}" if spec else "an image dataset (not named)"
    data = (
        f"Trained on {'the tiny generated fixture version of ' if fixture else ''}{about}. "
        f"{len(config.classes)} classes ({task}): {names}. Images are converted to {config.image_mode} and "
        f"squished to {config.image_size}x{config.image_size} pixels"
        + (f", then normalised with mean {_rounded(config.mean)} and std {_rounded(config.std)}." if config.mean else ".")
    )
    metrics = {
        k: round(v, 4) for k, v in record.get("metrics", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if "n" in metrics:
        metrics["images evaluated"] = metrics.pop("n")
    keys = ("arch", "pretrained", "weights", "epochs", "lr", "batch_size", "augment", "seed", "device", "seconds")
    training = {k: record[k] for k in keys if k in record and record[k] not in ("", None)}
    training.setdefault("arch", config.arch)
    if "weights" in training:  # a local file: its name says which weights, its folder is nobody's business
        training["weights"] = Path(str(training["weights"])).name
    if config.multi_label:
        training["threshold"] = config.threshold
    if "versions" in record:
        training["versions"] = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    limits = (
        "Made to teach transfer learning (the Vision Studies notebooks). It knows only the classes above and "
        "gives one of them (or, multi-label, those above the threshold) for any image, even one of none of "
        "them; expect it to be worse on photos unlike its training data (other cameras, light, framing). "
        "Do not use it for decisions that matter to people or animals."
    )
    if fixture:
        limits = (
            "**This model was trained on a tiny fixture dataset made for testing: it shows that the pipeline "
            "works and is not a useful classifier.** " + limits
        )
    card_data = ModelCardData(
        library_name="fastai" if include_pickle else None,
        pipeline_tag="image-classification",
        tags=["image-classification", "vision-studies", "safetensors"] + (["fastai"] if include_pickle else []),
        metrics=sorted({_HUB_METRICS[k] for k in metrics if k in _HUB_METRICS}) or None,
    )
    study = record.get("study", "vision-studies")
    return ModelCard.from_template(
        card_data,
        template_str=_CARD,
        title=f"{study}: {config.arch}" + (f" on {spec.title}" if spec else ""),
        summary=f"A {task} image classifier made with fastai and timm by the Vision Studies notebooks.",
        data=data, metrics=metrics, training=training, limits=limits, include_pickle=include_pickle,
        source=repo_id or "owner/name (or the path of this folder)",
    )


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
            raise FileNotFoundError(f"{source} is no local folder, and the Hugging Face Hub could not provide it: {e}") from e
    raise FileNotFoundError(f"{source} is neither a folder nor a Hugging Face Hub repo id (owner/name)")


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
        raise ValueError(
            f"{path} does not fit the model its config.json describes: {'; '.join(p for p in problems if p)}. "
            "Were the weights and the config written by the same export_learner call?"
        )


def load_exported(source: Path | str, *, trust_pickle: bool = False, revision: str | None = None) -> TorchPredictor:
    """A `Predictor` for an export folder, or a Hub repo id (``owner/name``) holding one.

    By default only ``config.json`` (JSON) and ``model.safetensors`` (tensors) are read: nothing is
    unpickled, so a planted ``model.pkl`` cannot run. `trust_pickle=True` loads fastai's ``model.pkl``
    with `load_learner` instead, which runs whatever code the file holds: only for sources you trust.
    """
    folder = _locate(source, revision, trust_pickle)
    config = read_config(folder)
    if trust_pickle:
        from fastai.learner import load_learner

        if not (folder / PICKLE_FILE).is_file():
            raise FileNotFoundError(f"{folder / PICKLE_FILE} does not exist; load without trust_pickle to read the safetensors")
        learn = load_learner(folder / PICKLE_FILE, cpu=True)
        return TorchPredictor(config, learn.model, learner=learn)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        hint = ""
        if (folder / PICKLE_FILE).is_file():
            hint = (f" It has {PICKLE_FILE}, which can run arbitrary code when loaded: pass trust_pickle=True only "
                    "if you trust its source.")
        raise FileNotFoundError(f"{weights} does not exist.{hint}")
    model = build_model(config)
    _check_weights(weights, model)
    model.load_state_dict(load_file(weights), strict=True)
    return TorchPredictor(config, model)


# ---------------------------------------------------------------------------------------------- the Hub


@dataclass
class PushResult:
    """What `push_to_hub` uploaded, or would upload on a dry run: paths in the repo and their sizes."""

    repo_id: str
    files: list[tuple[str, int]]
    dry_run: bool
    url: str | None = None

    def __str__(self) -> str:
        head = f"{'would upload' if self.dry_run else 'uploaded'} to {self.repo_id}" + (f" ({self.url})" if self.url else "")
        return "\n".join([head] + [f"  {name}  {size:,} bytes" for name, size in self.files])


def push_to_hub(
    folder: Path | str,
    repo_id: str,
    *,
    private: bool | None = None,
    dry_run: bool = False,
    commit_message: str = "Upload model exported by vision-studies",
    endpoint: str | None = None,
) -> PushResult:
    """Create the model repo `repo_id` if needed and upload the export in `folder` in one commit.

    The token is huggingface_hub's own lookup (the ``HF_TOKEN`` environment variable, or the login saved
    by ``hf auth login``); it is never an argument here, so it cannot end up in a notebook's parameters
    or its output. `dry_run` lists what would be uploaded and touches neither the network nor the token.
    """
    folder = Path(folder)
    read_config(folder)  # refuse to upload a folder that is not an export
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{folder / WEIGHTS_FILE} does not exist; export the learner with export_learner first")
    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    names = list(filter_repo_objects(local, allow_patterns=EXPORT_FILES, ignore_patterns=DEFAULT_IGNORE_PATTERNS))
    files = [(name, (folder / name).stat().st_size) for name in names]
    if dry_run:
        return PushResult(repo_id, files, dry_run=True)
    if get_token() is None:
        raise PermissionError(
            "no Hugging Face token found: log in once with `hf auth login`, or set the HF_TOKEN environment "
            "variable (never put the token in a notebook or its parameters)"
        )
    api = HfApi(endpoint=endpoint)
    repo = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo.repo_id, repo_type="model", folder_path=folder, allow_patterns=EXPORT_FILES,
        commit_message=commit_message,
    )
    return PushResult(repo.repo_id, files, dry_run=False, url=commit.commit_url)
