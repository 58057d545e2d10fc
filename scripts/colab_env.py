"""Colab's GPU runtime for CI: its versions as pip constraints, what to preinstall, and what an install replaced.

Google publishes what Colab preinstalls (googlecolab/backend-info, ``pip-freeze.gpu.txt``; a copy lies in
shared/colab/ with a README). Left out of the constraints, as that README says:
- direct-URL lines (``name @ https://...``, ``@ file:///colabtools/...``): builds only Colab has;
- the ``+cu128`` local labels: Colab takes torch from PyTorch's own index; PyPI's build of the same
  version (no label) is the same code;
- the CUDA runtime wheels (``nvidia-*``, ``cuda-*``, ``triton``): PyPI's torch pins its own.

    python scripts/colab_env.py constraints FREEZE            # Colab's versions as constraints
    python scripts/colab_env.py runtime FREEZE pyproject.toml  # what of Colab to preinstall: ours that it has
    python scripts/colab_env.py replaced BEFORE AFTER          # fails when an install replaced a guarded package
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

__all__ = ["DROPPED_PREFIXES", "GUARDED", "colab_constraints", "runtime_packages", "replaced"]

DROPPED_PREFIXES = ("nvidia-", "cuda-", "triton")
# Replacing any of these breaks Colab for the learner: its CUDA build of torch and torchvision, and the
# libraries the rest of the runtime (TensorFlow, JAX, gRPC, Google's clients) was built and tested with.
GUARDED = ("torch", "torchvision", "numpy", "pillow", "pandas", "fastai", "timm", "protobuf")
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;+]+)(\+\S+)?\s*$")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normal(name: str) -> str:
    """PEP 503's normal form: pip treats Pillow, pillow and PIL-low alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_constraints(freeze: str) -> list[str]:
    """``name==version`` for each installable line of a `pip freeze`, in its order, local labels removed."""
    lines = []
    for number, raw in enumerate(freeze.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or " @ " in line:
            continue
        match = _PINNED.match(line)
        if match is None:
            raise ValueError(f"line {number} of the freeze is neither 'name==version' nor 'name @ url': {raw!r}")
        name, version = match.group(1), match.group(2)
        if name.lower().startswith(DROPPED_PREFIXES):
            continue
        lines.append(f"{name}=={version}")
    return lines


def _versions(freeze: str) -> dict[str, str]:
    return {_normal(line.split("==")[0]): line.split("==")[1] for line in colab_constraints(freeze)}


def runtime_packages(freeze: str, pyproject: str, extras: tuple[str, ...] = ()) -> list[str]:
    """The guarded packages, and every requirement of ours (with `extras`) that Colab preinstalls: the part of
    Colab's runtime our install meets. Requirements Colab lacks are left to the install, as in Colab."""
    project = tomllib.loads(pyproject)["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    names = list(GUARDED) + [_NAME.match(req).group(1) for req in wanted]
    colab = _versions(freeze)
    chosen: list[str] = []
    for name in names:
        if _normal(name) in colab and _normal(name) not in map(_normal, chosen):
            chosen.append(name)
    return chosen


def replaced(before: str, after: str) -> tuple[list[str], list[str]]:
    """(guarded packages whose version changed or vanished, every other package that changed) between freezes."""
    old, new = _versions(before), _versions(after)
    changed = [f"{name} {version} -> {new.get(name, 'removed')}" for name, version in old.items()
               if new.get(name) != version]
    guarded = [line for line in changed if line.split()[0] in {_normal(g) for g in GUARDED}]
    return guarded, [line for line in changed if line not in guarded]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("constraints", help="Colab's freeze as pip constraints")
    p.add_argument("freeze", type=Path)
    p = sub.add_parser("runtime", help="the packages of Colab's runtime to preinstall")
    p.add_argument("freeze", type=Path)
    p.add_argument("pyproject", type=Path)
    p.add_argument("--extras", default="", help="comma-separated extras whose requirements count too")
    p = sub.add_parser("replaced", help="exit 1 when a guarded package changed between two freezes")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "constraints":
        print("\n".join(colab_constraints(args.freeze.read_text(encoding="utf-8"))))
    elif args.command == "runtime":
        extras = tuple(e for e in args.extras.split(",") if e)
        print(" ".join(runtime_packages(args.freeze.read_text(encoding="utf-8"),
                                        args.pyproject.read_text(encoding="utf-8"), extras)))
    else:
        guarded, others = replaced(args.before.read_text(encoding="utf-8"), args.after.read_text(encoding="utf-8"))
        for line in others:
            print(f"changed (not guarded): {line}")
        for line in guarded:
            print(f"REPLACED Colab's {line}", file=sys.stderr)
        if guarded:
            return 1
        print(f"none of Colab's {', '.join(GUARDED)} replaced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
