"""`vision-studies train`: its flags against the notebooks they are read from, its errors, and one real run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from vision_studies.cli import _study_parser, main
from vision_studies.hub import load_exported
from vision_studies.studies import STUDIES, get_study, notebook_parameters, study_notebook

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
TRAINABLE = [s for s in STUDIES.values() if not s.refused]


def _cells(study) -> tuple[str, str]:
    """The source of the notebook's `parameters` cell and of the code cell after it."""
    cells = [c for c in json.loads((NOTEBOOKS / f"{study.name}.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    return "".join(cells[i]["source"]), "".join(cells[i + 1]["source"])


def test_every_notebook_has_a_study_and_each_study_names_its_notebooks_dataset():
    assert sorted(STUDIES) == sorted(nb.stem for nb in NOTEBOOKS.glob("[0-9]*.ipynb"))
    for study in STUDIES.values():
        code = "\n".join("".join(c["source"]) for c in json.loads((NOTEBOOKS / f"{study.name}.ipynb").read_text())["cells"]
                         if c["cell_type"] == "code" and not "".join(c["source"]).lstrip().startswith("%"))
        calls = [n for n in ast.walk(ast.parse(code))
                 if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "prepare_dataset"]
        assert calls, study.name
        first = calls[0].args[0]
        if isinstance(first, ast.Constant):
            assert first.value == study.dataset, study.name
        else:  # 11 loops over DATASETS: the table names its first
            assert study.dataset == notebook_parameters(study_notebook(study, NOTEBOOKS)).defaults["DATASETS"][0]


@pytest.mark.parametrize("study", TRAINABLE, ids=lambda s: s.name)
def test_every_notebook_parameter_is_a_flag_unless_the_table_says_the_command_skips_it(study):
    params = notebook_parameters(study_notebook(study, NOTEBOOKS))
    assert set(study.notebook_only) <= set(params.defaults), "the table names a parameter the notebook lacks"
    flags = {a.dest for a in _study_parser(study, params)._actions}
    for name in params.defaults:
        assert (name in flags) != (name in study.notebook_only), name


@pytest.mark.parametrize("study", TRAINABLE, ids=lambda s: s.name)
@pytest.mark.parametrize("fixture", [False, True])
def test_resolved_parameters_are_what_the_notebook_itself_computes(study, fixture):
    # The reference is the notebook's own code, run as papermill runs it: the parameters cell, FIXTURE
    # injected, then the cell that applies the fixture settings.
    parameters, after = _cells(study)
    namespace: dict = {}
    exec(parameters, namespace)  # noqa: S102  the repository's own notebook cells
    namespace["FIXTURE"] = fixture
    exec(after, {**namespace, "print": lambda *a, **k: None}, namespace)  # noqa: S102
    resolved = notebook_parameters(study_notebook(study, NOTEBOOKS)).resolve({"FIXTURE": fixture})
    assert resolved == {k: namespace[k] for k in resolved}


def test_flags_override_the_notebook_and_the_fixture_settings():
    study = get_study("05")
    params = notebook_parameters(study_notebook(study, NOTEBOOKS))
    flags = vars(_study_parser(study, params).parse_args(["--fixture", "--epochs", "3", "--lr", "3e-3", "--no-resume"]))
    given = {k: v for k, v in flags.items() if v is not None and not k.startswith("_")}
    resolved = params.resolve(given)
    assert resolved["EPOCHS"] == 3 and resolved["LR"] == 3e-3 and resolved["RESUME"] is False
    assert resolved["BATCH_SIZE"] == params.fixture["BATCH_SIZE"] != params.defaults["BATCH_SIZE"]
    assert resolved["ARCH"] == params.defaults["ARCH"]


def test_study_help_lists_the_notebooks_parameters_with_defaults_and_fixture_values(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "08", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    params = notebook_parameters(study_notebook(get_study("08"), NOTEBOOKS))
    for flag in ("--arch", "--no-pretrained", "--image-size", "--batch-size", "--data-dir", "--hub-repo"):
        assert flag in out
    assert f"default: {params.defaults['ARCH']}" in " ".join(out.split())
    assert f"with --fixture: {params.fixture['ARCH']}" in " ".join(out.split())
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
    where = ["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "models"), "--notebooks-dir", str(NOTEBOOKS)]
    assert main([*argv, *where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not list(tmp_path.iterdir())  # nothing downloaded, made or written


def test_a_missing_notebooks_folder_says_where_to_run_from(capsys, tmp_path):
    assert main(["train", "05", "--notebooks-dir", str(tmp_path)]) == 2
    assert "run it from the repository root, or pass --notebooks-dir" in capsys.readouterr().err


def test_train_then_predict_on_the_mnist_fixture(mnist, data_root, tmp_path, capsys):
    """One process, in this one: the record and the export the notebook would write, and the export works."""
    spec, path = mnist
    out = tmp_path / "models"
    argv = ["train", "05_mnist", "--fixture", "--epochs", "2", "--data-dir", str(data_root), "--output-dir", str(out),
            "--notebooks-dir", str(NOTEBOOKS)]
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
