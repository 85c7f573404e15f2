"""Lossless payloads of versions 2 and 3: the encoder, and the decoders of both.

Version 3 is version 2 with each wavefront's tokens sorted by context class in the ANS
stream, so that the decoder runs one fixed model per class run around compiled kernels
(:mod:`.kernels`).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ...errors import FormatError
from .entropy import (
    _TOK_DIRECT,
    _ans_encode_by_class,
    _class_models,
    _merge_classes,
    _pack_bits,
    _quantize_hist,
    _token_bits,
    _tokenize,
)
from .predict import (
    _CLS_THR,
    _N_CLS2,
    _N_NBR,
    _N_SUB,
    _N_TEX,
    _SUB_LS,
    _V2_CAP,
    _V2_LS,
    _V2_SHIFT,
    _WAVE,
    _blend,
    _ctx_class,
    _err_sum,
    _ls_fit_v2,
    _Neighbours,
    _sub_predictions,
    _texture,
    _wave_order,
)
from .values import (
    _FLAG_TABLE,
    _KIND_FLOAT_BITS,
    _KIND_INT,
    _KIND_QUANT_FLOAT,
    _Mapped,
    _pack_uints,
    _unpack_uints,
    _words_and_table,
)

_MAGIC = b"SZL"


_RAW_MAGIC = b"SZR"


#: version of the coded payloads written (1 = row-wise coder, 2 = wavefront coder with one
#: probability model per symbol, 3 = version 2 with each wavefront's symbols sorted by context
#: class; all still decoded). Version 4 has the same prediction and contexts, but the entropy
#: coder's symbols are grouped by class over the whole block (C order inside a class) and the
#: raw bits are in C order: the decoder decodes each class's symbols with one call, then runs
#: one compiled loop over the voxels (:func:`.kernels.decode_raster`)
_VERSION = 4


_VERSIONS = (1, 2, 3, 4)


#: version 4: after the header, the byte length of the per-class symbol counts
_V4_COUNTS = struct.Struct("<I")


#: version byte of stored (raw) blocks
_RAW_VERSION = 1


#: sub-predictor sets the encoder tries (the smallest estimated code wins, with a small
#: penalty per extra sub-predictor since each one slows decoding down)
_MASKS = (16, 64, 4, 68, 88, 26, 19, 35, 112, 92, 124)


_SUB_PENALTY = 0.004


#: error sums whose blend weight the decoder looks up in a table
_WT_LUT = 2048


#: activity values whose context class the decoder looks up in a table
_CLS_LUT = 4096


_HEAD2 = struct.Struct("<3sBBBIIIIqddIBBBBIIIIQ")


def _encode_v2_core(v: np.ndarray, mask: int) -> tuple[dict, float]:
    """Tokens of block ``v`` ``(d, h, w)`` with the sub-predictors of ``mask``; est. bits."""
    d, h, w = v.shape
    hw, n = h * w, v.size
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(hw, np.int64), v.ravel()])
    k_sub = bin(mask).count("1")
    err = np.zeros((n + hw, k_sub), np.int32)
    absr = np.zeros(n + hw, np.int64)
    res = np.empty(n, np.int64)
    cls = np.empty(n, np.int64)
    pos = np.arange(hw, dtype=np.int64)
    use_ls = bool(mask >> _SUB_LS & 1)
    ls = []
    for z in range(d):
        sl = slice((z + 1) * hw, (z + 2) * hw)
        nidx = nbrs.index(pos + z * hw, pos)
        nv = vflat[nidx]
        target = vflat[sl]
        ls_w, ls_b = None, 0
        if use_ls:
            wts, ls_b = _ls_fit_v2(nv, target, z > 0)
            ls.append(_V2_LS.pack(*[int(x) for x in wts], ls_b))
            ls_w = wts[:, None]
        subs = _sub_predictions(nv, mask, ls_w, ls_b)
        if k_sub > 1:
            err[sl] = np.minimum(np.abs(target - subs), _V2_CAP).T
            pred = _blend(subs, _err_sum(err, nidx))
        else:
            pred = subs[0]
        r = target - pred
        res[z * hw : (z + 1) * hw] = r
        absr[sl] = np.minimum(np.abs(r), _V2_CAP)
        cls[z * hw : (z + 1) * hw] = _ctx_class(absr[nidx[:5]]) + _N_CLS2 * _texture(nv)
    tok, nb, raw = _tokenize(res)
    ntok = max(int(tok.max()) + 1, 2)  # constriction needs two symbols at least
    counts = np.bincount(cls * ntok + tok, minlength=_N_TEX * _N_CLS2 * ntok)
    counts = counts.reshape(_N_TEX, _N_CLS2, ntok)
    tot = counts.sum(axis=0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        c2 = counts.sum(axis=0)
        ent = -(c2 * np.log2(np.where(c2 > 0, c2 / np.maximum(tot, 1), 1.0))).sum()
    bits = float(ent + nb.sum()) + 8.0 * _V2_LS.size * len(ls)
    return {"tok": tok, "nb": nb, "raw": raw, "cls": cls, "counts": counts, "ls": ls}, bits


def _sample_block(v: np.ndarray) -> np.ndarray:
    """A smaller block for choosing the sub-predictors: up to 4 middle slices, 3 row bands
    of 24 rows, 192 middle columns."""
    d, h, w = v.shape
    z0 = max(0, d // 2 - 2)
    sub = v[z0 : z0 + 4]
    if h > 72:
        rows = np.concatenate([np.arange(24) + (h * k) // 4 - 12 for k in (1, 2, 3)])
        sub = sub[:, rows]
    if w > 192:
        sub = sub[:, :, w // 2 - 96 : w // 2 + 96]
    return np.ascontiguousarray(sub)


def _encode_v2(m: _Mapped, shape3: tuple[int, int, int]) -> bytes:
    d, h, w = shape3
    v = m.values.reshape(d, h, w)
    masks = [mk for mk in _MASKS if d > 1 or not mk >> 5 & 1]
    small = v.size <= 1 << 16
    sample = v if small else _sample_block(v)
    best = None
    for mk in masks:
        core, bits = _encode_v2_core(sample, mk)
        bits *= 1 + _SUB_PENALTY * (bin(mk).count("1") - 1)
        if best is None or bits < best[0]:
            best = (bits, mk, core)
    assert best is not None
    _bits, mask, core = best
    if not small:
        core = _encode_v2_core(v, mask)[0]
    tok, cls = core["tok"], core["cls"]
    # context: activity classes (adjacent ones merged) x texture levels (or none)
    counts3 = core["counts"]
    keep, est = _merge_classes(counts3)
    keep1, est1 = _merge_classes(counts3.sum(axis=0, keepdims=True))
    n_tex = _N_TEX
    if est1 <= est:
        keep, n_tex, counts3 = keep1, 1, counts3.sum(axis=0, keepdims=True)
    to_bin = np.concatenate([[0], np.cumsum(keep)])
    n_bins = int(to_bin[-1]) + 1
    tex, act = np.divmod(cls, _N_CLS2)
    cls = to_bin[act] * n_tex + (tex if n_tex > 1 else 0)
    counts = np.zeros((n_bins, n_tex, counts3.shape[2]), np.int64)
    np.add.at(counts, to_bin, counts3.transpose(1, 0, 2))
    q = _quantize_hist(counts.reshape(n_bins * n_tex, -1))
    words = _ans_encode_by_class(tok, cls, np.array([0, tok.size]), _class_models(q))
    bits = _pack_bits(core["nb"], core["raw"])
    # symbols per class: what the histograms do not say (scaled ones), zigzag
    excess = np.bincount(cls, minlength=q.shape[0]) - q.sum(axis=1)
    count_bytes = _pack_uints(np.where(excess >= 0, 2 * excess, -2 * excess - 1))

    hist_bytes = _pack_uints(q.ravel())
    table_bytes = b""
    n_table = flags = 0
    if m.table is not None:
        flags |= _FLAG_TABLE
        n_table = len(m.table)
        table_bytes = _pack_uints(np.diff(m.table, prepend=0))
    crc = zlib.crc32(m.expected.tobytes())
    head = _HEAD2.pack(
        _MAGIC, _VERSION, m.kind, flags, d, h, w, crc, m.offset, m.lo, m.step, n_table,
        q.shape[1], n_bins, mask, n_tex, len(hist_bytes), len(table_bytes), len(bits),
        len(core["ls"]), int(np.sum(keep.astype(np.int64) << np.arange(keep.size))),
    )  # fmt: skip
    parts = [head, _V4_COUNTS.pack(len(count_bytes)), hist_bytes, count_bytes, *core["ls"]]
    return b"".join([*parts, table_bytes, bits, words])


def _decode_v2(payload: bytes, shape3: tuple[int, ...]) -> tuple[np.ndarray, tuple]:
    """Mapped values of a version-2 or -3 payload, and the fields :func:`_finish` needs."""
    import constriction

    (_m, _v, kind, flags, d, h, w, crc, offset, lo, step, n_table, ntok, n_cls, mask,
     n_tex, n_hist, n_tb, n_bits, n_ls, keep_bits) = _HEAD2.unpack_from(payload)  # fmt: skip
    if (d, h, w) != shape3:
        raise FormatError(f"block shape {(d, h, w)} does not match the grid {shape3}")
    keep = (keep_bits >> np.arange(_N_CLS2 - 1, dtype=np.uint64)) & 1 == 1
    thr = _CLS_THR[keep]
    if (
        kind > _KIND_QUANT_FLOAT
        or keep_bits >> (_N_CLS2 - 1)
        or n_cls != thr.size + 1
        or n_tex not in (1, _N_TEX)
        or not 0 < mask < 1 << _N_SUB
        or ntok < 2
    ):
        raise FormatError("implausible lossless block parameters")
    if kind in (_KIND_INT, _KIND_FLOAT_BITS) and (lo != 0.0 or step != 0.0):
        raise FormatError("implausible lossless block parameters")
    use_ls = bool(mask >> _SUB_LS & 1)
    if n_ls != (d if use_ls else 0):
        raise FormatError("bad predictor parameters in a lossless block")
    pos = _HEAD2.size
    n_count_bytes = 0
    if _v >= 4:
        (n_count_bytes,) = _V4_COUNTS.unpack_from(payload, pos)
        pos += _V4_COUNTS.size
    q = _unpack_uints(payload[pos : pos + n_hist], n_cls * n_tex * ntok)
    q = q.reshape(n_cls * n_tex, ntok)
    pos += n_hist
    totals = None
    if _v >= 4:
        z = _unpack_uints(payload[pos : pos + n_count_bytes], n_cls * n_tex)
        totals = q.sum(axis=1) + ((z >> 1) ^ -(z & 1))
        pos += n_count_bytes
        if np.any(totals < 0) or totals.sum() != d * h * w:
            raise FormatError("implausible symbol counts in a lossless block")
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

    if _v >= 4:
        assert totals is not None
        v = _decode_raster(q, totals, words, bit_bytes, (d, h, w), mask, ls_w, ls_b, thr, n_tex)
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
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_nbu = tok_nb.astype(np.uint64)
    tok_mask = (np.uint64(1) << tok_nbu) - np.uint64(1)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
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
    wt_lut = kernels.weight_table(_WT_LUT)
    cls_lut = np.searchsorted(thr, np.arange(_CLS_LUT), side="right").astype(np.uint8)
    out = np.empty(d * h * w, np.int64)
    shape = np.array(shape3, np.int64)
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
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


def _decode_raster(
    q: np.ndarray,
    totals: np.ndarray,
    words: np.ndarray,
    bit_bytes: np.ndarray,
    shape3: tuple[int, int, int],
    mask: int,
    ls_w: np.ndarray,
    ls_b: np.ndarray,
    thr: np.ndarray,
    n_tex: int,
) -> np.ndarray:
    """Mapped values of a version-4 payload: every class's symbols in one call each, then
    one compiled pass over the voxels."""
    import constriction

    from . import kernels

    models = _class_models(q)
    coder = constriction.stream.stack.AnsCoder(words)
    parts = [coder.decode(models[c], int(k)) for c, k in enumerate(totals) if k]
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    cls_start = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)
    ntok = q.shape[1]
    tok_all = np.arange(ntok, dtype=np.int64)
    tok_nb = _token_bits(tok_all)
    tok_hi = np.where(tok_all >= _TOK_DIRECT, (2 + (tok_all & 1)) << tok_nb, tok_all)
    out = np.empty(int(np.prod(shape3)), np.int64)
    cursor = kernels.decode_raster(
        np.array(shape3, np.int64), tokens, cls_start,
        np.array([i for i in range(_N_SUB) if mask >> i & 1], np.int64), ls_w, ls_b, thr,
        np.searchsorted(thr, np.arange(_CLS_LUT), side="right").astype(np.uint8),
        kernels.weight_table(_WT_LUT), n_tex, _V2_SHIFT, tok_nb, tok_hi,
        np.concatenate([bit_bytes, np.zeros(8, np.uint8)]), bit_bytes.size, _V2_CAP, out,
    )  # fmt: skip
    if cursor == -1:
        raise FormatError("raw bit stream of a lossless block is too short")
    if cursor < 0:
        raise FormatError("symbol counts of a lossless block do not match its contexts")
    if 8 * bit_bytes.size - cursor >= 8:
        raise FormatError("raw bit stream of a lossless block has extra bytes")
    return out.reshape(shape3)
