"""`python -m vision_studies ...`: the `vision-studies` command, for launchers that start a module (torchrun...)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
