"""``python -m napari_sciz.bench``: run the benchmark (see :mod:`napari_sciz.bench.run`)."""

from __future__ import annotations

import sys

from .run import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
