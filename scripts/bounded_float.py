"""Bounded mode on float stacks: our files against SZ3 and SPERR at the same absolute bound.

The shared data has one float stack (flowdec's deconvolved bead); deconvolution and
reconstruction outputs are float32 too, so float32 versions of three integer stacks are
measured beside it, scaled off the integer grid (nbsd / 7.3, spam_snow_xct * 0.01, neuroproof
/ 3.1: values no longer on a step-1 lattice). Ratio of the complete ``.sciz`` file (header,
index, checksums) against SZ3's and SPERR's bare streams; every decode checked within E.

    python scripts/bounded_float.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import imagecodecs as ic
import numpy as np
import tifffile

import napari_sciz


def _variants(data: Path) -> dict[str, np.ndarray]:
    def read(name: str) -> np.ndarray:
        return tifffile.imread(data / f"{name}.tif")

    return {
        "flowdec_bead_25pct": read("flowdec_bead_25pct").astype(np.float32),
        "nbsd_cells3d_nuclei / 7.3": (read("nbsd_cells3d_nuclei") / 7.3).astype(np.float32),
        "spam_snow_xct * 0.01": (read("spam_snow_xct") * 0.01).astype(np.float32),
        "neuroproof_fib25_crop128 / 3.1": (read("neuroproof_fib25_crop128") / 3.1).astype(
            np.float32
        ),
    }


def main() -> None:
    data = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/data")
    print("| volume (float32) | E | napari-sciz bounded | SZ3 (abs) | SPERR (pwe) | ours vs best |")
    print("|---|---|---|---|---|---|")
    for name, x in _variants(data).items():
        span = float(x.max() - x.min())
        for rel in (1e-3, 1e-2, 4e-2):
            e = float(np.float32(rel * span))
            t = time.perf_counter()
            res = napari_sciz.compress(x, mode="bounded", max_error=e)
            enc = time.perf_counter() - t
            y = napari_sciz.decompress(res.data)
            assert np.abs(y.astype(np.float64) - x).max() <= e
            sz3 = len(ic.sz3_encode(x, "abs", abs=e))
            sperr = len(ic.sperr_encode(x.astype(np.float64), e, "pwe"))
            ours = x.nbytes / res.nbytes
            best = max(x.nbytes / sz3, x.nbytes / sperr)
            gain = 100 * (ours / best - 1)
            print(f"| {name} | {e:.4g} ({rel:g} of range) | **{ours:.2f}** ({enc:.1f} s) "
                  f"| {x.nbytes / sz3:.2f} | {x.nbytes / sperr:.2f} | {gain:+.1f} % |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
