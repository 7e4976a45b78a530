"""``python -m gpudeblur``: the command line (see :mod:`gpudeblur.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
