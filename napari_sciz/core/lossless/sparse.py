"""Sparse contexts (payload version 7): nearly-all-zero token runs coded as gaps.

A context whose tokens are almost all zero (the air of a CT scan: residual 0 in a flat, low
activity neighbourhood) costs the ANS decoder as much time per token as a busy one, though it
carries almost no information. Version 7 may code such a context, in each lane, as the gaps
between its nonzero tokens and those tokens: a gap ``g`` as the bucket ``b = floor(log2(g +
1))`` (one categorical model per sparse context, its exact counts stored) and the ``b`` low
bits of ``g + 1`` (uniform), then the nonzero tokens with the context's histogram less its
zero entry. The decoder rebuilds the context's token run with numpy, so its time goes with
the number of nonzero tokens, not of voxels. The encoder chooses it per context where it is
estimated smaller, or at most :data:`SPEED_BITS` bits per token larger.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from .entropy import _hist_cost, trimmed_categorical
from .values import _pack_uints, _unpack_uints

#: a sparse context may cost this many more bits per token than the dense one (the decoder
#: saves about 15 ns per token; a context-tree test costs 0.005 bits for a few ns)
SPEED_BITS = 0.005


#: gap buckets: ``floor(log2(g + 1))`` of a gap below ``2**MAX_BUCKET``
MAX_BUCKET = 23


#: header of the sparse section: number of sparse contexts, number of gap buckets
_HEAD = struct.Struct("<HB")


def split_run(tok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps (zeros before each nonzero token, and after the last) and the nonzero tokens."""
    nz = np.flatnonzero(tok)
    edges = np.concatenate([[-1], nz, [tok.size]])
    return np.diff(edges) - 1, tok[nz]


def _buckets(gaps: np.ndarray) -> np.ndarray:
    """``floor(log2(g + 1))`` of every gap."""
    return np.frexp((gaps + 1).astype(np.float64))[1].astype(np.int64) - 1


def _model_bits(counts: np.ndarray, hist: np.ndarray) -> float:
    """Bits of symbols with ``counts`` coded with the stored histogram ``hist``."""
    used = counts > 0
    return float(-(counts[used] * np.log2(hist[used] / hist.sum())).sum())


@dataclass
class SparseTable:
    """Which contexts of a block are sparse, their gap-bucket counts and nonzero tokens.

    Attributes
    ----------
    ctx : numpy.ndarray
        The sparse contexts, increasing.
    hist : numpy.ndarray
        ``(len(ctx), n_bucket)``: exact gap-bucket counts of each sparse context.
    nnz : numpy.ndarray
        ``(lanes, len(ctx))``: nonzero tokens of each sparse context in each lane.
    """

    ctx: np.ndarray
    hist: np.ndarray
    nnz: np.ndarray

    def to_bytes(self) -> bytes:
        """The stored section (empty when no context is sparse)."""
        if self.ctx.size == 0:
            return b""
        ints = np.concatenate([np.diff(self.ctx, prepend=0), self.hist.ravel(), self.nnz.ravel()])
        return _HEAD.pack(self.ctx.size, self.hist.shape[1]) + _pack_uints(ints)

    @classmethod
    def from_bytes(cls, data: bytes, n_ctx: int, lanes: int) -> SparseTable:
        """Read a stored section (``b""``: no sparse context)."""
        if not data:
            return cls(
                np.zeros(0, np.int64), np.zeros((0, 1), np.int64), np.zeros((lanes, 0), np.int64)
            )
        if len(data) < _HEAD.size:
            raise FormatError("truncated sparse contexts in a lossless block")
        n, n_bucket = _HEAD.unpack_from(data)
        if not 1 <= n <= n_ctx or not 1 <= n_bucket <= MAX_BUCKET:
            raise FormatError("implausible sparse contexts in a lossless block")
        ints = _unpack_uints(data[_HEAD.size :], n * (1 + n_bucket + lanes))
        ctx = np.cumsum(ints[:n])
        if np.any(np.diff(ctx) <= 0) or ctx[-1] >= n_ctx:
            raise FormatError("implausible sparse contexts in a lossless block")
        hist = ints[n : n + n * n_bucket].reshape(n, n_bucket)
        nnz = ints[n + n * n_bucket :].reshape(lanes, n)
        if np.any(hist.sum(axis=1) != nnz.sum(axis=0) + lanes):
            raise FormatError("sparse context counts of a lossless block do not match")
        return cls(ctx, hist, nnz)


def choose(tok: np.ndarray, ctx: np.ndarray, lane_cuts: np.ndarray, q: np.ndarray) -> SparseTable:
    """The sparse contexts of a block: where the gap code is estimated at most
    :data:`SPEED_BITS` per token larger than the dense one.

    ``tok``, ``ctx``: every voxel's token and context, lane by lane (C order inside a lane);
    ``lane_cuts``: where each lane starts, and the end; ``q``: the stored histograms.
    """
    lanes = lane_cuts.size - 1
    n_ctx = q.shape[0]
    total = np.bincount(ctx, minlength=n_ctx)
    zeros = np.bincount(ctx[tok == 0], minlength=n_ctx)
    picked, hists, nnzs = [], [], []
    for c in np.flatnonzero((total >= 64) & (zeros >= 0.9 * total)).tolist():
        idx = np.flatnonzero(ctx == c)  # lane by lane, C order
        runs = np.split(tok[idx], np.searchsorted(idx, lane_cuts[1:-1]))
        if max(r.size for r in runs) >= 1 << MAX_BUCKET:
            continue
        split = [split_run(r) for r in runs]
        buckets = np.concatenate([_buckets(g) for g, _ in split])
        nz = np.concatenate([t for _, t in split])
        hist = np.bincount(buckets, minlength=1)
        counts = np.bincount(tok[idx], minlength=q.shape[1])
        dense = _model_bits(counts, q[c].astype(np.float64))
        sparse = _hist_cost(hist) + float(buckets.sum())  # (bucket codes, low bits)
        if nz.size:
            sparse += _model_bits(counts[1:], q[c, 1:].astype(np.float64))
        sparse += 16.0 * lanes  # the nonzero counts
        if sparse <= dense + SPEED_BITS * idx.size:
            picked.append(c)
            hists.append(hist)
            nnzs.append([t.size for _, t in split])
    if not picked:
        return SparseTable.from_bytes(b"", n_ctx, lanes)
    n_bucket = max(h.size for h in hists)
    hist = np.stack([np.pad(h, (0, n_bucket - h.size)) for h in hists])
    return SparseTable(np.array(picked, np.int64), hist, np.array(nnzs, np.int64).T)


class SparseCoder:
    """Models of a block's sparse contexts, for encoding and decoding their token runs.

    Parameters
    ----------
    table : SparseTable
        The block's sparse contexts.
    q : numpy.ndarray
        The block's stored histograms (their zero entries are dropped for the nonzero
        tokens).
    """

    def __init__(self, table: SparseTable, q: np.ndarray) -> None:
        import constriction

        self.table = table
        self.index = {int(c): k for k, c in enumerate(table.ctx)}
        self.gap_models = [trimmed_categorical(h) for h in table.hist]
        self.nz_models = [
            trimmed_categorical(q[c, 1:]) if q[c, 1:].any() else None for c in table.ctx.tolist()
        ]
        self.uniform = constriction.stream.model.Uniform()

    def segments(self, c: int, run: np.ndarray) -> list[tuple]:
        """``(symbols, model, *params)`` to encode, in decoding order, for context ``c``'s
        token run in one lane."""
        k = self.index[c]
        gaps, nz = split_run(run)
        b = _buckets(gaps)
        out: list[tuple] = [(b.astype(np.int32), self.gap_models[k])]
        big = b > 0
        if big.any():
            mant = (gaps[big] + 1 - (np.int64(1) << b[big])).astype(np.int32)
            out.append((mant, self.uniform, (np.int64(1) << b[big]).astype(np.int32)))
        if nz.size:
            out.append(((nz - 1).astype(np.int32), self.nz_models[k]))
        return out

    def decode(self, coder: object, c: int, lane: int, total: int) -> np.ndarray:
        """Context ``c``'s ``total`` tokens in ``lane``, from the ANS ``coder``."""
        k = self.index[c]
        nnz = int(self.table.nnz[lane, k])
        if nnz > total:
            raise FormatError("sparse context counts of a lossless block do not match")
        b = coder.decode(self.gap_models[k], nnz + 1).astype(np.int64)  # type: ignore[attr-defined]
        if b.max() >= MAX_BUCKET:
            raise FormatError("implausible gap in a lossless block")
        x = np.int64(1) << b
        big = b > 0
        if big.any():
            x[big] += coder.decode(self.uniform, x[big].astype(np.int32))  # type: ignore[attr-defined]
        gaps = x - 1
        if int(gaps.sum()) + nnz != total:
            raise FormatError("sparse context counts of a lossless block do not match")
        out = np.zeros(total, np.int64)
        if nnz:
            if self.nz_models[k] is None:
                raise FormatError("sparse context of a lossless block has no nonzero tokens")
            where = np.cumsum(gaps[:-1] + 1) - 1
            out[where] = coder.decode(self.nz_models[k], nnz) + 1  # type: ignore[attr-defined]
        return out
