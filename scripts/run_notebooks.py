#!/usr/bin/env python
"""Run the study notebooks with papermill, in parallel, on their fixtures (the default) or the real data.

    python scripts/run_notebooks.py                         # every notebook, fixture mode
    python scripts/run_notebooks.py 05 08 --html            # two of them, plus HTML copies to read
    python scripts/run_notebooks.py 08 --full -p EPOCHS 3   # the real dataset (internet; a GPU helps)
    python scripts/run_notebooks.py --rehearse              # full mode, offline: a loopback mirror of each dataset

The same as `vision-studies run-notebooks`, run from the repository root wherever it is called from.
Executed notebooks and their results records go to runs/ (git-ignored). Exits 1 when a notebook fails.
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)
    from vision_studies.cli import main

    sys.exit(main(["run-notebooks", *sys.argv[1:]]))
