"""Write the stored hybrid files of the current payload version (``hybrid_v<N>_*.sciz``).

Run from the repository root after a payload version change::

    python tests/data/make_hybrid_payloads.py [CASE ...]

(version 7: ``python tests/data/make_hybrid_payloads.py halved-hevc halved-sperr``.)

Four files, one per base family (SPERR, SPERR in slabs with a neural filter, HEVC, a 2D
SPERR image; from version 7 on, two more whose HEVC and SPERR bases are halved, the only
payloads that version writes), and ``hybrid_v<N>_decoded.json`` with the shape, dtype and
SHA-256 of each decoded array; ``tests/test_hybrid.py`` checks that every stored version
keeps decoding to those values.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from napari_sciz.core import hybrid
from napari_sciz.core.api import compress, decompress
from napari_sciz.core.hybrid import basechoice, bases, codec, netstage
from napari_sciz.core.hybrid.payload import VERSION


def _volume(shape: tuple[int, ...], seed: int = 5) -> np.ndarray:
    """A two-phase volume with smooth shading and noise (sharp borders for the filters)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    vol = np.where(field > 0, 2500.0, 900.0) + rng.normal(0, 25, shape)
    return np.clip(vol, 0, 65535).astype(np.uint16)


def main() -> None:
    here = Path(__file__).parent
    cases = {
        "sperr": (bases.SPERRBase(), (24, 64, 72), False),
        "slabs": (bases.SPERRSlabsBase(2), (24, 64, 72), True),
        "hevc": (bases.HEVCBase(), (24, 64, 72), False),
        "sperr2d": (bases.SPERRBase(), (64, 72), False),
        "halved-hevc": (bases.HEVCBase(), (6, 160, 136), False),
        "halved-sperr": (bases.SPERRBase(), (96, 90), False),
    }
    record = here / f"hybrid_v{VERSION}_decoded.json"
    digests = json.loads(record.read_text()) if record.exists() else {}
    fit = hybrid.fit_hybrid_block
    for name in sys.argv[1:] or list(cases):
        base, shape, network = cases[name]
        basechoice.BASES = (base,)
        halved = name.startswith("halved")
        hybrid.fit_hybrid_block = (lambda *a, **k: fit(*a, halved=True, **k)) if halved else fit
        codec._refine_base = lambda best, *a, **k: best  # the forced base as it is
        if network:  # priced at nothing, the network is kept
            netstage._error_per_byte = lambda *a: 0.0
            netstage._PROBE_MARGIN = -1.0
            netstage._MIN_NETWORK_VOXELS = 1
        vol = _volume(shape)
        res = compress(vol, ratio=24, mode="hybrid", device="cpu", steps=200 if network else 40)
        (here / f"hybrid_v{VERSION}_{name}.sciz").write_bytes(res.data)
        decoded = decompress(res.data)
        digests[name] = {
            "shape": list(decoded.shape),
            "dtype": str(decoded.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest(),
        }
        print(name, len(res.data), "bytes", codec.describe(_payload(res.data)))
    record.write_text(json.dumps(digests, indent=1) + "\n")


def _payload(data: bytes) -> bytes:
    from napari_sciz.core.api import open_sciz

    return open_sciz(data)._file.payload(0)


if __name__ == "__main__":
    main()
