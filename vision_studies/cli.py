"""The `vision-studies` command: list datasets, build fixtures, run the study notebooks."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
