"""ONNX: an exported model as one portable graph, and a predictor that runs it on onnxruntime.

onnxruntime predicts on a CPU without PyTorch or fastai, faster and with a smaller install, which is what a
demo server or an app wants. The graph holds the network only; images are prepared from ``config.json``
by `predict.preprocess` exactly as for the PyTorch `predict.TorchPredictor`, so both give the same answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .export import ExportError, ExportNotFound, load_exported, read_config
from .predict import Predictor

__all__ = ["ONNX_FILE", "export_onnx", "OnnxPredictor"]

ONNX_FILE = "model.onnx"
INPUT, OUTPUT = "images", "logits"


class _GlobalMaxPool(torch.nn.Module):
    """``nn.AdaptiveMaxPool2d(1)`` as a max over height and width: the same numbers, in ops every exporter has.

    fastai's head pools with ``AdaptiveConcatPool2d(1)``; torch 2.11's ONNX exporter (Colab's, Python 3.13)
    has no translation for ``aten.adaptive_max_pool2d`` ("No ONNX function found", CI's Colab job), later
    ones do. ``amax`` exports everywhere.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1), keepdim=True)


def _exportable(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with each global adaptive max pool swapped for `_GlobalMaxPool` (in place: the model is ours)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, torch.nn.AdaptiveMaxPool2d) and child.output_size in (1, (1, 1))
                    and not child.return_indices):
                setattr(module, name, _GlobalMaxPool())
    return model


def export_onnx(model_dir: Path | str, out: Path | str | None = None, opset: int | None = None) -> Path:
    """Write the network of the export in `model_dir` as an ONNX graph (default ``model_dir/model.onnx``).

    The weights come from the export's safetensors, never from its pickle. The batch dimension is
    dynamic, so one graph takes one image or many.
    """
    model_dir = Path(model_dir)
    predictor = load_exported(model_dir)
    config = predictor.config
    out = Path(out) if out is not None else model_dir / ONNX_FILE
    # Two images: torch.export would fix a batch of one to the constant 1.
    example = torch.zeros(2, config.n_in, config.image_size, config.image_size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        _exportable(predictor.model.eval()),
        (example,),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        verbose=False,
        external_data=False,
    )
    program.save(str(out), external_data=False)
    return out


class OnnxPredictor(Predictor):
    """`predict.Predictor` with the network run by onnxruntime: the same preprocessing, labels and scores."""

    def __init__(self, model_dir: Path | str, onnx_file: Path | str | None = None, threads: int | None = None):
        model_dir = Path(model_dir)
        onnx_file = Path(onnx_file) if onnx_file is not None else model_dir / ONNX_FILE
        if not onnx_file.is_file():
            raise ExportNotFound(f"{onnx_file} does not exist; write it with onnx_export.export_onnx({str(model_dir)!r})")
        super().__init__(read_config(model_dir))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        expected = [self.config.n_in, self.config.image_size, self.config.image_size]
        if list(shape[1:]) != expected:
            raise ExportError(f"{onnx_file} takes images of shape {shape[1:]}, but config.json says {expected}: "
                             "export it again with export_onnx")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: batch})[0]
