"""The `vision-studies` command: list and train the studies, make fixtures, run the notebooks, serve and share models."""

from __future__ import annotations

import argparse
import ast
import sys
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p ARCH resnet18


def _list(args: argparse.Namespace) -> int:
    from .fixtures import FIXTURE_MAKERS
    from .registry import DATASETS
    from .studies import STUDIES

    print("studies (vision-studies train STUDY):")
    for study in STUDIES.values():
        note = f"not trained by the command: {study.refused}" if study.refused else study.trains
        print(f"  {study.name:24} {study.dataset:14} {note}".rstrip())
    print("\ndatasets:")
    for spec in DATASETS.values():
        fixture = "fixture" if spec.name in FIXTURE_MAKERS else "no fixture"
        print(f"  {spec.name:12} {len(spec.classes):4} classes  {fixture:10}  {spec.title}  [{spec.licence}]")
    return 0


def _fixture(args: argparse.Namespace) -> int:
    from .fixtures import make_fixture

    print(make_fixture(args.name, args.root))
    return 0


def _run_notebooks(args: argparse.Namespace) -> int:
    from .runner import find_notebooks, format_table, render_html, run_notebooks

    try:
        notebooks = find_notebooks(args.notebooks_dir, args.notebooks)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parameters = {"FIXTURE": not args.full, **{name: _literal(value) for name, value in args.parameter}}
    runs = run_notebooks(notebooks, args.out, parameters, workers=args.workers, cwd=".", timeout=args.timeout)
    print()
    print(format_table(runs))
    if args.html:
        for path in render_html(runs):
            print(f"html: {path}")
    failed = [r for r in runs if not r.ok]
    for r in failed:
        print(f"\n{r.notebook} failed: {r.error}\n  the executed notebook shows where: {r.output}", file=sys.stderr)
    return 1 if failed else 0


def _model_errors(command):
    """A missing or malformed export is the user's to fix: say what is wrong, exit 2, no traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


@_model_errors
def _demo(args: argparse.Namespace) -> int:
    from .app import serve

    print(f"serving {args.model} on http://{args.host}:{args.port} (Ctrl+C stops it)")
    serve(args.model, host=args.host, port=args.port)
    return 0


@_model_errors
def _space(args: argparse.Namespace) -> int:
    from .app import write_space

    out = write_space(args.model, args.out, title=args.title, model_repo=args.model_repo)
    print(f"{out}: a Hugging Face Space; upload it with huggingface_hub.upload_folder(repo_type='space', ...)")
    return 0


@_model_errors
def _predict(args: argparse.Namespace) -> int:
    from .hub import load_exported

    predictor = load_exported(args.model)
    for image in args.images:
        scores = predictor.scores(image, top_k=args.top_k)
        shown = ", ".join(f"{label} {p:.1%}" for label, p in scores.items()) or "no class above the threshold"
        print(f"{image}: {shown}")
    return 0

# What each common parameter does, for --help where the notebook's parameters cell has no comment on it.
_PARAMETER_HELP = {
    "FIXTURE": "the tiny fixture set in the real one's layout and the notebook's fixture settings: a CPU-sized run",
    "ARCH": "the network: a timm model name, or one of lenet5, naive_cnn, conv_pool_cnn, bn_dropout_cnn",
    "PRETRAINED": "start from ImageNet weights (timm fetches them from the Hugging Face Hub) and fine-tune",
    "WEIGHTS": "a local weights file for ARCH (.safetensors or .pth), instead of downloading",
    "EPOCHS": "passes over the training images",
    "IMAGE_SIZE": "pixels a side that images are resized to",
    "BATCH_SIZE": "images per optimizer step",
    "LR": "the peak learning rate of the one-cycle schedule",
    "AUGMENT": "the augmentation preset",
    "SEED": "the seed of the split and of training: the same seed gives the same model on the same device",
    "RESUME": "continue from the checkpoint an interrupted run left",
    "DATA_DIR": "where datasets are downloaded and fixtures written",
    "OUTPUT_DIR": "where <dir>/<study>/results.json, checkpoints and <dir>/<study>/export go",
    "PUSH_TO_HUB": "upload the export to HUB_REPO (log in with `hf auth login` first)",
    "HUB_REPO": "the Hugging Face Hub repository for the export, e.g. your-name/vision-studies-mnist",
    "THRESHOLD": "the probability above which a label is predicted; 0: the one that maximises F1 on validation",
}
# What the command does with a parameter that a notebook does not: say it in the flag's help.
_COMMAND_NOTES = {
    "BATCH_SIZE": "with several processes, split evenly between them",
    "DATA_DIR": "with several processes, process 0 fills it and the others read it",
}

_TRAIN_EPILOG = """\
examples:
  vision-studies train 05 --fixture                      MNIST's fixture, LeNet-5, on this machine
  vision-studies train 05 --help                         every flag of study 05, read from its notebook
  vision-studies train 08_pets --epochs 3 --arch resnet50.a1_in1k
  vision-studies train 08 --no-pretrained --weights my.safetensors

several processes (see docs/distributed.md):
  accelerate launch --multi_gpu --num_processes 4 -m vision_studies train 08     4 GPUs of one machine
  torchrun --nproc_per_node 2 -m vision_studies train 05 --fixture              2 CPU processes (gloo)
"""


def _flag(name: str) -> str:
    return "--" + name.lower().replace("_", "-")


def _shown(value: Any) -> str:
    return repr(value) if value == "" else str(value)


def _study_parser(study, params) -> argparse.ArgumentParser:
    """A flag for every parameter of the study's notebook: its default, its fixture value, its comment as help."""
    skipped = ", ".join(study.notebook_only)
    description = (
        f"Train study {study.name} ({params.notebook}) on dataset {study.dataset!r} as its notebook does, then "
        f"write <output-dir>/{study.name}/results.json and the export in <output-dir>/{study.name}/export. "
        + (f"The command trains {study.trains}. " if study.trains else "")
        + (f"Not flags here, as the command does not run those parts: {skipped}. " if skipped else "")
        + "Defaults are the notebook's parameters cell; --fixture switches to its fixture settings."
    )
    parser = argparse.ArgumentParser(
        prog=f"vision-studies train {study.name}", epilog=_TRAIN_EPILOG,
        description=textwrap.fill(description, 100, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, default in params.defaults.items():
        if name in study.notebook_only:
            continue
        text = params.help.get(name) or _PARAMETER_HELP.get(name, name.lower().replace("_", " "))
        text = text.removeprefix("True: ")  # the notebooks' comments on switches; the flag says it
        if name in _COMMAND_NOTES:
            text += f"; {_COMMAND_NOTES[name]}"
        text += f" (default: {_shown(default)}"
        if name in params.fixture and params.fixture[name] != default:
            text += f"; with --fixture: {_shown(params.fixture[name])}"
        text = (text + ")").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": text}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            kwargs.update(nargs="+", type=type(default[0]) if default else str, metavar=name)
        else:
            kwargs.update(type=type(default) if isinstance(default, (int, float, str)) else _literal, metavar=name)
        parser.add_argument(_flag(name), **kwargs)
    parser.add_argument("--notebooks-dir", type=Path, default=Path("notebooks"), dest="_notebooks_dir",
                        metavar="DIR", help="where the study notebooks are (default: notebooks/)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from .studies import NOT_TRAINING, get_study, notebook_parameters, study_notebook

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--notebooks-dir", type=Path, default=args.notebooks_dir)
    notebooks_dir = where.parse_known_args(args.rest)[0].notebooks_dir
    try:
        study = get_study(args.study)
        if study.refused:
            raise ValueError(f"vision-studies train does not train {study.name}: {study.refused}")
        params = notebook_parameters(study_notebook(study, notebooks_dir))
    except (KeyError, FileNotFoundError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    flags = vars(_study_parser(study, params).parse_args(args.rest))
    given = {name: value for name, value in flags.items() if value is not None and not name.startswith("_")}
    trained = [n for n in params.defaults if n not in NOT_TRAINING and n not in study.notebook_only]
    return _train_resolved(study, params.resolve(given), trained)


def _train_resolved(study, params: dict[str, Any], trained: list[str]) -> int:
    from .distributed import close
    from .download import DownloadError
    from .models import PretrainedWeightsUnavailable
    from .sources import MissingCredentials
    from .studies import train_study
    from .train import CheckpointError

    try:
        done = train_study(study, params, trained)
    except (FileNotFoundError, ValueError, PermissionError, PretrainedWeightsUnavailable, MissingCredentials,
            DownloadError, CheckpointError) as e:  # the user's to fix, and each says how: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close()
    if done.results is not None:
        from .metrics import headline

        print(f"metrics: {headline(done.record['metrics'])}")
        print(f"results: {done.results}")
        print(f"export: {done.export}  (vision-studies predict {done.export} IMAGE...)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-studies", description="Transfer-learning studies for image classification.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the studies, and the datasets in the registry")
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "train", help="train one study's model from the command line, on one process or several",
        description=textwrap.fill(
            "Train a study's model as its notebook does, with every notebook parameter as a flag: `vision-studies "
            "train STUDY --help` lists them with the notebook's defaults. STUDY is a notebook name (05_mnist), its "
            "number (05) or its dataset (mnist); `vision-studies list` shows them. Run it from the repository root, "
            "where notebooks/ is. Launched by accelerate or torchrun, the processes train together.", 100),
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="the study: 05_mnist, 05, or mnist")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="FLAGS", help="the study's flags (see STUDY --help)")
    p.add_argument("--notebooks-dir", type=Path, default=Path("notebooks"), metavar="DIR",
                   help="where the study notebooks are (default: notebooks/)")
    p.set_defaults(func=_train)

    p = sub.add_parser("fixture", help="write a dataset's tiny fixture in its real layout")
    p.add_argument("name", help="a dataset name from `vision-studies list`")
    p.add_argument("--root", type=Path, default=Path("data/fixtures"), help="where to write it (default: data/fixtures)")
    p.set_defaults(func=_fixture)

    p = sub.add_parser(
        "run-notebooks", help="execute study notebooks with papermill, in parallel",
        description="Execute the study notebooks with papermill, several at once, each with its share of the CPU "
        "cores. Fixture mode (tiny data, CPU-sized) unless --full. Exits 1 when a notebook fails.",
    )
    p.add_argument("notebooks", nargs="*", help="notebook names or number prefixes, e.g. 05 08 (default: all)")
    p.add_argument("--full", action="store_true", help="the real datasets (FIXTURE=False): needs internet, wants a GPU")
    p.add_argument("--workers", type=int, default=None, help="notebooks at once (default: one per core)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="executed notebooks and results records (default: runs/)")
    p.add_argument("--notebooks-dir", type=Path, default=Path("notebooks"), help="where the notebooks are (default: notebooks/)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter in every notebook, e.g. -p EPOCHS 3")
    p.add_argument("--html", action="store_true", help="also render each executed notebook to HTML beside it")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run (default: 1800)")
    p.set_defaults(func=_run_notebooks)

    model_help = "an exported model: a folder written by hub.export_learner, or a Hub repo id (owner/name)"
    p = sub.add_parser("demo", help="serve an exported model as a gradio web demo")
    p.add_argument("model", help=model_help)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 shares it on the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("space", help="write a Hugging Face Space folder that serves an exported model")
    p.add_argument("model", help="a folder written by hub.export_learner")
    p.add_argument("out", type=Path, help="the Space folder to write")
    p.add_argument("--title", default=None, help="the Space's title")
    p.add_argument("--model-repo", default=None, help="the model's Hub repo id, to link the Space to it")
    p.set_defaults(func=_space)

    p = sub.add_parser("predict", help="the top classes of images under an exported model")
    p.add_argument("model", help=model_help)
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    p.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
