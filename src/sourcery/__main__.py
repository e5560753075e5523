"""``python -m sourcery``: the same as the ``sourcery`` command."""

from __future__ import annotations

import sys

from sourcery._apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
