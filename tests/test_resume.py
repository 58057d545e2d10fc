"""Interrupted training: a killed run resumes from its last checkpoint and finishes as if never stopped.

The kill is real (SIGKILL to a training subprocess); in-process runs are stopped the way Jupyter's stop
button stops them (KeyboardInterrupt), then resumed and compared with an uninterrupted run, epoch by epoch.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from torch import nn

from vision_studies.train import BEST, CHECKPOINT, CheckpointError, fit, seed_everything

REPO = Path(__file__).resolve().parents[1]
BATCHES = 8  # per epoch: 256 training samples, batches of 32


class StopAfter(nn.Module):
    """A small two-part network that raises KeyboardInterrupt, as Jupyter's stop button does, on batch `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2)), nn.Linear(16, 2))
        self.stop_at, self.seen = stop_at, 0

    def forward(self, x):
        if self.training and self.stop_at is not None:
            self.seen += 1
            if self.seen > self.stop_at:
                raise KeyboardInterrupt
        return self.net(x)


def _learner(path: Path, stop_at: int | None = None, pretrained: bool = False) -> Learner:
    """`pretrained` is the record fastai's vision_learner keeps (``learn.pretrained``): fit fine-tunes by it."""
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(320, 8, generator=g)
    ds = list(zip(x, (x[:, 0] + x[:, 1] > 0).long()))
    learn = Learner(
        DataLoaders.from_dsets(ds[:256], ds[256:], bs=32, num_workers=0), StopAfter(stop_at),
        loss_func=CrossEntropyLossFlat(), metrics=[accuracy], path=path,
        splitter=lambda m: [list(m.net[0].parameters()), list(m.net[1].parameters())],  # body, head: for fine-tuning
    )
    learn.pretrained = pretrained
    return learn


def _interrupted(path: Path, stop_at: int, pretrained: bool = False, **kwargs) -> dict:
    """Run fit until the stop, and return the meta data of the checkpoint it left."""
    with pytest.raises(KeyboardInterrupt):
        fit(_learner(path, stop_at, pretrained), **kwargs)
    return torch.load(path / "models" / CHECKPOINT, weights_only=True)["meta"]


def _same_weights(a: Learner, b: Learner) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "fine_tune, stop_at, done",
    [
        (False, 2 * BATCHES + 3, 2),  # in the third of four epochs
        (True, 0 * BATCHES + 3, 0),  # in the frozen epoch: nothing saved yet, so it starts over
        (True, 1 * BATCHES + 3, 1),  # in the first unfrozen epoch, right after the frozen phase
        (True, 3 * BATCHES + 3, 3),  # in the unfrozen phase
    ],
)
def test_interrupted_fit_resumes_exactly_where_it_stopped(fine_tune, stop_at, done, tmp_path, capsys):
    kwargs = dict(epochs=4, lr=1e-2)
    reference = _learner(tmp_path / "whole", pretrained=fine_tune)
    whole = fit(reference, **kwargs)
    if done:
        assert len(_interrupted(tmp_path / "cut", stop_at, fine_tune, **kwargs)["history"]) == done
    else:
        with pytest.raises(KeyboardInterrupt):
            fit(_learner(tmp_path / "cut", stop_at, fine_tune), **kwargs)
    resumed = _learner(tmp_path / "cut", pretrained=fine_tune)
    run = fit(resumed, resume=True, **kwargs)
    # weights, optimizer, schedule and random generators all carried over: the same numbers, not just close
    assert run.history == whole.history and run.best_epoch == whole.best_epoch
    assert len(run.history) == 4 + fine_tune
    assert _same_weights(resumed, reference)  # the best epoch's, as an uninterrupted run keeps
    assert run.extra == ({"resumed_at_epoch": done} if done else {})
    printed = capsys.readouterr().out
    assert (f"resuming from {tmp_path / 'cut' / 'models' / CHECKPOINT}: {done} epoch(s) done" in printed) == bool(done)
    assert not (tmp_path / "cut" / "models" / CHECKPOINT).exists()  # a finished fit leaves no checkpoint


def test_early_stopping_counts_on_across_a_resume(tmp_path):
    kwargs = dict(epochs=10, lr=0.0, patience=2)  # lr 0: nothing ever improves
    whole = fit(_learner(tmp_path / "whole"), **kwargs)
    assert len(whole.history) == 3
    _interrupted(tmp_path / "cut", 2 * BATCHES + 1, **kwargs)
    assert fit(_learner(tmp_path / "cut"), resume=True, **kwargs).history == whole.history


def test_best_weights_lost_at_the_kill_are_rewritten_from_the_checkpoint(tmp_path):
    """A run killed between writing the checkpoint and the best weights loses nothing.

    Stopped right after the frozen epoch of a fine-tune, the unfrozen phase starts from that epoch's
    weights (the best, and only, one of its phase): they must come from the checkpoint, not a stale best.pth.
    """
    kwargs = dict(epochs=2, lr=1e-2)
    reference = _learner(tmp_path / "whole", pretrained=True)
    whole = fit(reference, **kwargs)
    meta = _interrupted(tmp_path / "cut", BATCHES + 1, pretrained=True, **kwargs)
    assert (meta["phase"], meta["phase_epochs_done"], meta["best_epoch"]) == (0, 1, 0)
    zeros = {k: torch.zeros_like(v) for k, v in reference.model.state_dict().items()}
    torch.save(zeros, tmp_path / "cut" / "models" / BEST)
    resumed = _learner(tmp_path / "cut", pretrained=True)
    assert fit(resumed, resume=True, **kwargs).history == whole.history
    assert _same_weights(resumed, reference)


def test_resume_without_a_checkpoint_trains_from_the_start(tmp_path, capsys):
    run = fit(_learner(tmp_path), 2, 1e-2, resume=True)
    assert len(run.history) == 2 and run.extra == {}
    assert f"no checkpoint at {tmp_path / 'models' / CHECKPOINT}: training from the start" in capsys.readouterr().out


def test_resume_with_other_arguments_is_refused(tmp_path):
    _interrupted(tmp_path, BATCHES + 1, epochs=3, lr=1e-2)
    with pytest.raises(CheckpointError, match=r"is from fit\(\{'epochs': 3.*not fit\(\{'epochs': 4.*same arguments"):
        fit(_learner(tmp_path), 4, 1e-2, resume=True)


def test_unreadable_checkpoint_says_to_delete_it(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / CHECKPOINT).write_bytes(b"PK\x03\x04 cut short")
    where = re.escape(str(tmp_path / "models" / CHECKPOINT))
    with pytest.raises(CheckpointError, match=f"cannot read the checkpoint {where}.*delete it"):
        fit(_learner(tmp_path), 2, 1e-2, resume=True)


class _Planted:
    """Unpickling this runs os.mkdir: what a malicious checkpoint would do with worse commands."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_planted_pickle_in_the_checkpoint_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "models").mkdir()
    torch.save({"model": {}, "meta": _Planted(marker)}, tmp_path / "models" / CHECKPOINT)
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        fit(_learner(tmp_path), 2, 1e-2, resume=True)
    assert not marker.exists()


def test_full_disk_is_a_clear_error_and_the_last_checkpoint_survives(tmp_path):
    """ENOSPC from the kernel: the file being written is a link to /dev/full, where every write fails so."""
    kwargs = dict(epochs=3, lr=1e-2)
    reference = fit(_learner(tmp_path / "whole"), **kwargs)
    _interrupted(tmp_path / "cut", BATCHES + 1, **kwargs)
    models = tmp_path / "cut" / "models"
    (models / (CHECKPOINT + ".tmp")).symlink_to("/dev/full")
    full = f"cannot save {CHECKPOINT} in {re.escape(str(models))} .No space left on device.; free space"
    with pytest.raises(CheckpointError, match=full) as err:
        fit(_learner(tmp_path / "cut"), resume=True, **kwargs)
    assert err.value.errno == errno.ENOSPC
    assert len(torch.load(models / CHECKPOINT, weights_only=True)["meta"]["history"]) == 1  # the old one, whole
    assert fit(_learner(tmp_path / "cut"), resume=True, **kwargs).history == reference.history


def test_model_folder_under_a_file_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    not_a_folder = f"cannot write checkpoints to {re.escape(str(tmp_path / 'file' / 'models'))} .Not a directory"
    with pytest.raises(CheckpointError, match=not_a_folder) as err:
        fit(_learner(tmp_path / "file"), 2, 1e-2)
    assert err.value.errno == errno.ENOTDIR and "train_loss" not in capsys.readouterr().out


# --- in a subprocess: a real kill, and a real read-only folder ----------------------------------------------

KILLABLE = """
import json, sys
from pathlib import Path
from vision_studies.data import dataloaders
from vision_studies.models import build_learner
from vision_studies.registry import get_spec
from vision_studies.train import fit, seed_everything

data, out, resume = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "resume"
seed_everything(0)
dls = dataloaders(get_spec("mnist"), data, 28, batch_size=32, augment="none")
learn = build_learner(dls, "lenet5", pretrained=False, path=out)
run = fit(learn, 3, 1e-2, resume=resume)
kept = [float(v) for v in learn.validate()]
record = {"history": run.history, "best_epoch": run.best_epoch, "extra": run.extra, "kept": kept}
(out / "run.json").write_text(json.dumps(record))
"""


def _python(code: str, *args: str, log: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)} | (env or {})
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, **kwargs
        )


def test_run_killed_mid_training_resumes_and_finishes(mnist, tmp_path):
    _, data = mnist
    checkpoint = tmp_path / "models" / CHECKPOINT
    first = _python(KILLABLE, str(data), str(tmp_path), "fresh", log=tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL  # killed, not finished
    saved = torch.load(checkpoint, weights_only=True)["meta"]
    done = len(saved["history"])
    assert 1 <= done < 3

    second = _python(KILLABLE, str(data), str(tmp_path), "resume", log=tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    record = json.loads((tmp_path / "run.json").read_text())
    assert f"resuming from {checkpoint}: {done} epoch(s) done" in (tmp_path / "second.log").read_text()
    assert len(record["history"]) == 3 and record["history"][:done] == saved["history"]  # counted on, not restarted
    assert record["extra"] == {"resumed_at_epoch": done}
    losses = [row["valid_loss"] for row in record["history"]]
    assert record["best_epoch"] == losses.index(min(losses))
    assert record["kept"][0] == pytest.approx(min(losses), rel=1e-4)  # the model left is the best epoch's
    assert record["history"][-1]["accuracy"] > 0.8  # and it learned
    assert not checkpoint.exists() and (tmp_path / "models" / BEST).exists()


READ_ONLY = """
import os, sys, torch
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from vision_studies.train import CheckpointError, fit

if os.geteuid() == 0:  # root writes anywhere: become user nobody, for good, now the imports are done
    os.setgid(65534)
    os.setuid(65534)
x = torch.randn(64, 8)
ds = list(zip(x, (x[:, 0] > 0).long()))
dls = DataLoaders.from_dsets(ds[:48], ds[48:], bs=16, num_workers=0)
learn = Learner(dls, torch.nn.Linear(8, 2), loss_func=CrossEntropyLossFlat(), path=sys.argv[1])
try:
    fit(learn, 1)
except CheckpointError as e:
    print(f"CheckpointError errno={e.errno}: {e}")
    sys.exit(3)
"""


def test_read_only_model_folder_is_a_clear_error_before_training(tmp_path):
    """A folder the process may not write to. chmod does not stop root, so a root run drops to user nobody."""
    folder = Path(tempfile.mkdtemp())  # under /tmp, which every user can reach
    try:
        (folder / "models").mkdir()
        folder.chmod(0o555)
        (folder / "models").chmod(0o555)
        code = _python(READ_ONLY, str(folder), log=tmp_path / "log").wait(timeout=120)
        printed = (tmp_path / "log").read_text()
        assert code == 3, printed[-3000:]
        refused = f"[Errno 13] cannot write checkpoints to {folder / 'models'} (Permission denied)"
        assert f"CheckpointError errno={errno.EACCES}: {refused}" in printed
        assert "build_learner(..., path=...)" in printed and "train_loss" not in printed  # no epoch was wasted
        assert list((folder / "models").iterdir()) == []
    finally:
        folder.chmod(0o755)
        (folder / "models").chmod(0o755)
        shutil.rmtree(folder)


def test_every_random_generator_comes_back_from_a_saved_state_old_or_new(tmp_path):
    """What a checkpoint keeps of the generators (checkpoints.random_state, words packed as tensors), saved and loaded
    without unpickling, gives the same next draws from Python, NumPy, torch and each loader; so does a checkpoint
    of the earlier format, which kept the words as lists."""
    import random

    import numpy as np

    from vision_studies.checkpoints import random_state as _random_state, set_random_state as _set_random_state

    learn = _learner(tmp_path)
    learn.recorder.smooth_loss.reset()

    def draws():
        return (random.random(), float(np.random.rand()), float(torch.rand(())),
                [dl.rng.random() for dl in learn.dls.loaders])

    state = _random_state(learn)
    torch.save(state, tmp_path / "state.pth")
    expected = draws()
    _set_random_state(learn, torch.load(tmp_path / "state.pth", weights_only=True))
    assert draws() == expected
    old = state | {"python": [state["python"][0], state["python"][1].tolist(), state["python"][2]],
                   "numpy": [state["numpy"][0], state["numpy"][1].tolist(), *state["numpy"][2:]],
                   "loaders": [[s[0], s[1].tolist(), s[2]] for s in state["loaders"]]}
    _set_random_state(learn, old)
    assert draws() == expected


def test_each_epochs_files_hold_that_epoch_though_written_during_the_next(tmp_path, monkeypatch):
    """Checkpoints are written from a copy, in a thread, while the next epoch trains (checkpoints.py): slowed
    down, each file must still hold its own epoch's weights, and a stop must leave the last one whole."""
    from fastai.callback.core import Callback

    from vision_studies import checkpoints

    written, seen = [], []
    real_write = checkpoints.write

    def slow_write(obj, path):
        time.sleep(0.2)  # the next epoch trains meanwhile
        real_write(obj, path)
        if path.name == CHECKPOINT:
            written.append(torch.load(path, weights_only=True))

    class Snapshot(Callback):
        order = checkpoints.Checkpoints.order + 1

        def after_epoch(self):
            seen.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})

    monkeypatch.setattr(checkpoints, "write", slow_write)
    learn = _learner(tmp_path)
    learn.add_cb(Snapshot())
    fit(learn, 3, 1e-2)
    assert [w["meta"]["phase_epochs_done"] for w in written] == [1, 2]  # the last epoch's would be removed at once
    for w, s in zip(written, seen):
        assert all(torch.equal(w["model"][k], s[k]) for k in s)
    assert not all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])  # the weights did move between epochs
    # stopped mid-epoch (Jupyter's stop button): the last epoch's checkpoint is on disk, whole, when fit returns
    assert _interrupted(tmp_path / "stopped", BATCHES + 2, epochs=3)["phase_epochs_done"] == 1


def test_the_runs_last_epoch_writes_only_its_weights_and_only_if_best(tmp_path, monkeypatch):
    """Its checkpoint would be removed as soon as fit returns: a fine-tune writes one for every epoch but the last
    of its unfrozen phase, whose weights go to best.pth when they are the best, as every epoch's do."""
    from vision_studies import checkpoints

    files = []
    real_write = checkpoints.write
    monkeypatch.setattr(checkpoints, "write", lambda obj, path: (files.append(path.name), real_write(obj, path)))
    run = fit(_learner(tmp_path, pretrained=True), epochs=3, lr=1e-2)
    assert files.count(CHECKPOINT) == 3  # the frozen epoch and the unfrozen phase's first two
    losses = [row["valid_loss"] for row in run.history[1:]]  # the unfrozen phase's: each fit's first epoch is its best
    new_bests = 1 + sum(loss < min(losses[:i]) for i, loss in enumerate(losses) if i)
    assert losses[-1] < min(losses[:-1])  # so the last epoch's weights are written, as best.pth
    assert files.count(BEST) == 1 + new_bests  # and the frozen epoch's
    assert not (tmp_path / "models" / CHECKPOINT).exists()


def test_a_checkpoint_that_cannot_be_written_stops_the_fit_with_its_error(tmp_path, monkeypatch):
    from vision_studies import checkpoints

    def full_disk(obj, path):
        raise CheckpointError(errno.ENOSPC, f"cannot save {path.name} in {path.parent} (No space left on device)")

    monkeypatch.setattr(checkpoints, "write", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        fit(_learner(tmp_path), 3, 1e-2)
