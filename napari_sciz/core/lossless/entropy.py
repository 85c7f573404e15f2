"""Residual tokens and their entropy coding (payload versions 2 and 3).

Residuals are zigzag-mapped and split into a token and raw bits; tokens are coded with
constriction's ANS coder and one stored histogram per context class (adjacent classes merged
while that saves bits).
"""

from __future__ import annotations

import numpy as np

#: histograms with more symbols than this are scaled to this total (else exact counts)
_HIST_TOTAL = 1 << 16


#: tokens: zigzag value u < 16 is its own token; above, exponent and next bit, rest raw bits
_TOK_DIRECT = 16


def _hist_cost(c: np.ndarray) -> float:
    """Code length of the symbols of one histogram plus an estimate of its storage (bits)."""
    nz = c[c > 0]
    if nz.size == 0:
        return 0.0
    return float(-(nz * np.log2(nz / nz.sum())).sum()) + 12.0 * nz.size


def _merge_classes(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Which activity thresholds to keep (adjacent classes merged while that saves bits).

    ``counts``: ``(n_tex, n_classes, n_tokens)``; the same merge applies to every texture
    level. Returns the mask of kept thresholds and the estimated total bits.
    """

    def cost(c: np.ndarray) -> float:
        return sum(_hist_cost(row) for row in c)

    n = counts.shape[1]
    bins = [counts[:, k].astype(np.int64) for k in range(n)]
    keep = np.ones(n - 1, bool)
    where = list(range(n - 1))  # threshold index between bins i and i + 1
    costs = [cost(b) for b in bins]
    while len(bins) > 1:
        deltas = [
            cost(bins[i] + bins[i + 1]) - costs[i] - costs[i + 1] for i in range(len(bins) - 1)
        ]
        i = int(np.argmin(deltas))
        if deltas[i] > 0:
            break
        bins[i : i + 2] = [bins[i] + bins[i + 1]]
        costs[i : i + 2] = [costs[i] + costs[i + 1] + deltas[i]]
        keep[where.pop(i)] = False
    return keep, float(sum(costs))


def _tokenize(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals -> (token, number of raw bits, raw bits) (hybrid integer code)."""
    r = np.asarray(r, np.int64)
    u = (r << 1) ^ (r >> 63)  # zigzag: 2r, or -2r - 1 for negative r
    tok = u.copy()
    nb = np.zeros_like(u)
    raw = np.zeros_like(u)
    big = np.flatnonzero(u >= _TOK_DIRECT)  # only these have raw bits
    ub = u[big]
    e = np.frexp(ub.astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 u)
    nbb = e - 1
    tok[big] = _TOK_DIRECT + 2 * (e - 4) + ((ub >> nbb) & 1)
    nb[big] = nbb
    raw[big] = ub & ((np.int64(1) << nbb) - 1)
    return tok, nb, raw


def _token_bits(tok: np.ndarray) -> np.ndarray:
    """Number of raw bits that follow each token."""
    return np.where(tok >= _TOK_DIRECT, (tok - (_TOK_DIRECT - 6)) >> 1, 0)


def _token_tables(ntok: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token of an alphabet of ``ntok``: its number of raw bits, and the value ``u``
    without them (the decoders add the raw bits)."""
    tok = np.arange(ntok, dtype=np.int64)
    nb = _token_bits(tok)
    return nb, np.where(tok >= _TOK_DIRECT, (2 + (tok & 1)) << nb, tok)


def _pack_bits(nb: np.ndarray, raw: np.ndarray) -> bytes:
    """Raw bits of every symbol (most significant first, in decoding order), packed."""
    sel = nb > 0
    nb, raw = nb[sel], raw[sel]
    out = []
    carry = np.zeros(0, np.uint8)
    step = 1 << 18
    for s in range(0, nb.size, step):
        n_c, r_c = nb[s : s + step], raw[s : s + step]
        owner = np.repeat(np.arange(n_c.size), n_c)
        bitpos = np.arange(owner.size) - (np.cumsum(n_c) - n_c)[owner]
        bits = ((r_c[owner] >> (n_c[owner] - 1 - bitpos)) & 1).astype(np.uint8)
        bits = np.concatenate([carry, bits])
        cut = bits.size - bits.size % 8
        out.append(np.packbits(bits[:cut]).tobytes())
        carry = bits[cut:]
    if carry.size:
        out.append(np.packbits(carry).tobytes())
    return b"".join(out)


def _quantize_hist(counts: np.ndarray) -> np.ndarray:
    """Histograms as stored: exact counts, or scaled to a total of ``2^16`` when larger."""
    tot = counts.sum(axis=1, keepdims=True)
    q = np.where(tot > _HIST_TOTAL, (counts * _HIST_TOTAL) // np.maximum(tot, 1), counts)
    return np.where(counts > 0, np.maximum(q, 1), 0)


def _class_models(q: np.ndarray, trim: bool = False) -> list:
    """One fixed categorical model per context class (an unused class: uniform).

    ``trim`` (version 7): a class's alphabet ends at its last token with a nonzero count
    (constriction's decoder searches the alphabet: shorter is faster, and no probability is
    lent to tokens that never occur).
    """
    import constriction

    probs = np.where(q.sum(axis=1, keepdims=True) > 0, q, 1).astype(np.float64)
    if trim:
        return [trimmed_categorical(row) for row in probs]
    return [constriction.stream.model.Categorical(row, perfect=False) for row in probs]


def trimmed_categorical(counts: np.ndarray):  # noqa: ANN201 - a constriction model
    """Categorical model of ``counts`` (some nonzero), the alphabet ending at the last nonzero
    one (two symbols at least: constriction needs them)."""
    import constriction

    counts = np.asarray(counts, np.float64)
    n = max(int(np.flatnonzero(counts)[-1]) + 1, 2)
    return constriction.stream.model.Categorical(np.pad(counts, (0, 2))[:n], perfect=False)
