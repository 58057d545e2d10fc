"""The demo: a gradio page that serves an exported model, and the Hugging Face Space folder that hosts it.

Upload an image, see the top classes with their probabilities (for a multi-label model, every class above
the threshold). The model is loaded the safe way (safetensors + config.json, nothing unpickled).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
from huggingface_hub import SpaceCard, SpaceCardData
from PIL import Image

from .colab import package_requirement
from .export import CONFIG_FILE, WEIGHTS_FILE, ExportError, ExportNotFound, load_exported, read_config

__all__ = ["build_demo", "serve", "write_space", "PACKAGE_REQUIREMENT"]

# How a Space installs this package: from its repository, as the notebooks' Colab cell does.
PACKAGE_REQUIREMENT = package_requirement()  # this version's tag, as the notebooks' install cell


def build_demo(model_dir: Path | str, *, top_k: int = 5, title: str | None = None) -> gr.Interface:
    """A gradio Interface around the export in `model_dir` (a folder, or a Hub repo id)."""
    predictor = load_exported(model_dir)
    config = predictor.config

    def classify(image: Image.Image | None) -> dict[str, float]:
        if image is None:
            raise gr.Error("Upload an image first.")
        return predictor.scores(image, top_k=top_k)

    if config.multi_label:
        how = f"every class it gives a probability above {config.threshold:.0%} (a photo may show several)"
    else:
        how = f"the {min(top_k, len(config.classes))} most likely of its {len(config.classes)} classes"
    return gr.Interface(
        fn=classify,
        inputs=gr.Image(type="pil", image_mode=config.image_mode, label="image", sources=["upload", "clipboard"], height=320),
        outputs=gr.Label(num_top_classes=None if config.multi_label else top_k, label="prediction"),
        title=title or f"{config.arch}: {len(config.classes)} classes",
        description=f"Upload an image: the model shows {how}. Images are squished to "
        f"{config.image_size}x{config.image_size} pixels, as in training.",
        flagging_mode="never",
        analytics_enabled=False,
        api_name="predict",  # the endpoint gradio_client and the "Use via API" page call
    )


def serve(model_dir: Path | str, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True) -> gr.Interface:
    """Serve the demo on `host`:`port` (loopback by default: pass ``0.0.0.0`` to share it on the network).

    With `block` the call returns when the server stops (Ctrl+C); without, it returns the running demo
    at once, and `demo.close()` stops it.
    """
    demo = build_demo(model_dir)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False, quiet=not block)
    return demo


_SPACE_APP = '''"""A Hugging Face Space: the vision-studies demo of the model in ./model."""

from pathlib import Path

from vision_studies.app import build_demo

demo = build_demo(Path(__file__).parent / "model")

if __name__ == "__main__":
    demo.launch()
'''

_SPACE_README = """---
{{ card_data }}
---

# {{ title }}

A demo of an image classifier trained with the Vision Studies notebooks: upload an image, see what the
model makes of it. The model is `{{ arch }}` for {{ n_classes }} classes, in `model/` as safetensors weights
and a JSON configuration (nothing in this Space unpickles a file).
"""


def write_space(model_dir: Path | str, out: Path | str, *, title: str | None = None, model_repo: str | None = None) -> Path:
    """Write a ready Hugging Face Space to `out`: ``app.py``, ``requirements.txt``, a ``README.md`` with the
    Space header, and the model's safe files in ``model/``. Upload it with
    ``huggingface_hub.upload_folder(repo_id=..., repo_type="space", folder_path=out)``.

    `model_repo` (the model's Hub repo id) is listed in the header, which links the Space to it.
    """
    model_dir, out = Path(model_dir), Path(out)
    config = read_config(model_dir)  # checks it is an export before anything is written
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise ExportNotFound(f"{model_dir / WEIGHTS_FILE} does not exist; export the learner with export.export_learner first")
    if out.resolve() == model_dir.resolve():
        raise ExportError(f"write the Space to a folder of its own, not into the export {model_dir}")
    (out / "model").mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):  # never the pickle
        shutil.copyfile(model_dir / name, out / "model" / name)
    (out / "app.py").write_text(_SPACE_APP, encoding="utf-8")
    (out / "requirements.txt").write_text(PACKAGE_REQUIREMENT + "\n", encoding="utf-8")
    title = title or f"{config.arch} classifier"
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gr.__version__,
        app_file="app.py",
        license="mit",
        models=[model_repo] if model_repo else None,
        tags=["image-classification", "vision-studies"],
        emoji="🔎",
        colorFrom="blue",
        colorTo="green",
        pinned=False,
        short_description=f"{config.arch} image classifier, {len(config.classes)} classes"[:60],  # the Hub's limit
    )
    card = SpaceCard.from_template(
        card_data, template_str=_SPACE_README, title=title, arch=config.arch, n_classes=len(config.classes)
    )
    (out / "README.md").write_text(str(card), encoding="utf-8")
    return out
