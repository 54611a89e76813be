"""``python -m tbptt_bench`` runs the ``tbptt-bench`` command line (see ``tbptt_bench.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
