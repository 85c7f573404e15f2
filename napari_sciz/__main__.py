"""``python -m napari_sciz``: the ``sciz`` command line (see :mod:`napari_sciz.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
