"""The `vision-studies` command: list datasets, build fixtures, run the study notebooks, serve and share models."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

__all__ = ["main"]


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p ARCH resnet18


def _list(args: argparse.Namespace) -> int:
    from .fixtures import FIXTURE_MAKERS
    from .registry import DATASETS

    for spec in DATASETS.values():
        fixture = "fixture" if spec.name in FIXTURE_MAKERS else "no fixture"
        print(f"{spec.name:10} {len(spec.classes):4} classes  {fixture:10}  {spec.title}  [{spec.licence}]")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-studies", description="Transfer-learning studies for image classification.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the datasets in the registry")
    p.set_defaults(func=_list)

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
