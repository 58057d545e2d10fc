#!/usr/bin/env bash
# One-command setup on a fresh Debian/Ubuntu machine: the browser the demo's test drives, then a virtual
# environment (.venv) with the package and everything the notebooks and tests need, at CI's versions.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Chromium and its chromedriver, for the demo's browser test, and Debian's copy of the real
# Fashion-MNIST (/usr/share/datasets/fashion-mnist: study 12's full mode runs from it offline); skipped when there.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver dataset-fashion-mnist >/dev/null
fi

# The environment's packages are installed by uv (PyPI; the version constraints.txt pins), at the versions pinned
# there: pip took 174 s to install them on a fresh machine, most of it unpacking and byte-compiling one file
# at a time, where uv downloads, unpacks and compiles in parallel. Bytecode is written at install, since
# machines that set PYTHONDONTWRITEBYTECODE (CI's does) would otherwise compile torch anew in every process.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade -c constraints.txt pip uv 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2 || true)
UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/vision-studies/uv}" .venv/bin/uv pip install --quiet \
    --python .venv/bin/python --compile-bytecode -r requirements.txt
# The package itself is installed editable, so uv compiles none of it: without this, every process (each
# notebook's kernel, each test's subprocess) compiled its 50 modules again, about 0.1 s each time.
.venv/bin/python -m compileall -q vision_studies
.venv/bin/pip check
echo "set up: activate with '. .venv/bin/activate'"
