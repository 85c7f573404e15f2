"""Estimate: logistic mixing of adaptive binary contexts in place of the stored context tree.

An experiment behind docs/lossless.md (issue 16's "small online-trained logistic mixer", not
built). Each block is predicted and tokenized as the lossless coder does (one lane); the tokens
are then costed two ways:

* the coder's model: one stored histogram per leaf of its context tree (ideal code length of
  the tokens per leaf, plus 12 bits per nonzero histogram entry);
* a context-mixing model (PAQ/lpaq style): every token coded as unary binary decisions, each
  decision's probability the logistic mix of 8 adaptive models (the tree leaf, the activity,
  the west and north residual classes, gradient x intensity, the west and north tokens, the
  previous-slice residual x the blend's error, the blend's spread x the previous-slice
  difference, and an order-0 model), mixer weights selected by activity and decision, then an
  adaptive probability map (SSE) on the leaf; ideal code length, no stored tables.

Raw bits are the same for both. Printed per volume in bits per voxel and as a share of the file.

    python scripts/mixing_estimate.py VOLUME.tif [...]
"""

from __future__ import annotations

import argparse

import numpy as np
from numba import njit

from napari_sciz.core.lossless import _map_values, encode_block
from napari_sciz.core.lossless.ctxtree import level_shift
from napari_sciz.core.lossless.predict import _SUB_LS, _SUB_XLS
from napari_sciz.core.lossless.raster import _context_tree
from napari_sciz.core.lossless.tokens import _encode_v2_core, _fit_ls, choose_map, rank_masks
from napari_sciz.core.lossless.xls import fit_xls


def coded_tokens(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Tokens, raw-bit counts, leaves (and their number) and properties of block ``v`` (one
    lane, the coder's predictor choice)."""
    m = _map_values(np.ascontiguousarray(v), "lossless", None)
    vv = m.values.reshape(v.shape)
    xls = fit_xls(vv) if vv.size >= 4096 else None
    mask = rank_masks(vv, xls)[0][1]
    if not mask >> _SUB_XLS & 1:
        xls = None
    ls = _fit_ls(vv) if mask >> _SUB_LS & 1 else None
    core = _encode_v2_core(
        vv, mask, ls, choose_map(vv, mask, xls), shift=level_shift(int(vv.max())), xls=xls
    )[0]
    tok, nb, _raw, _negate, ctx, tree = _context_tree([core])
    return tok, nb, ctx, tree.n_leaves, core["props"].astype(np.int64)


def tree_bits(tok: np.ndarray, ctx: np.ndarray, n_leaves: int) -> float:
    """Ideal code length of the tokens with one histogram per leaf, histograms included."""
    ntok = int(tok.max()) + 1
    c = np.bincount(ctx * ntok + tok, minlength=n_leaves * ntok).reshape(n_leaves, ntok)
    p = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    return float(-(c * np.log2(np.where(c > 0, p, 1))).sum() + 12.0 * (c > 0).sum())


@njit(cache=True)
def mixed_bits(tok, ctxs, sizes, mixsel, ntok, limit, rate):  # noqa: ANN001, ANN201
    """Ideal code length of ``tok`` under the mixing model (see the module doc)."""
    n_models, n = ctxs.shape
    offs = np.zeros(n_models + 1, np.int64)
    for j in range(n_models):
        offs[j + 1] = offs[j] + sizes[j] * ntok
    p = np.full(offs[n_models], 0.5)
    cnt = np.zeros(offs[n_models], np.int64)
    weights = np.full((40 * ntok, n_models + 1), 0.3)
    st = np.zeros(n_models + 1)
    slots = np.zeros(n_models, np.int64)
    sse = np.zeros((sizes[0] * ntok, 33))
    for a in range(sizes[0] * ntok):
        for b in range(33):
            sse[a, b] = 1.0 / (1.0 + np.exp(-((b - 16) / 2.0)))
    total = 0.0
    for i in range(n):
        t = tok[i]
        for k in range(ntok - 1):
            bit = 1 if t > k else 0
            for j in range(n_models):
                s = offs[j] + ctxs[j, i] * ntok + k
                slots[j] = s
                q = min(max(p[s], 1e-4), 1 - 1e-4)
                st[j] = np.log(q / (1 - q))
            st[n_models] = 0.3
            row = mixsel[i] * ntok + k
            dot = 0.0
            for j in range(n_models + 1):
                dot += weights[row, j] * st[j]
            pm = min(max(1.0 / (1.0 + np.exp(-dot)), 1e-4), 1 - 1e-4)
            x = min(max(dot * 2.0 + 16.0, 0.0), 31.999)
            b0 = int(x)
            fr = x - b0
            srow = ctxs[0, i] * ntok + k
            ps = min(max(sse[srow, b0] * (1 - fr) + sse[srow, b0 + 1] * fr, 1e-4), 1 - 1e-4)
            pf = (pm + 3 * ps) / 4
            sse[srow, b0] += (bit - sse[srow, b0]) * (1 - fr) * 0.02
            sse[srow, b0 + 1] += (bit - sse[srow, b0 + 1]) * fr * 0.02
            total += -np.log2(pf if bit else 1 - pf)
            for j in range(n_models + 1):
                weights[row, j] += rate * (bit - pm) * st[j]
            for j in range(n_models):
                s = slots[j]
                p[s] += (bit - p[s]) / (cnt[s] + 1.5)
                if cnt[s] < limit:
                    cnt[s] += 1
            if bit == 0:
                break
    return total


def estimate(v: np.ndarray) -> dict[str, float]:
    """Bits per voxel of the tree's tokens, the mixed tokens, the raw bits and the file."""
    tok, nb, ctx, n_leaves, props = coded_tokens(v)
    shape = v.shape
    t3 = tok.reshape(shape)
    west = np.zeros_like(t3)
    west[:, :, 1:] = t3[:, :, :-1]
    north = np.zeros_like(t3)
    north[:, 1:, :] = t3[:, :-1, :]
    models = [
        ctx,
        props[0],
        props[6] * 40 + props[7],
        props[1] * 32 + props[3],
        np.minimum(west.ravel(), 23) * 24 + np.minimum(north.ravel(), 23),
        props[8] * 40 + props[13],
        props[10] * 40 + props[11],
        np.zeros_like(ctx),
    ]
    ctxs = np.ascontiguousarray(np.stack([np.asarray(a, np.int64) for a in models]))
    sizes = ctxs.max(axis=1) + 1
    mixsel = np.minimum(props[0], 39)
    n = tok.size
    mixed = mixed_bits(tok, ctxs, sizes, mixsel, int(tok.max()) + 1, 1023, 0.003)
    return {
        "tree": tree_bits(tok, ctx, n_leaves) / n,
        "mixed": mixed / n,
        "raw": float(nb.sum()) / n,
        "file": 8.0 * len(encode_block(np.ascontiguousarray(v))) / n,
    }


def main() -> None:
    """Print the estimate of each volume."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volumes", nargs="+")
    args = parser.parse_args()
    import tifffile

    for path in args.volumes:
        v = tifffile.imread(path)
        e = estimate(v[None] if v.ndim == 2 else v)
        change = 100.0 * (e["mixed"] - e["tree"]) / e["file"]
        print(
            f"{path}: tree tokens {e['tree']:.3f}, mixed {e['mixed']:.3f}, raw {e['raw']:.3f},"
            f" file {e['file']:.3f} bits/voxel: mixing {change:+.2f} % of the file"
        )


if __name__ == "__main__":
    main()
