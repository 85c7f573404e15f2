"""Lossless payloads of versions 2-7: the header reader, and the decoders of versions 2 and 3.

Versions 2 and 3 are decoded along wavefronts (version 3 has each wavefront's tokens sorted by
context class in the ANS stream, so that the decoder runs one fixed model per class run around
compiled kernels, :mod:`.kernels`); versions 4 to 7 go to :mod:`.lanes`.
"""

from __future__ import annotations

import numpy as np

from ...errors import FormatError
from .ctxtree import ContextTree
from .entropy import (
    _class_models,
    _token_tables,
)
from .lanes import decode_lanes, lane_plan, read_lane_ext
from .layout import _HEAD2, LANE_MAJOR_VERSION
from .predict import (
    _CLS_THR,
    _N_CLS2,
    _N_NBR,
    _N_SUB,
    _N_SUB_V6,
    _N_TEX,
    _SUB_LS,
    _V2_CAP,
    _V2_LS,
    _V2_SHIFT,
    _WAVE,
    _blend,
    _ctx_class,
    _err_sum,
    _Neighbours,
    _sub_predictions,
    _texture,
    _wave_order,
)
from .values import (
    _KIND_FLOAT_BITS,
    _KIND_INT,
    _KIND_QUANT_FLOAT,
    _unpack_uints,
    _words_and_table,
)


def _decode_v2(payload: bytes, shape3: tuple[int, ...]) -> tuple[np.ndarray, tuple]:
    """Mapped values of a version-2 or -3 payload, and the fields :func:`_finish` needs."""
    import constriction

    (_m, _v, kind, flags, d, h, w, crc, offset, lo, step, n_table, ntok, n_cls, mask,
     n_tex, n_hist, n_tb, n_bits, n_ls, keep_bits) = _HEAD2.unpack_from(payload)  # fmt: skip
    if (d, h, w) != shape3:
        raise FormatError(f"block shape {(d, h, w)} does not match the grid {shape3}")
    keep = (keep_bits >> np.arange(_N_CLS2 - 1, dtype=np.uint64)) & 1 == 1
    thr = _CLS_THR[keep]
    fixed = _v < 5  # contexts: activity classes x texture levels (else a context tree)
    if (
        kind > _KIND_QUANT_FLOAT
        or keep_bits >> (_N_CLS2 - 1)
        or (fixed and n_cls != thr.size + 1)
        or (not fixed and (keep_bits or n_tex != 1 or n_cls < 1))
        or n_tex not in (1, _N_TEX)
        or not 0 < mask < 1 << (_N_SUB_V6 if _v >= 6 else _N_SUB)
        or ntok < 2
    ):
        raise FormatError("implausible lossless block parameters")
    if kind in (_KIND_INT, _KIND_FLOAT_BITS) and (lo != 0.0 or step != 0.0):
        raise FormatError("implausible lossless block parameters")
    use_ls = bool(mask >> _SUB_LS & 1)
    if n_ls != (d if use_ls else 0):
        raise FormatError("bad predictor parameters in a lossless block")
    pos = _HEAD2.size
    ext = None
    if _v >= 4:
        ext, pos = read_lane_ext(payload, pos, (d, h, w), _v)
    q = _unpack_uints(payload[pos : pos + n_hist], n_cls * n_tex * ntok)
    q = q.reshape(n_cls * n_tex, ntok)
    pos += n_hist
    count_bytes = lane_bytes = b""
    if ext is not None:
        count_bytes = payload[pos : pos + ext.n_count]
        lane_bytes = payload[pos + ext.n_count : pos + ext.n_count + ext.n_lane]
        pos += ext.n_count + ext.n_lane
    ls_w = np.zeros((_N_NBR, max(d, 1)), np.int64)
    ls_b = np.zeros(max(d, 1), np.int64)
    for z in range(n_ls):
        *wts, bias = _V2_LS.unpack_from(payload, pos)
        ls_w[:, z], ls_b[z] = wts, bias
        pos += _V2_LS.size
    table_bytes = payload[pos : pos + n_tb]
    pos += n_tb
    bit_bytes = np.frombuffer(payload[pos : pos + n_bits], np.uint8)
    if bit_bytes.size != n_bits:
        raise FormatError("truncated lossless block")
    words, table = _words_and_table(payload, pos + n_bits, flags, table_bytes, n_table)

    if ext is not None:
        plan = lane_plan(
            q, count_bytes, lane_bytes, ext, (d, h, w), n_bits, _v >= LANE_MAJOR_VERSION
        )
        if ext.tree is not None:
            tree = ContextTree.from_bytes(ext.tree, n_cls)
        else:
            tree = ContextTree.from_classes(np.flatnonzero(keep), n_tex)
        v = decode_lanes(q, plan, words, bit_bytes, (d, h, w), mask, ls_w, ls_b, tree, ext)
        return v, (kind, flags, crc, offset, lo, step, table)
    if _v == 3:
        v = _decode_waves(q, words, bit_bytes, (d, h, w), mask, ls_w, ls_b, thr, n_tex, ntok)
        return v, (kind, flags, crc, offset, lo, step, table)
    probs_cls = np.where(q.sum(axis=1, keepdims=True) > 0, q, 1).astype(np.float64)
    # 64-bit big-endian window of the raw bit stream at every byte
    bb = np.concatenate([bit_bytes, np.zeros(8, np.uint8)]).astype(np.uint64)
    win64 = bb[: n_bits + 1] << np.uint64(56)
    for k in range(1, 8):
        win64 |= bb[k : n_bits + 1 + k] << np.uint64(56 - 8 * k)
    coder = constriction.stream.stack.AnsCoder(words)
    family = constriction.stream.model.Categorical(perfect=False)
    hw, n = h * w, d * h * w
    nbrs = _Neighbours(d, h, w)
    order, bounds = _wave_order(d, h, w)
    b_local, b_cells, b_start = nbrs.plan(order, bounds)
    offsets = nbrs.offsets
    vflat = np.zeros(n + hw, np.int64)
    k_sub = bin(mask).count("1")
    err = np.zeros((n + hw, k_sub), np.int32) if k_sub > 1 else None
    absr = np.zeros(n + hw, np.int64)
    cursor = 0
    # per token: number of raw bits, their mask, the value without them
    tok_nb, tok_hi = _token_tables(ntok)
    tok_nbu = tok_nb.astype(np.uint64)
    tok_mask = (np.uint64(1) << tok_nbu) - np.uint64(1)
    u64_64 = np.uint64(64)
    for g in range(len(bounds) - 1):
        idx = order[bounds[g] : bounds[g + 1]]
        nidx = idx + offsets
        if b_start[g] < b_start[g + 1]:
            nidx[:, b_local[b_start[g] : b_start[g + 1]]] = b_cells[:, b_start[g] : b_start[g + 1]]
        idx = idx + hw  # cells
        nv = vflat[nidx]
        if not use_ls:
            subs = _sub_predictions(nv, mask, None, 0)
        else:
            z = idx // hw - 1  # slice of each voxel
            if z[0] == z[-1]:
                subs = _sub_predictions(nv, mask, ls_w[:, z[:1]], ls_b[z[0]])
            else:
                subs = _sub_predictions(nv, mask, ls_w[:, z], ls_b[z])
        if err is not None:
            pred = _blend(subs, _err_sum(err, nidx))
        else:
            pred = subs[0]
        cls = _ctx_class(absr[nidx[:5]], thr)
        if n_tex > 1:
            cls = cls * n_tex + _texture(nv)
        tok = coder.decode(family, probs_cls[cls])
        nb = tok_nb[tok]
        cs = np.cumsum(nb)
        if cs[-1]:
            off = cs - nb + cursor
            cursor += int(cs[-1])
            if cursor > 8 * n_bits:
                raise FormatError("raw bit stream of a lossless block is too short")
            # tokens without raw bits have a zero mask (whatever their shift)
            sh = u64_64 - (off & 7).astype(np.uint64) - tok_nbu[tok]
            bits = (win64[off >> 3] >> sh) & tok_mask[tok]
            u = tok_hi[tok] + bits.astype(np.int64)
        else:
            u = tok.astype(np.int64)
        r = (u >> 1) ^ -(u & 1)
        val = pred + r
        vflat[idx] = val
        if err is not None:
            err[idx] = np.minimum(np.abs(val - subs), _V2_CAP).T
        absr[idx] = np.minimum(np.abs(r), _V2_CAP)
    if 8 * n_bits - cursor >= 8:
        raise FormatError("raw bit stream of a lossless block has extra bytes")
    return vflat[hw:].reshape(d, h, w), (kind, flags, crc, offset, lo, step, table)


def _decode_waves(
    q: np.ndarray,
    words: np.ndarray,
    bit_bytes: np.ndarray,
    shape3: tuple[int, int, int],
    mask: int,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    n_tex: int,
    ntok: int,
) -> np.ndarray:
    """Mapped values of a version-3 payload: compiled wavefronts, one model per class run."""
    import constriction

    from . import kernels

    d, h, w = shape3
    models = _class_models(q)
    coder = constriction.stream.stack.AnsCoder(words)
    sub_ids = np.array([i for i in range(_N_SUB) if mask >> i & 1], np.int64)
    # state of the last kernels.RING wavefronts: (slot, slice + 1, row); slice 0 stays zero
    n_ring = kernels.RING * (d + 1) * h
    ring_v = np.zeros(n_ring, np.int64)
    ring_err = np.zeros((n_ring, sub_ids.size), np.int32)
    ring_abs = np.zeros(n_ring, np.int32)
    wt_lut = kernels.weight_table(kernels.WT_LUT)
    cls_lut = kernels.class_table(thr)
    out = np.empty(d * h * w, np.int64)
    shape = np.array(shape3, np.int64)
    tok_nb, tok_hi = _token_tables(ntok)
    padded_bits = np.concatenate([bit_bytes, np.zeros(8, np.uint8)])
    n_bits = bit_bytes.size
    n_cls = len(models)
    cursor = 0
    for t in range(_WAVE[0] * (d - 1) + _WAVE[1] * (h - 1) + w if out.size else 0):
        subs, pred, runs, starts = kernels.wave_context(
            t, shape, ring_v, ring_err, ring_abs, sub_ids, ls_w, ls_b, thr, cls_lut, wt_lut, n_tex,
            _V2_SHIFT, n_cls,
        )  # fmt: skip
        counts = np.diff(starts).tolist()
        parts = [coder.decode(models[c], k) for c, k in enumerate(counts) if k]
        tok_sorted = parts[0] if len(parts) == 1 else np.concatenate(parts)
        cursor = kernels.wave_finish(
            t, shape, runs, tok_sorted, tok_nb, tok_hi, padded_bits, n_bits, cursor,
            subs, pred, ring_v, ring_err, ring_abs, out, _V2_CAP,
        )  # fmt: skip
        if cursor < 0:
            raise FormatError("raw bit stream of a lossless block is too short")
    if 8 * n_bits - cursor >= 8:
        raise FormatError("raw bit stream of a lossless block has extra bytes")
    return out.reshape(d, h, w)
