"""Estimate: SZ3's interpolation predictor with in-loop quantization, coded by entropy.

An experiment behind docs/lossless.md ("SZ3's predictor in our coder", not built): the volume is
predicted coarse to fine (multilevel cubic interpolation along one axis at a time, linear at
the edges), each prediction quantized in the loop on a grid of step ``2E + 1`` in integer
arithmetic, and the quantization indices costed by their empirical entropy per context (level
x a 7-class activity of the two reconstructed neighbours) plus 12 bits per histogram entry.
Printed beside SZ3's own stream at the same bound.

    python scripts/interp_estimate.py [--bounds 4,16] VOLUME.tif [...]
"""

from __future__ import annotations

import argparse

import numpy as np


def entropy_bytes(q: np.ndarray, ctx: np.ndarray) -> float:
    """Empirical entropy of ``q`` per context, plus 12 bits per histogram entry, in bytes."""
    bits = 0.0
    for c in np.unique(ctx):
        _, counts = np.unique(q[ctx == c], return_counts=True)
        bits += -(counts * np.log2(counts / counts.sum())).sum() + 12 * len(counts)
    return bits / 8


def _along(rec: np.ndarray, idx: list, axis: int, pos: np.ndarray) -> np.ndarray:
    """Reconstructed values at positions ``pos`` (clipped) along ``axis`` of the pass."""
    lines = list(idx)
    lines[axis] = slice(None)
    return np.take(rec[tuple(lines)], np.clip(pos, 0, rec.shape[axis] - 1), axis=axis)


def estimate(x: np.ndarray, bound: int) -> tuple[float, int]:
    """Estimated bytes of ``x`` (integers) within ``bound``, and the largest error."""
    x = x.astype(np.int64)
    step = 2 * bound + 1
    rec = np.zeros_like(x)
    levels = int(np.ceil(np.log2(max(x.shape))))
    corner = tuple(slice(0, None, 1 << levels) for _ in range(x.ndim))
    q0 = np.rint(x[corner] / step).astype(np.int64)
    rec[corner] = q0 * step
    qs, ctxs = [q0.ravel()], [np.full(q0.size, -1)]
    for level in range(levels, 0, -1):
        s, h = 1 << level, 1 << (level - 1)
        for axis in range(x.ndim):
            idx = [
                slice(0, None, h) if a < axis else slice(h, None, s) if a == axis else
                slice(0, None, s)
                for a in range(x.ndim)
            ]  # fmt: skip
            target = x[tuple(idx)]
            if not target.size:
                continue
            n = x.shape[axis]
            pos = np.arange(h, n, s)
            shape = [1] * x.ndim
            shape[axis] = len(pos)
            a, b = _along(rec, idx, axis, pos - h), _along(rec, idx, axis, pos + h)
            inside = ((pos + h) < n).reshape(shape)
            pred = np.where(inside, (a + b + 1) // 2, a)
            c, d = _along(rec, idx, axis, pos - 3 * h), _along(rec, idx, axis, pos + 3 * h)
            cubic = ((pos - 3 * h >= 0) & (pos + 3 * h < n)).reshape(shape)
            pred = np.where(cubic & inside, (-c + 9 * a + 9 * b - d + 8) // 16, pred)
            q = np.rint((target - pred) / step).astype(np.int64)
            rec[tuple(idx)] = pred + q * step
            activity = np.minimum(np.log2(1 + np.abs(b - a) // step).astype(np.int64), 6)
            qs.append(q.ravel())
            ctxs.append((level * 10 + activity).ravel())
    return entropy_bytes(np.concatenate(qs), np.concatenate(ctxs)), int(np.abs(rec - x).max())


def main() -> None:
    """Print the estimate and SZ3's stream size for each volume and bound."""
    import imagecodecs
    import tifffile

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("volumes", nargs="+")
    p.add_argument("--bounds", default="4,16")
    args = p.parse_args()
    for path in args.volumes:
        v = tifffile.imread(path)
        for bound in (int(b) for b in args.bounds.split(",")):
            est, err = estimate(v, bound)
            sz3 = len(imagecodecs.sz3_encode(v.astype(np.float32), "abs", abs=float(bound)))
            print(f"{path} E={bound}: estimate {est:.0f} B (error {err}), SZ3 {sz3} B")


if __name__ == "__main__":
    main()
