"""``python -m varclust``: the command line (as the ``varclust`` script)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
