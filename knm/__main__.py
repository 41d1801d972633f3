"""``python -m knm``: the ``knm`` command line."""

from __future__ import annotations

import sys

from knm.cli.root import main

if __name__ == "__main__":
    sys.exit(main())
