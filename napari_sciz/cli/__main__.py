"""``python -m napari_sciz.cli``: the ``sciz`` command."""

import sys

from . import main

sys.exit(main())
