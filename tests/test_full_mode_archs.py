"""Every full-mode backbone of every study exists in timm with pretrained weights to download, and builds.

Built on PyTorch's ``meta`` device: shapes without memory, and nothing is downloaded (pretrained=False), so
the test checks in seconds what a learner's Colab run would otherwise find out after the dataset download.
"""

from __future__ import annotations

import pytest
import timm
import torch

from vision_studies.models import SCRATCH_MODELS
from vision_studies.studies import STUDIES

FULL_ARCHS = sorted({(name, arch) for name, study in STUDIES.items()
                     for arch in (getattr(study.full, "archs", ()) or ()) + (study.full.arch,)
                     if study.full.pretrained and arch not in SCRATCH_MODELS})


def test_every_study_has_a_pretrained_full_mode_arch():
    assert {name for name, _ in FULL_ARCHS} == {n for n, s in STUDIES.items() if s.full.pretrained}
    assert len(FULL_ARCHS) >= 10


@pytest.mark.parametrize("study, arch", FULL_ARCHS)
def test_full_mode_arch_has_a_pretrained_source_and_builds_on_meta(study, arch):
    cfg = timm.models.get_pretrained_cfg(arch, allow_unregistered=False)
    assert cfg is not None, f"{study}: timm has no pretrained config for {arch}"
    assert cfg.hf_hub_id or cfg.url, f"{study}: {arch} names no download source"
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=7)
    assert next(model.parameters()).device.type == "meta"
    assert model.get_classifier().out_features == 7  # the head the study would train
