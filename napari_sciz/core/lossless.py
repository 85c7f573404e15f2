"""Lossless and error-bounded block coding (``mode="lossless"`` and ``mode="bounded"``).

Method (see ``docs/lossless.md``): predict every voxel of a block with a deterministic integer
causal predictor and code the prediction residual losslessly.

1. **Value mapping.** Integers are used as they are; ``float32`` is coded by bit pattern (the
   bits are mapped to an order-preserving unsigned integer so that neighbouring values stay
   numerically close). In bounded mode the values are first quantized on a uniform grid
   ``lo + q * step`` with ``step = 2E + 1`` for integers and ``step = 2E`` for floats, so that
   ``|decoded - original| <= E`` (checked at encode). The minimum is subtracted; when the block
   uses few distinct values (sparse histograms), values are replaced by their index in the
   sorted table of distinct values (the table is stored delta-coded with zlib).
2. **Prediction.** Slice by slice, one of seven linear causal predictors is chosen by the
   smallest estimated code length and stored in one byte per slice: finite differences along
   ``x`` (left), ``y`` (up), ``x`` and ``y`` (planar 2D, ``left + up - upleft``), each optionally
   combined with a difference along ``z`` (previous slice), and the previous slice alone. The
   residual is that finite difference of the integers, so decoding is a cumulative sum
   (vectorised, bit-exact in int64).
3. **Residual coding.** The residuals are truncated to a dense central range ``[-T, T]``;
   values outside it are coded as an escape symbol ``±(T+1)`` and their exact magnitude is
   stored in a separate zlib stream (reversible truncated mapping). The symbols are coded with
   constriction's ANS coder and a quantized Laplace model whose scale depends on a context:
   the local activity (absolute symbols of the row above in the same slice and of the same row
   of the previous slice) quantized into classes, one scale byte per class.

The decoder recomputes everything from already decoded data; a CRC32 of the expected decoded
block is stored and checked, so a corrupted payload raises :class:`FormatError` instead of
returning wrong data. The INR prediction is not used here (only the causal predictors ship).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, InvalidInputError
from .blocks import BlockGrid

__all__ = [
    "LOSSLESS_DTYPES",
    "MODES",
    "check_mode",
    "decode_block",
    "encode_array",
    "encode_block",
    "quantization_step",
]

#: modes handled by this module
MODES = ("lossless", "bounded")
#: dtypes supported by lossless mode (float64 only in bounded mode)
LOSSLESS_DTYPES = ("uint8", "uint16", "int16", "uint32", "float32")

_MAGIC = b"SZL"
_RAW_MAGIC = b"SZR"
_VERSION = 1
#: value kinds
_KIND_INT, _KIND_FLOAT_BITS, _KIND_QUANT_INT, _KIND_QUANT_FLOAT = 0, 1, 2, 3
_FLAG_TABLE = 1
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


def quantization_step(dtype: np.dtype, max_error: float) -> float:
    """Grid step of bounded mode: ``2E + 1`` for integer dtypes, ``2E`` for floats.

    Parameters
    ----------
    dtype : numpy.dtype
        dtype of the data.
    max_error : float
        Largest allowed absolute error ``E``.

    Returns
    -------
    float
        The step.
    """
    if np.dtype(dtype).kind in "ui":
        return float(2 * math.floor(max_error) + 1)
    return float(2 * max_error)


# ----------------------------------------------------------------------------------------
# helpers


def _pack_uints(values: np.ndarray) -> bytes:
    """Non-negative integers -> width byte + byte-shuffled little-endian planes, zlib."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size == 0:
        return b"\x00"
    top = int(values.max())
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8
    raw = values.astype(f"<u{width}").view(np.uint8).reshape(-1, width).T.tobytes()
    return bytes([width]) + zlib.compress(raw, 9)


def _unpack_uints(data: bytes, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, np.int64)
    width = data[0]
    if width not in (1, 2, 4, 8):
        raise FormatError("bad integer stream in a lossless block")
    raw = zlib.decompress(data[1:])
    if len(raw) != width * count:
        raise FormatError("truncated integer stream in a lossless block")
    planes = np.frombuffer(raw, np.uint8).reshape(width, count).T.copy()
    return planes.view(f"<u{width}").reshape(count).astype(np.int64)


def _float_to_ordered(bits: np.ndarray) -> np.ndarray:
    """float32 bit patterns (as int64) -> order-preserving non-negative integers."""
    return np.where(bits >= 1 << 31, (1 << 32) - 1 - bits, bits + (1 << 31))


def _ordered_to_float(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 1 << 31, m - (1 << 31), (1 << 32) - 1 - m)


def _spatial_diff(x: np.ndarray, op: int) -> np.ndarray:
    """Finite difference of a 2D int64 slice (zero padding before the first row/column)."""
    out = x
    if op in (1, 3):
        out = np.diff(out, axis=1, prepend=0)
    if op in (2, 3):
        out = np.diff(out, axis=0, prepend=0)
    return out


def _spatial_undiff(r: np.ndarray, op: int) -> np.ndarray:
    out = r
    if op in (2, 3):
        out = np.cumsum(out, axis=0)
    if op in (1, 3):
        out = np.cumsum(out, axis=1)
    return out


def _scale_of(byte: np.ndarray | int) -> np.ndarray:
    """Laplace scale of a class byte: ``2 ** (b / 8 - 4)``."""
    return np.exp2(np.asarray(byte, np.float64) / 8.0 - 4.0)


def _classes(a_up: np.ndarray, a_prev: np.ndarray | None) -> np.ndarray:
    """Activity classes of one row from the absolute symbols of the row above/previous slice.

    ``a_up`` and ``a_prev`` are rows padded by one on each side (int64).
    """
    c = a_up[:-2] + 2 * a_up[1:-1] + a_up[2:]
    if a_prev is not None:
        c = c + a_prev[:-2] + 2 * a_prev[1:-1] + a_prev[2:]
    return np.minimum((np.log2(c + 1.0) * 1.5).astype(np.int64), _N_CLASSES - 1)


def _all_classes(a: np.ndarray) -> np.ndarray:
    """Activity classes of every symbol of a block (vectorised version of :func:`_classes`)."""
    d, h, w = a.shape
    pad = np.zeros((d + 1, h + 1, w + 2), np.int64)
    pad[1:, 1:, 1:-1] = a
    up = pad[1:, :-1]
    prev = pad[:-1, 1:]
    c = up[..., :-2] + 2 * up[..., 1:-1] + up[..., 2:]
    c = c + prev[..., :-2] + 2 * prev[..., 1:-1] + prev[..., 2:]
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


def _up_features(rows: np.ndarray) -> list[np.ndarray]:
    """Row-above features (up, up-left, up-right) of rows ``1..`` of ``rows`` (row 0 = above)."""
    r = np.concatenate([rows[:, :1], rows, rows[:, -1:]], axis=1)
    return [r[:-1, 1:-1], r[:-1, :-2], r[:-1, 2:]]


def _ls_predict(feats: list[np.ndarray], weights: np.ndarray, bias: int) -> np.ndarray:
    acc = np.full(feats[0].shape, bias, np.int64)
    for f, wgt in zip(feats, weights, strict=True):
        if wgt:
            acc += f * int(wgt)
    return acc >> _LS_SHIFT


def _ls_fit(u: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray]:
    """Least-squares integer predictor of slice ``u`` (domain values); returns weights, bias
    and the residual."""
    h, w = u.shape
    above = np.concatenate([np.zeros((1, w), np.int64), u], axis=0)
    feats = _up_features(above) + _prev_features(prev, h, w)
    n = 3 if prev is None else _LS_FEATS
    a = np.stack([f.ravel().astype(np.float64) for f in feats[:n]], axis=1)
    target = u.ravel().astype(np.float64)
    if target.size > 8192:  # a sample is enough for 8 weights
        idx = np.linspace(0, target.size - 1, 8192).astype(np.int64)
        a_fit, t_fit = a[idx], target[idx]
    else:
        a_fit, t_fit = a, target
    # normal equations (centred, lightly regularised): fast and deterministic at encode only
    mu_a, mu_t = a_fit.mean(axis=0), t_fit.mean()
    ac = a_fit - mu_a
    gram = ac.T @ ac
    gram += np.eye(n) * (1e-6 * np.trace(gram) / n + 1e-9)
    try:
        coef = np.linalg.solve(gram, ac.T @ (t_fit - mu_t))
    except np.linalg.LinAlgError:
        coef = np.zeros(n)
    if not np.all(np.isfinite(coef)):
        coef = np.zeros(n)
    weights = np.zeros(_LS_FEATS, np.int64)
    weights[:n] = np.clip(np.rint(coef * (1 << _LS_SHIFT)), -32768, 32767)
    raw = _ls_predict(feats, weights, 0)
    mean = float((u - raw).mean()) if u.size else 0.0
    bias = int(
        np.clip(round(mean * (1 << _LS_SHIFT)) + (1 << (_LS_SHIFT - 1)), -(2**31), 2**31 - 1)
    )
    return weights, bias, u - _ls_predict(feats, weights, bias)


def _cost(r: np.ndarray) -> float:
    """Code-length proxy of a residual slice (bits, up to constants)."""
    return float(np.log2(np.abs(r) + 1.0).sum())


# ----------------------------------------------------------------------------------------
# encoding


@dataclass
class _Mapped:
    values: np.ndarray  # int64, >= 0
    kind: int
    offset: int
    lo: float
    step: float
    table: np.ndarray | None
    expected: np.ndarray  # what the decoder must return


def _map_values(block: np.ndarray, mode: str, max_error: float | None) -> _Mapped:
    dtype = block.dtype
    lo = step = 0.0
    if mode == "bounded" and max_error is None:
        raise InvalidInputError("bounded mode needs max_error")
    if mode == "bounded" and float(max_error) > 0 and not (dtype.kind in "ui" and max_error < 1):
        e = float(max_error)
        step = quantization_step(dtype, e)
        if dtype.kind in "ui":
            x = block.astype(np.int64)
            lo_i = int(x.min())
            s = int(step)
            q = (x - lo_i + int(math.floor(e))) // s
            info = np.iinfo(dtype)
            expected = np.clip(lo_i + q * s, info.min, info.max).astype(dtype)
            lo, kind = float(lo_i), _KIND_QUANT_INT
            values = q
        else:
            x = block.astype(np.float64)
            lo = float(x.min())
            span = (float(x.max()) - lo) / step
            if span > 2.0**40:
                raise InvalidInputError(
                    f"max_error={max_error!r} is too small for the value range of the data"
                )
            q = np.rint((x - lo) / step).astype(np.int64)
            expected = (lo + q * step).astype(dtype)
            if np.abs(expected.astype(np.float64) - x).max() > e:
                # float rounding broke the bound: code this block losslessly instead
                if dtype == np.float32:
                    return _map_values(block, "lossless", None)
                raise InvalidInputError(
                    f"max_error={max_error!r} is below the float64 precision of the data"
                )
            kind = _KIND_QUANT_FLOAT
            values = q
    else:
        if dtype.name not in LOSSLESS_DTYPES:
            raise InvalidInputError(
                f"lossless mode supports {', '.join(LOSSLESS_DTYPES)}; got {dtype.name}"
            )
        expected = block
        if dtype == np.float32:
            values = _float_to_ordered(block.view(np.uint32).astype(np.int64))
            kind = _KIND_FLOAT_BITS
        else:
            values = block.astype(np.int64)
            kind = _KIND_INT
    offset = int(values.min())
    values = values - offset
    table = None
    uniq = np.unique(values)
    span = int(uniq[-1]) + 1
    # a value table pays when the histogram is sparse (few distinct values in the range)
    if len(uniq) * 4 <= span and len(uniq) < values.size:
        table = uniq
        values = np.searchsorted(uniq, values).astype(np.int64)
    return _Mapped(values, kind, offset, lo, step, table, np.ascontiguousarray(expected))


def encode_block(
    block: np.ndarray, mode: str = "lossless", max_error: float | None = None
) -> bytes:
    """Code one block losslessly or within ``max_error``.

    Parameters
    ----------
    block : numpy.ndarray
        3D block ``(D, H, W)`` (2D images as ``D = 1``).
    mode : {"lossless", "bounded"}
        Coding mode.
    max_error : float, optional
        Largest absolute error of bounded mode (``E >= 0``; integers use ``floor(E)``).

    Returns
    -------
    bytes
        The block payload (layout in ``docs/format.md``).

    Raises
    ------
    InvalidInputError
        Unsupported dtype or error bound.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    if block.ndim != 3:
        raise InvalidInputError("encode_block expects a 3D block")
    out = _encode(block, mode, max_error)
    if mode == "bounded" and block.dtype.kind in "ui" and block.size:
        # sparse histograms (few distinct values far apart): the grid of bounded mode can
        # cost more than the value table of lossless mode; keep the smaller (both within E)
        uniq = np.unique(block)
        if len(uniq) * 4 <= int(uniq[-1]) - int(uniq[0]) + 1:
            exact = _encode(block, "lossless", None)
            if len(exact) < len(out):
                return exact
    return out


def _encode(block: np.ndarray, mode: str, max_error: float | None) -> bytes:
    import constriction

    d, h, w = block.shape
    m = _map_values(np.ascontiguousarray(block), mode, max_error)
    v = m.values.reshape(d, h, w)

    # prediction: per slice, the predictor with the smallest cost proxy
    res = np.empty_like(v)
    preds = np.zeros(d, np.uint8)
    ls_params: list[bytes] = []
    for z in range(d):
        best = None
        if h > 1 and w > 1 and v[z].max() < 2**40:
            for pid in (_LS_VALUES, _LS_DX):
                prev = None if z == 0 else _ls_domain(v[z - 1], pid)
                weights, bias, r = _ls_fit(_ls_domain(v[z], pid), prev)
                cost = _cost(r) + 200.0
                if best is None or cost < best[0]:
                    best = (cost, pid, r, (weights, bias))
        for pid, (op, dz) in enumerate(_PREDICTORS):
            if dz and z == 0:
                continue
            base = v[z] - v[z - 1] if dz else v[z]
            if op == 0 and not dz:
                continue
            r = _spatial_diff(base, op)
            cost = _cost(r)
            if best is None or cost < best[0]:
                best = (cost, pid, r, None)
        assert best is not None
        preds[z] = best[1]
        res[z] = best[2]
        if best[3] is not None:
            ls_params.append(_LS_PARAMS.pack(*[int(x) for x in best[3][0]], best[3][1]))

    # reversible truncated mapping
    a_true = np.abs(res)
    flat = a_true.ravel()
    t = int(np.quantile(flat, 0.999)) if flat.size else 0
    t = int(min(max(t, 4), _T_MAX))
    sym = np.clip(res, -(t + 1), t + 1)
    esc = a_true[a_true > t] - (t + 1)

    # context classes and per-class Laplace scales
    a = np.abs(sym)
    cls = _all_classes(a)
    scale_bytes = np.zeros(_N_CLASSES, np.uint8)
    for k in range(_N_CLASSES):
        sel = a[cls == k]
        mean = float(sel.mean()) if sel.size else 1.0
        b = int(round((math.log2(max(mean, 0.07)) + 4.0) * 8.0))
        scale_bytes[k] = min(max(b, 0), 255)
    scales = _scale_of(scale_bytes)[cls.ravel()]

    coder = constriction.stream.stack.AnsCoder()
    model = constriction.stream.model.QuantizedLaplace(-(t + 1), t + 1)
    coder.encode_reverse(
        sym.ravel().astype(np.int32), model, np.zeros(sym.size), scales.astype(np.float64)
    )
    words = coder.get_compressed().astype("<u4").tobytes()

    table_bytes = b""
    n_table = 0
    flags = 0
    if m.table is not None:
        flags |= _FLAG_TABLE
        n_table = len(m.table)
        table_bytes = _pack_uints(np.diff(m.table, prepend=0))
    esc_bytes = _pack_uints(esc)
    crc = zlib.crc32(m.expected.tobytes())
    head = _HEAD.pack(
        _MAGIC, _VERSION, m.kind, flags, d, h, w, crc, m.offset, m.lo, m.step, t, n_table
    )
    parts = [
        head,
        scale_bytes.tobytes(),
        preds.tobytes(),
        b"".join(ls_params),
        struct.pack("<III", len(table_bytes), len(esc), len(esc_bytes)),
        table_bytes,
        esc_bytes,
        words,
    ]
    out = b"".join(parts)
    raw = m.expected.tobytes()
    if len(out) > len(raw) + 8:
        # incompressible block (e.g. noise): stored as it is
        return _RAW_MAGIC + struct.pack("<BI", _VERSION, zlib.crc32(raw)) + raw
    return out


# ----------------------------------------------------------------------------------------
# decoding


def decode_block(payload: bytes, dtype: np.dtype, shape3: tuple[int, int, int]) -> np.ndarray:
    """Decode a block payload of :func:`encode_block`.

    Parameters
    ----------
    payload : bytes
        The payload.
    dtype : numpy.dtype
        dtype of the original data.
    shape3 : tuple of int
        Expected block shape ``(D, H, W)``.

    Returns
    -------
    numpy.ndarray
        The decoded block (bit-identical in lossless mode).

    Raises
    ------
    FormatError
        The payload is malformed or fails its checksum.
    """
    try:
        return _decode(payload, np.dtype(dtype), tuple(shape3))
    except FormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means a bad payload
        raise FormatError(f"lossless block cannot be decoded: {exc}") from exc


def _decode(payload: bytes, dtype: np.dtype, shape3: tuple[int, ...]) -> np.ndarray:
    import constriction

    if payload[:3] == _RAW_MAGIC and len(payload) >= 8:
        _v, crc_raw = struct.unpack_from("<BI", payload, 3)
        body = payload[8:]
        n = math.prod(shape3) * dtype.itemsize
        if len(body) != n or zlib.crc32(body) != crc_raw:
            raise FormatError("stored lossless block fails its checksum (corrupted payload)")
        return np.frombuffer(body, dtype).reshape(shape3).copy()
    if len(payload) < _HEAD.size or payload[:3] != _MAGIC:
        raise FormatError("not a lossless block payload")
    magic, version, kind, flags, d, h, w, crc, offset, lo, step, t, n_table = _HEAD.unpack_from(
        payload
    )
    if version != _VERSION:
        raise FormatError(f"unsupported lossless block version {version}")
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
    pos += n_eb
    if (len(payload) - pos) % 4:
        raise FormatError("truncated lossless block")
    words = np.frombuffer(payload, "<u4", offset=pos).astype(np.uint32)
    table = None
    if flags & _FLAG_TABLE:
        table = np.cumsum(_unpack_uints(table_bytes, n_table))

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

    if table is not None:
        if v.min() < 0 or v.max() >= len(table):
            raise FormatError("value index out of the table of a lossless block")
        v = table[v]
    v = v + offset
    if kind == _KIND_INT:
        out = v.astype(dtype)
    elif kind == _KIND_FLOAT_BITS:
        out = _ordered_to_float(v).astype(np.uint32).view(np.float32).astype(dtype)
    elif kind == _KIND_QUANT_INT:
        info = np.iinfo(dtype)
        out = np.clip(int(lo) + v * int(step), info.min, info.max).astype(dtype)
    else:
        out = (lo + v * step).astype(dtype)
    out = np.ascontiguousarray(out)
    if zlib.crc32(out.tobytes()) != crc:
        raise FormatError("lossless block fails its checksum (corrupted payload)")
    return out


# ----------------------------------------------------------------------------------------
# whole arrays (used by napari_sciz.core.api)


def check_mode(mode: str, max_error: float | None, dtype: np.dtype) -> float | None:
    """Validate ``mode`` and ``max_error`` for an input dtype.

    Parameters
    ----------
    mode : str
        ``"lossless"`` or ``"bounded"``.
    max_error : float or None
        Error bound of bounded mode (must be None in lossless mode).
    dtype : numpy.dtype
        dtype of the data.

    Returns
    -------
    float or None
        The validated error bound.

    Raises
    ------
    InvalidInputError
        Bad mode, bound or dtype.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be 'lossy', 'lossless' or 'bounded', got {mode!r}")
    if mode == "lossless":
        if max_error is not None:
            raise InvalidInputError("max_error is for mode='bounded' only")
        if np.dtype(dtype).name not in LOSSLESS_DTYPES:
            raise InvalidInputError(
                f"lossless mode supports {', '.join(LOSSLESS_DTYPES)}; got {np.dtype(dtype).name}"
            )
        return None
    if max_error is None:
        raise InvalidInputError("mode='bounded' needs max_error")
    try:
        e = float(max_error)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"max_error must be a number, got {max_error!r}") from exc
    if not (math.isfinite(e) and e >= 0):
        raise InvalidInputError(f"max_error must be a finite number >= 0, got {max_error!r}")
    if np.dtype(dtype) == np.float64 and e == 0:
        raise InvalidInputError("float64 data needs max_error > 0 (no lossless float64 mode)")
    return e


def encode_array(
    arr: np.ndarray,
    grid: BlockGrid,
    mode: str,
    max_error: float | None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[list[bytes], np.ndarray]:
    """Code every block of ``arr``; returns the payloads and the decoded array.

    Parameters
    ----------
    arr : numpy.ndarray
        The whole array.
    grid : BlockGrid
        Its block grid.
    mode : {"lossless", "bounded"}
        Coding mode.
    max_error : float or None
        Error bound of bounded mode.
    progress : callable, optional
        Called with ``(blocks_done, n_blocks)`` after each block.
    cancel : callable, optional
        Checked before each block; returning True raises ``CancelledError``.

    Returns
    -------
    payloads : list of bytes
    reconstruction : numpy.ndarray
        What the decoder returns (identical to ``arr`` in lossless mode).
    """
    from ..errors import CancelledError

    payloads = []
    recon = np.empty_like(arr)
    for index in range(grid.n_blocks):
        if cancel is not None and cancel():
            raise CancelledError("compression cancelled")
        sl = grid.block_slices(index)
        shape3 = grid.block_shape3(index)
        block = np.ascontiguousarray(arr[sl]).reshape(shape3)
        payload = encode_block(block, mode, max_error)
        # verified at encode: the decoder's output (checks the bound and the round trip)
        decoded = decode_block(payload, arr.dtype, shape3)
        if mode == "lossless":
            ok = np.array_equal(decoded.view(np.uint8), block.view(np.uint8))
        else:
            diff = np.abs(decoded.astype(np.float64) - block.astype(np.float64))
            ok = bool(diff.max() <= float(max_error or 0))
        if not ok:  # pragma: no cover - a bug, never silently wrong data
            raise RuntimeError(f"block {index} failed its encode-time verification")
        recon[sl] = decoded.reshape(recon[sl].shape)
        payloads.append(payload)
        if progress is not None:
            progress(index + 1, grid.n_blocks)
    return payloads, recon
