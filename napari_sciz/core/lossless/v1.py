"""Decoder of version-1 lossless payloads (row-wise coder, Laplace model; no longer written).

Kept so that files of the first format still decode; tested with stored payloads.
"""

from __future__ import annotations

import struct

import numpy as np

from ...errors import FormatError
from .values import _KIND_QUANT_FLOAT, _unpack_uints, _words_and_table

#: number of activity classes of the context model
_N_CLASSES = 24


#: largest central range of the coded alphabet
_T_MAX = 1 << 16


#: predictors: (spatial operator, difference along z)
#: spatial operator 0: none, 1: dx (left), 2: dy (up), 3: dx dy (planar)
_PREDICTORS = ((1, False), (2, False), (3, False), (0, True), (1, True), (2, True), (3, True))


#: ids of the least-squares predictors (on the values, and on their differences along x)
_LS_VALUES, _LS_DX = len(_PREDICTORS), len(_PREDICTORS) + 1


_N_PRED = len(_PREDICTORS) + 2


#: integer weights of a least-squares predictor are in 1/64ths
_LS_SHIFT = 6


_LS_FEATS = 8


_LS_PARAMS = struct.Struct("<8hi")


_HEAD = struct.Struct("<3sBBBIIIIqddII")


def _spatial_undiff(r: np.ndarray, op: int) -> np.ndarray:
    out = r
    if op in (2, 3):
        out = np.cumsum(out, axis=0)
    if op in (1, 3):
        out = np.cumsum(out, axis=1)
    return out


# 2 ** (k / 8), k = 0..7, correctly rounded: written out, since numpy's exp2 may differ in the
# last bit between SIMD levels and a decoder must compute the model its encoder did
_EIGHTH_POWERS = np.array(
    [
        float.fromhex(x)
        for x in (
            "0x1.0000000000000p+0",
            "0x1.172b83c7d517bp+0",
            "0x1.306fe0a31b715p+0",
            "0x1.4bfdad5362a27p+0",
            "0x1.6a09e667f3bcdp+0",
            "0x1.8ace5422aa0dbp+0",
            "0x1.ae89f995ad3adp+0",
            "0x1.d5818dcfba487p+0",
        )
    ]  # fmt: skip
)


def _scale_of(byte: np.ndarray | int) -> np.ndarray:
    """Laplace scale of a class byte: ``2 ** (b / 8 - 4)``, identical on every CPU."""
    b = np.asarray(byte, np.int64)
    return np.ldexp(_EIGHTH_POWERS[b & 7], (b >> 3) - 4)


def _classes(a_up: np.ndarray, a_prev: np.ndarray | None) -> np.ndarray:
    """Activity classes of one row from the absolute symbols of the row above/previous slice.

    ``a_up`` and ``a_prev`` are rows padded by one on each side (int64).
    """
    c = a_up[:-2] + 2 * a_up[1:-1] + a_up[2:]
    if a_prev is not None:
        c = c + a_prev[:-2] + 2 * a_prev[1:-1] + a_prev[2:]
    return np.minimum((np.log2(c + 1.0) * 1.5).astype(np.int64), _N_CLASSES - 1)


def _ls_domain(x: np.ndarray, pid: int) -> np.ndarray:
    """The slice in the domain of a least-squares predictor (values or x differences)."""
    return np.diff(x, axis=-1, prepend=0) if pid == _LS_DX else x


def _prev_features(prev: np.ndarray | None, h: int, w: int) -> list[np.ndarray]:
    """Previous-slice features: same position, up, down, left, right (edge padded)."""
    if prev is None:
        return [np.zeros((h, w), np.int64)] * 5
    p = np.pad(prev, 1, mode="edge")
    return [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]


def decode_v1(payload: bytes, shape3: tuple[int, ...]) -> tuple[np.ndarray, tuple]:
    """Mapped values of a version-1 payload, and the fields :func:`.values.finish` needs."""
    import constriction

    magic, version, kind, flags, d, h, w, crc, offset, lo, step, t, n_table = _HEAD.unpack_from(
        payload
    )
    if (d, h, w) != shape3:
        raise FormatError(f"block shape {(d, h, w)} does not match the grid {shape3}")
    if t > _T_MAX or kind > _KIND_QUANT_FLOAT:
        raise FormatError("implausible lossless block parameters")
    pos = _HEAD.size
    scale_bytes = np.frombuffer(payload, np.uint8, _N_CLASSES, pos)
    pos += _N_CLASSES
    preds = np.frombuffer(payload, np.uint8, d, pos)
    pos += d
    if np.any(preds >= _N_PRED) or (d and preds[0] < _LS_VALUES and _PREDICTORS[preds[0]][1]):
        raise FormatError("bad predictor in a lossless block")
    ls_params = {}
    for z in np.nonzero(preds >= _LS_VALUES)[0]:
        *wts, bias = _LS_PARAMS.unpack_from(payload, pos)
        ls_params[int(z)] = (np.array(wts, np.int64), int(bias))
        pos += _LS_PARAMS.size
    n_tb, n_esc, n_eb = struct.unpack_from("<III", payload, pos)
    pos += 12
    table_bytes = payload[pos : pos + n_tb]
    pos += n_tb
    esc = _unpack_uints(payload[pos : pos + n_eb], n_esc)
    words, table = _words_and_table(payload, pos + n_eb, flags, table_bytes, n_table)

    scales_cls = _scale_of(scale_bytes)
    coder = constriction.stream.stack.AnsCoder(words)
    model = constriction.stream.model.QuantizedLaplace(-(t + 1), t + 1)
    zeros = np.zeros(w)
    sym = np.zeros((d, h + 1, w + 2), np.int64)  # padded: row 0 and columns 0, -1 are zero
    a_prev_slice = None
    v = np.empty((d, h, w), np.int64)
    esc_pos = 0
    for z in range(d):
        pid = int(preds[z])
        ls = ls_params.get(z)
        if ls is not None:
            prev_feats = _prev_features(None if z == 0 else _ls_domain(v[z - 1], pid), h, w)
            wts, bias = ls
            # previous-slice part of the (unshifted) prediction, for the whole slice at once
            part = np.full((h, w), bias, np.int64)
            for f, wgt in zip(prev_feats, wts[3:], strict=True):
                if wgt:
                    part += f * int(wgt)
            w_up, w_ul, w_ur = (int(x) for x in wts[:3])
            u = np.zeros((h + 1, w), np.int64)  # row 0: above the slice
        for y in range(h):
            cls = _classes(
                np.abs(sym[z, y]), a_prev_slice[y + 1] if a_prev_slice is not None else None
            )
            row = coder.decode(model, zeros, scales_cls[cls]).astype(np.int64)
            hit = np.nonzero(np.abs(row) == t + 1)[0]
            if hit.size:
                extra = esc[esc_pos : esc_pos + hit.size]
                if extra.size != hit.size:
                    raise FormatError("escape stream of a lossless block is too short")
                esc_pos += hit.size
                row[hit] = np.sign(row[hit]) * (t + 1 + extra)
                sym[z, y + 1, 1:-1] = np.clip(row, -(t + 1), t + 1)
            else:
                sym[z, y + 1, 1:-1] = row
            if ls is not None:
                up = u[y]
                acc = part[y] + w_up * up
                acc[1:] += w_ul * up[:-1]
                acc[0] += w_ul * up[0]
                acc[:-1] += w_ur * up[1:]
                acc[-1] += w_ur * up[-1]
                u[y + 1] = row + (acc >> _LS_SHIFT)
            else:
                v[z, y] = row
        a_prev_slice = np.abs(sym[z])
        if ls is not None:
            v[z] = np.cumsum(u[1:], axis=1) if pid == _LS_DX else u[1:]
        else:
            op, dz = _PREDICTORS[pid]
            base = _spatial_undiff(v[z], op)
            v[z] = base + v[z - 1] if dz else base
    if esc_pos != n_esc:
        raise FormatError("escape stream of a lossless block has extra values")
    return v, (kind, flags, crc, offset, lo, step, table)
