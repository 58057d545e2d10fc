"""The model card: what an export is, what it was trained on (and under which licence), how well it does.

Filled from the export's own `ExportConfig` (which names the dataset as the registry describes it) and the
run's results record; written by `export.export_learner` as the export folder's ``README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from huggingface_hub import ModelCard, ModelCardData

if TYPE_CHECKING:  # annotations only: export.py writes the card, so importing it here would be a cycle
    from .export import ExportConfig

__all__ = ["model_card"]

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
from vision_studies.export import load_exported

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


def model_card(
    config: ExportConfig,
    record: dict[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    include_pickle: bool = True,
) -> ModelCard:
    """A model card filled from the config and the results record: data, metrics, training, use, limits.

    The data section names the dataset, its homepage and its licence as `config` recorded them from the
    registry; an export of a dataset the registry does not know says so instead of guessing one.
    """
    record = record or {}
    fixture = bool(record.get("fixture", False))
    task = "multi-label" if config.multi_label else "single-label"
    names = ", ".join(config.classes[:40]) + (f" and {len(config.classes) - 40} more" if len(config.classes) > 40 else "")
    if config.dataset_title:
        title = f"[{config.dataset_title}]({config.homepage})" if config.homepage else config.dataset_title
        about = f"{title}, licence: {config.licence or 'not recorded'}"
    else:
        about = "a dataset of the user's own (no registry entry names it, so no licence is recorded)"
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
        title=f"{study}: {config.arch}" + (f" on {config.dataset_title}" if config.dataset_title else ""),
        summary=f"A {task} image classifier made with fastai and timm by the Vision Studies notebooks.",
        data=data, metrics=metrics, training=training, limits=limits, include_pickle=include_pickle,
        source=repo_id or "owner/name (or the path of this folder)",
    )
