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
    if args.rehearse:  # full mode against a loopback mirror of every dataset in its real layout (mirror.py)
        from .mirror import rehearse, rehearsed_notebooks

        notebooks, left = rehearsed_notebooks(notebooks)
        for nb in left:
            print(f"{nb.stem}: not rehearsed, the mirror serves no archive of its dataset", file=sys.stderr)
        runs = rehearse(notebooks, args.out / "rehearsal", workers=args.workers, timeout=args.timeout)
    else:
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


def _demo(args: argparse.Namespace) -> int:
    from .app import serve

    print(f"serving {args.model} on http://{args.host}:{args.port} (Ctrl+C stops it)")
    serve(args.model, host=args.host, port=args.port)
    return 0


def _space(args: argparse.Namespace) -> int:
    from .app import write_space

    out = write_space(args.model, args.out, title=args.title, model_repo=args.model_repo)
    print(f"{out}: a Hugging Face Space; upload it with huggingface_hub.upload_folder(repo_type='space', ...)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .export import load_exported

    predictor = load_exported(args.model)
    for image in args.images:
        scores = predictor.scores(image, top_k=args.top_k)
        shown = ", ".join(f"{label} {p:.1%}" for label, p in scores.items()) or "no class above the threshold"
        print(f"{image}: {shown}")
    return 0

_TRAIN_EPILOG = """\
examples:
  vision-studies train 05 --fixture                      MNIST's fixture, LeNet-5, on this machine
  vision-studies train 05 --help                         every flag of study 05, with its defaults
  vision-studies train 08_pets --epochs 3 --arch resnet50.a1_in1k
  vision-studies train 08 --no-pretrained --weights my.safetensors

several processes (see docs/distributed.md):
  accelerate launch --multi_gpu --num_processes 4 -m vision_studies train 08     4 GPUs of one machine
  torchrun --nproc_per_node 2 -m vision_studies train 05 --fixture              2 CPU processes (gloo)
"""
# What the command does with a parameter that a notebook does not: said in the flag's help.
_COMMAND_NOTES = {
    "batch_size": "with several processes, split evenly between them",
    "data_dir": "with several processes, process 0 fills it and the others read it",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return repr(value) if value == "" else str(value)


def study_parser(study) -> argparse.ArgumentParser:
    """A flag for every parameter of `study`'s config: its help text, full-mode default and fixture value."""
    from .studies import parameters

    skipped = ", ".join(n.upper() for n in study.notebook_only)
    description = (
        f"Train study {study.name} on dataset {study.dataset!r} as its notebook does, then write "
        f"<output-dir>/{study.name}/results.json and the export in <output-dir>/{study.name}/export. "
        + (f"The command trains {study.trains}. " if study.trains else "")
        + (f"Not flags here, as the command does not run those parts: {skipped}. " if skipped else "")
        + "Defaults are the study's full-mode settings; --fixture switches to its fixture settings for every "
        "flag not given."
    )
    parser = argparse.ArgumentParser(
        prog=f"vision-studies train {study.name}", epilog=_TRAIN_EPILOG,
        description=textwrap.fill(description, 100, break_on_hyphens=False),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in parameters(type(study.full)):
        if f.name in study.notebook_only:
            continue
        default = getattr(study.full, f.name)
        text = f.metadata["help"]
        if f.name in _COMMAND_NOTES:
            text += f"; {_COMMAND_NOTES[f.name]}"
        text += f" (default: {_shown(default)}"
        if f.name in study.fixture and study.fixture[f.name] != default:
            text += f"; with --fixture: {_shown(study.fixture[f.name])}"
        text = (text + ")").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs.update(nargs="+", metavar=f.name.upper())
        elif isinstance(default, dict):
            kwargs.update(type=_literal, metavar="DICT")
        else:
            kwargs.update(type=type(default), metavar=f.name.upper())
        parser.add_argument(_flag(f.name), **kwargs)
    return parser


def _train(args: argparse.Namespace) -> int:
    from .studies import ConfigError, get_study, resolve_config

    study = get_study(args.study)
    if study.refused:
        raise ConfigError(f"vision-studies train does not train {study.name}: {study.refused}")
    flags = vars(study_parser(study).parse_args(args.rest))
    config = resolve_config(study, **{name: value for name, value in flags.items() if value is not None})
    # torch and fastai load here, not before: `train STUDY --help` and a mistyped STUDY stay instant
    from .distributed import close
    from .pipeline import run_study

    try:
        done = run_study(config)
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
            "Train a study's model as its notebook does, with every parameter of the study's settings as a flag: "
            "`vision-studies train STUDY --help` lists them with their defaults. STUDY is a notebook name "
            "(05_mnist), its number (05) or its dataset (mnist); `vision-studies list` shows them. Fixture mode "
            "(--fixture) writes its own tiny data: no checkout is needed. Launched by accelerate or torchrun, the "
            "processes train together.", 100),
        epilog=_TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="the study: 05_mnist, 05, or mnist")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="FLAGS", help="the study's flags (see STUDY --help)")
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
    p.add_argument("--rehearse", action="store_true",
                   help="full mode (FIXTURE=False) against a loopback mirror of each dataset's real layout, offline "
                        "EfficientNet-Lite0 weights, tiny sizes, one epoch; into OUT/rehearsal")
    p.add_argument("--workers", type=int, default=None, help="notebooks at once (default: one per core)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="executed notebooks and results records (default: runs/)")
    p.add_argument("--notebooks-dir", type=Path, default=Path("notebooks"), help="where the notebooks are (default: notebooks/)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="override a parameter in every notebook, e.g. -p EPOCHS 3")
    p.add_argument("--html", action="store_true", help="also render each executed notebook to HTML beside it")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run (default: 1800)")
    p.set_defaults(func=_run_notebooks)

    model_help = "an exported model: a folder written by export.export_learner, or a Hub repo id (owner/name)"
    p = sub.add_parser("demo", help="serve an exported model as a gradio web demo")
    p.add_argument("model", help=model_help)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 shares it on the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("space", help="write a Hugging Face Space folder that serves an exported model")
    p.add_argument("model", help="a folder written by export.export_learner")
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
    """Run the command; an error raised on purpose (`VisionStudiesError`) is printed with what to do, and
    exits 2. Anything else is a bug, and keeps its traceback."""
    from .errors import VisionStudiesError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VisionStudiesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
