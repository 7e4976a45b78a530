"""``python -m gpudeblur``: the command line (see :mod:`gpudeblur.cli`)."""

import sys

from .cli import entry

if __name__ == "__main__":
    sys.exit(entry())
