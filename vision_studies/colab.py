"""Colab: whether we run there, its Secrets, its Google Drive, and the cell that installs this package there.

A Colab runtime is a virtual machine lent for a while: a kernel restart keeps its disk, but a recycled
runtime (idle too long, the 12-hour limit, "Disconnect and delete runtime") starts from a blank one, so
``/content/models`` is gone with it. Google Drive, once mounted, outlives the runtime: outputs and
checkpoints go there by default, so ``RESUME = True`` finds last epoch's checkpoint on a fresh runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import __version__

__all__ = [
    "REPO_URL", "PACKAGE", "DRIVE_MOUNT", "DRIVE_FOLDER", "LOCAL_OUTPUTS", "in_colab", "colab_secret",
    "drive_folder", "output_dir", "package_requirement", "install_cell",
]

# The one place the repository's address is written: the install cell, the Colab badges, the README and
# the Space template are checked against it (tests/test_colab.py).
REPO_URL = "https://github.com/vision-studies/vision-studies"
PACKAGE = "vision-studies"
DRIVE_MOUNT = Path("/content/drive")  # where Colab's Files panel (and drive.mount) puts Google Drive
DRIVE_FOLDER = "vision-studies/models"  # under the learner's "My Drive"
LOCAL_OUTPUTS = Path("models")


def in_colab() -> bool:
    """True inside a Colab kernel: Colab imports ``google.colab`` before any cell runs."""
    return "google.colab" in sys.modules


def colab_secret(name: str) -> str | None:
    """The value of the Colab Secret `name` (the key icon in Colab's left bar), or None.

    None outside Colab, when there is no such secret, when the learner did not give this notebook access
    to it, and when the request timed out (a notebook run outside Colab's page). The value is returned,
    never printed or logged: pass it straight to the client that needs it.
    """
    if not in_colab():
        return None
    try:
        from google.colab import userdata
    except ImportError:  # an old runtime without Secrets
        return None
    # google/colab/userdata.py raises these three for "no value"; anything else is a real fault
    missing = tuple(getattr(userdata, n) for n in ("SecretNotFoundError", "NotebookAccessError", "TimeoutException")
                    if hasattr(userdata, n))
    try:
        value = userdata.get(name)
    except missing:
        return None
    return value or None


def drive_folder(mount: Path | str = DRIVE_MOUNT) -> Path | None:
    """The learner's "My Drive" when Google Drive is mounted at `mount`, else None.

    google/colab/drive.py takes ``<mount>/My Drive`` as the sign of a mounted Drive; Colab's Files panel
    also shows it as ``MyDrive``, the path learners copy, so that spelling wins when both are there.
    """
    mount = Path(mount)
    for name in ("MyDrive", "My Drive"):
        if (mount / name).is_dir():
            return mount / name
    return None


def output_dir(requested: Path | str | None = None, *, mount: Path | str = DRIVE_MOUNT) -> Path:
    """Where results, checkpoints and exports go: `requested` when given, else Drive when mounted, else ``models``.

    An empty or None `requested` is "the default": ``My Drive/vision-studies/models`` when Google Drive is
    mounted (it survives a recycled runtime, so RESUME does too), ``models`` in the working folder
    otherwise (a kernel restart keeps it; a recycled Colab runtime does not).
    """
    if requested:
        return Path(requested)
    drive = drive_folder(mount)
    return drive / DRIVE_FOLDER if drive is not None else LOCAL_OUTPUTS


def package_requirement(ref: str | None = None) -> str:
    """The pip requirement that installs this package from its repository at `ref` (default: this version's tag).

    The tag ``v<version>`` is the code the notebooks of that version were written against; installing
    the branch instead would give a notebook whatever the repository holds today.
    """
    ref = f"v{__version__}" if ref is None else ref
    return f"{PACKAGE} @ git+{REPO_URL}" + (f"@{ref}" if ref else "")


def install_cell(requirement: str | None = None) -> str:
    """The source of every notebook's install cell (`requirement` defaults to `package_requirement()`).

    ``%pip`` shows pip's own output, errors included, in the notebook; in Colab it is the shell's
    ``pip``, which sets ``_exit_code`` (google/colab/_installation_commands.py, _system_commands.py),
    so a failed install stops "Run all" with what to do instead of running on without the package.
    """
    requirement = requirement or package_requirement()
    newest = package_requirement("")
    return (
        "# Colab only: install this package at the version this notebook was written for; Colab's own torch,\n"
        "# torchvision, numpy and pandas stay as they are. Anywhere else this cell does nothing: install with\n"
        "# `pip install -r requirements.txt` (see the README).\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install "{requirement}"\n'
        "    if _exit_code:  # pip's own message is just above\n"
        "        raise RuntimeError(\n"
        '            "the install failed: pip says why just above. A network error: run this cell again. A version "\n'
        "            \"that cannot be found: install the newest instead with "
        f"%pip install '{newest}'\"\n"
        "        )"
    )
