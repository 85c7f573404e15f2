"""Compiled evaluation of the ARM (numba): features and integer network, node by node.

The numpy formulation of :mod:`.arm` (:func:`~.arm.level_features` then
:func:`~.arm.arm_parameters`) builds a ``(nodes, 23)`` feature matrix and multiplies it in
int64, which numpy does without BLAS; on a wavefront of a few thousand nodes the temporaries
and calls cost more than the arithmetic. :func:`node_parameters` does the same integer
operations per node without temporaries: the Mitchell logarithm with shifts instead of
``frexp`` (equal for integers, tested), the hidden layer, the output layer and the scale code.
Results are identical to the numpy path's, so files do not depend on which one coded them.
Compiled on first use and cached on disk by numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["LOG_TABLE", "log_table", "mitchell_log", "node_parameters"]


@njit(cache=True, nogil=True, inline="always")
def mitchell_log(q: np.int64, fraction_bits: int) -> np.int64:
    """Signed fixed-point ``log2(1 + |q|)`` (:func:`~.arm.log_features` for one integer)."""
    v = abs(q) + 1
    e = 0
    while (v >> (e + 1)) > 0:
        e += 1
    fixed = (e << fraction_bits) + (((v - (1 << e)) << fraction_bits) >> e)
    return -fixed if q < 0 else fixed


#: Mitchell logs of ``|q| < LOG_TABLE`` are read from a table (latents are mostly small)
LOG_TABLE = 4096


def log_table(fraction_bits: int) -> np.ndarray:
    """:func:`mitchell_log` of ``0 .. LOG_TABLE - 1``."""
    return np.array([mitchell_log(q, fraction_bits) for q in range(LOG_TABLE)], dtype=np.int64)


@njit(cache=True, nogil=True)
def node_parameters(
    grid: np.ndarray,
    pidx: np.ndarray,
    nodes: np.ndarray,
    parent: np.ndarray,
    deltas: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    e1: int,
    e2: int,
    fraction_bits: int,
    table: np.ndarray,
    logs: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
) -> None:
    """Laplace mean and scale of the nodes ``nodes`` (raster indices) of a level.

    ``grid`` is the padded level (decoded so far), ``pidx`` the padded index of every node,
    ``parent`` each node's three parent features, ``deltas`` the flat offsets of the causal
    neighbours; ``w1 .. e2`` are :class:`~.arm.ArmWeights`' fields (int64), ``table`` the
    scale table and ``logs`` :func:`log_table`. Writes ``mean`` and ``scale`` (float64, one
    per node of ``nodes``).
    """
    k = deltas.shape[0]
    n_feat = 2 * k + 3
    hidden = w1.shape[0]
    shift = e2 + fraction_bits
    unit = 2.0**-shift
    feats = np.empty(n_feat, np.int64)
    n_logs = logs.shape[0]
    for i in range(nodes.shape[0]):
        node = nodes[i]
        at = pidx[node]
        for j in range(k):
            q = grid[at + deltas[j]]
            a = abs(q)
            lf = logs[a] if a < n_logs else mitchell_log(a, fraction_bits)
            feats[j] = -lf if q < 0 else lf
            feats[k + j] = lf
        feats[2 * k] = parent[node, 0]
        feats[2 * k + 1] = parent[node, 1]
        feats[2 * k + 2] = parent[node, 2]
        out0 = np.int64(b2[0])
        out1 = np.int64(b2[1])
        for h in range(hidden):
            acc = np.int64(b1[h])
            for j in range(n_feat):
                acc += w1[h, j] * feats[j]
            if acc > 0:
                value = acc >> e1
                out0 += w2[0, h] * value
                out1 += w2[1, h] * value
        mean[i] = out0 * unit
        code = (out1 >> (shift - 4)) + 96
        code = min(max(code, 0), 255)
        scale[i] = table[code]
