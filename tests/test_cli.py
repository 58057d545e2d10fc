"""`vision-studies train`: flags from the study table, explicit values winning, its errors, real runs, a wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vision_studies.cli import main, study_parser
from vision_studies.export import load_exported
from vision_studies.studies import STUDIES, get_study, parameters

REPO = Path(__file__).resolve().parent.parent
TRAINABLE = [s for s in STUDIES.values() if not s.refused]


@pytest.mark.parametrize("study", TRAINABLE, ids=lambda s: s.name)
def test_every_parameter_is_a_flag_unless_the_table_says_the_command_skips_it(study):
    names = [f.name for f in parameters(type(study.full))]
    assert set(study.notebook_only) <= set(names), "the table names a parameter the study lacks"
    flags = {a.dest for a in study_parser(study)._actions}
    for name in names:
        assert (name in flags) != (name in study.notebook_only), name


def test_flags_win_over_the_fixture_settings_and_the_rest_take_them():
    study = get_study("05")
    flags = vars(study_parser(study).parse_args(["--fixture", "--epochs", "3", "--lr", "3e-3", "--no-resume"]))
    assert {k: v for k, v in flags.items() if v is not None} == {"fixture": True, "epochs": 3, "lr": 3e-3,
                                                                 "resume": False}


def test_study_help_lists_the_parameters_with_defaults_and_fixture_values(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "08", "--help"])
    assert exit.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--arch", "--no-pretrained", "--image-size", "--batch-size", "--data-dir", "--hub-repo"):
        assert flag in out
    study = get_study("08")
    assert f"(default: {study.full.arch}; with --fixture: {study.fixture['arch']})" in out
    assert "passes over the training images" in out  # the field's help text
    assert "accelerate launch" in out and "torchrun" in out


def test_help_of_a_study_says_what_the_command_leaves_out(capsys):
    with pytest.raises(SystemExit):
        main(["train", "06_cifar10", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "fine-tuned model (ARCH) only" in out and "SCRATCH_EPOCHS" in out
    assert "--scratch-epochs" not in out


def test_list_shows_the_studies_and_the_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES) and "pascal_2007" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "99"], "no study '99'; the studies are: 01_potholes"),
    (["train", "11"], "vision-studies run-notebooks 11"),
    (["train", "05", "--epochs", "0"], "EPOCHS must be a whole number of at least 1"),
    (["train", "05", "--arch", "no_such_net"], "is neither a timm model nor one of lenet5"),
    (["train", "05", "--pretrained"], "set PRETRAINED to False (--no-pretrained)"),
    (["train", "05", "--augment", "wild"], "AUGMENT 'wild' is not a preset; the presets are none, light"),
    (["train", "05", "--arch", "resnet10t", "--weights", "missing.safetensors"], "WEIGHTS missing.safetensors does not exist"),
    (["train", "05", "--push-to-hub"], "PUSH_TO_HUB needs HUB_REPO"),
])
def test_bad_input_is_refused_before_anything_runs_with_what_to_do(argv, message, capsys, tmp_path):
    where = ["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "models")] if len(argv) > 2 else []
    assert main([*argv, *where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not list(tmp_path.iterdir())  # nothing downloaded, made or written


def test_an_error_not_raised_on_purpose_keeps_its_traceback(data_root, tmp_path):
    # only a VisionStudiesError is printed as a message; timm's own TypeError reaches the caller whole
    argv = ["train", "10", "--fixture", "--model-kwargs", "{'no_such_argument': 1}", "--data-dir", str(data_root),
            "--output-dir", str(tmp_path / "models")]
    with pytest.raises(TypeError, match="no_such_argument"):
        main(argv)


def test_train_then_predict_on_the_mnist_fixture(mnist, data_root, tmp_path, capsys):
    """One process, in this one: the record and the export the notebook would write, and the export works."""
    spec, path = mnist
    out = tmp_path / "models"
    argv = ["train", "05_mnist", "--fixture", "--epochs", "2", "--data-dir", str(data_root), "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "05_mnist" / "results.json").read_text())
    valid = sorted((path / spec.valid_folder).glob("*/*.png"))
    assert record["epochs"] == 2 and record["batch_size"] == 32 and record["fixture"] is True  # fixture's batch size
    assert record["processes"] == 1 and record["metrics"]["n"] == len(valid)
    assert record["metrics"]["accuracy"] > 0.8  # chance is 0.1
    assert f"results: {out / '05_mnist' / 'results.json'}" in printed
    # The export is the trained model: it scores the held-out digits as the record says.
    predictor = load_exported(out / "05_mnist" / "export")
    labels = predictor.predict(valid).labels
    accuracy = sum(label == image.parent.name for label, image in zip(labels, valid)) / len(valid)
    assert accuracy == pytest.approx(record["metrics"]["accuracy"], abs=0.01)
    assert main(["predict", str(out / "05_mnist" / "export"), str(valid[0]), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{valid[0]}: ")


def test_explicit_flags_are_what_a_fixture_run_of_08_records(data_root, tmp_path):
    out = tmp_path / "models"
    # a small CNN from scratch, as the flags say: each value unlike fixture mode's own
    argv = ["train", "08", "--fixture", "--arch", "conv_pool_cnn", "--no-pretrained", "--epochs", "1", "--image-size",
            "32", "--data-dir", str(data_root), "--output-dir", str(out)]
    fixture = get_study("08").fixture  # what was not given comes from fixture mode
    assert all(fixture[k] != v for k, v in dict(arch="conv_pool_cnn", epochs=1, image_size=32, pretrained=False).items())
    assert main(argv) == 0
    record = json.loads((out / "08_pets" / "results.json").read_text())
    assert (record["arch"], record["epochs"], record["image_size"]) == ("conv_pool_cnn", 1, 32)
    assert (record["batch_size"], record["lr"], record["pretrained"]) == (fixture["batch_size"], fixture["lr"], False)
    assert json.loads((out / "08_pets" / "export" / "config.json").read_text())["arch"] == "conv_pool_cnn"


def test_the_command_works_from_a_wheel_with_no_checkout_in_sight(tmp_path):
    """Built and installed as a user installs it, run from an empty folder: the package makes its own fixture."""
    wheels, site, empty = tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    [wheel] = wheels.glob("vision_studies-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    assert not list(site.rglob("*.ipynb")), "the notebooks are not part of the package"
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import vision_studies; print(vision_studies.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the checkout's
    done = subprocess.run([str(site / "bin" / "vision-studies"), "train", "05", "--fixture", "--epochs", "1"], cwd=empty,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((empty / "models" / "05_mnist" / "results.json").read_text())
    assert record["epochs"] == 1 and record["fixture"] is True and record["metrics"]["accuracy"] > 0.5
    assert (empty / "data" / "fixtures" / "mnist_png").is_dir()
