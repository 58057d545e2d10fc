#!/usr/bin/env python
"""The GPU paths a learner's run takes, run for real on a CUDA GPU: study 08's fixture fine-tuned through
`vision-studies train` (real EfficientNet-Lite0 weights, 224 px) once in each mixed precision our `fit` can
choose on the card it runs on:

- bf16, what `train.amp_mode` picks from compute capability 8.0 (A100, L4, H100), with no gradient scaler;
- fp16 with a gradient scaler, what it picks for Colab's T4 (7.5); forced here on newer cards too.

    python scripts/gpu_check.py            # exits 1 without a CUDA device

Each run prints the precision that trained, the scaler's scales (fp16), whether the weights were channels-last,
the held-out metrics, and the seconds the fit took. The timings of training steps against a plain loop are
the benchmark's (`python scripts/benchmark.py --only gpu`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine")
        return 1
    from vision_studies import cli, pipeline, train

    capability = torch.cuda.get_device_capability()
    print(f"{torch.cuda.get_device_name()}, compute capability {capability}, torch {torch.__version__}; "
          f"amp_mode picks {train.amp_mode(capability)} here")
    seen: dict = {}
    chosen = train.amp_mode
    after_fit, fit = train.AutocastPrecision.after_fit, pipeline.fit

    def record_scales(self):
        """fastai's MixedPrecision forgets its scales after each fit, and `get_preds` runs a fit's events too
        (no steps): gather every fit's scales while the scaler is on (fp16; bf16 leaves it off)."""
        if self.learn.scaler.is_enabled():
            seen.setdefault("scales", []).extend(float(s) for s in self.scales)
        after_fit(self)

    def spy_fit(learn, *args, **kwargs):
        done = fit(learn, *args, **kwargs)
        cb = next(c for c in learn.cbs if isinstance(c, train.AutocastPrecision))
        weight = next(p for p in learn.model.parameters() if p.dim() == 4)
        seen.update(precision=cb.amp_mode.value, channels_last=weight.is_contiguous(memory_format=torch.channels_last),
                    seconds=done.seconds)
        return done

    train.AutocastPrecision.after_fit, pipeline.fit = record_scales, spy_fit  # the fit every entry point calls
    failed, chance = False, 1 / 37  # the fixture's 37 breeds
    try:
        # bf16 only where amp_mode would choose it: below compute 8.0 (a T4) it is emulated, and convolutions crawl
        for mode in ("bf16", "fp16") if chosen(capability) == "bf16" else ("fp16",):
            train.amp_mode = lambda capability, mode=mode: mode  # what fit asks for on this device
            seen.clear()
            with tempfile.TemporaryDirectory() as out:
                cli.main(["train", "08", "--fixture", "--image-size", "224", "--epochs", "2", "--output-dir", out,
                          "--data-dir", str(REPO / "data")])
                record = json.loads(next(Path(out).rglob("results.json")).read_text())
            metrics = {k: v for k, v in record["metrics"].items() if isinstance(v, float)}
            scales = seen.get("scales", [])
            print(f"{mode}: trained in {seen['precision']}, channels-last {seen['channels_last']}, "
                  f"fit {seen['seconds']:.1f} s, {len(scales)} scaled steps"
                  + (f" (scale {scales[0]:g} to {scales[-1]:g})" if scales else "") + f"; {metrics}")
            failed |= (seen["precision"] != mode or not seen["channels_last"] or (mode == "fp16") != bool(scales)
                       or not metrics["accuracy"] > 2 * chance)
    finally:
        train.amp_mode, train.AutocastPrecision.after_fit, pipeline.fit = chosen, after_fit, fit
    print("gpu_check:", "FAILED" if failed else "ok")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
