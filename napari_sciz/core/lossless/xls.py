"""The wide least-squares predictor of lossless payload version 6.

Sub-predictor 7 ("XLS") predicts a voxel from 25 causal neighbours: the 11 of
:mod:`.predict` (``W, N, NW, NE, P, WW, NN, PN, PS, PW, PE``) and 14 more
(:data:`EXT_NAMES`: five further in its slice, eight further in the previous slice, and the
same position two slices back), with one integer weight set per *gradient level* of the
neighbourhood (:func:`.predict.gradient_level`: flat areas and edges get their own linear
predictor, the classified adaptive prediction of lossless image coders) and per *slice group*
(the first slice of a lane, which has no previous slice, and the others). The weights are
fitted per block by the encoder (robust least squares) and stored in 1/4096ths, so the
decoder's prediction ``(sum_k w_k n_k + b) >> 12`` is integer arithmetic, identical on every
machine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from .predict import N_GRAD, _Neighbours, gradient_level

#: the 14 neighbours beyond the 11 of :mod:`.predict`, in tap order 11-24
EXT_NAMES = (
    "NWW", "NNW", "NNE", "NEE", "WWW",
    "PNW", "PNE", "PSW", "PSE", "PWW", "PEE", "PNN", "PSS",
    "PP",
)  # fmt: skip

#: in-slice extra neighbours: ``(dy, dx, fallback)``, the fallback being the index of the
#: neighbour of :mod:`.predict` used where this one lies outside the slice
IN_SLICE = ((-1, -2, 2), (-2, -1, 6), (-2, 1, 6), (-1, 2, 3), (0, -3, 5))

#: extra neighbours in the previous slice: ``(dy, dx)``, clamped into the slice
PREV_SLICE = ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, -2), (0, 2), (-2, 0), (2, 0))

N_TAPS = 11 + len(EXT_NAMES)

#: weights are in 1/2^SHIFT
SHIFT = 12

#: slice groups: the first slice of a lane (no previous slice), the others
N_GROUPS = 2

#: taps that lie in the current slice (the only ones of the first slice of a lane)
IN_TAPS = np.array([0, 1, 2, 3, 5, 6, 11, 12, 13, 14, 15])

_SET = struct.Struct(f"<{N_TAPS}hq")

#: weight sets per slice group: one per gradient level, or per intensity class
N_CLASSES = N_GRAD

#: the intensity classes' thresholds
_THR = struct.Struct(f"<{N_CLASSES - 1}q")

#: stored size of the weight sets, and the largest size of a block's parameters
_SETS_BYTES = _SET.size * N_GROUPS * N_CLASSES
XLS_BYTES = 1 + _THR.size + _SETS_BYTES

#: a gradient level is fitted on its own with at least this many sampled voxels per tap
_MIN_PER_TAP = 8

#: voxels sampled per slice group for the fit, and per gradient level at most
_GROUP_SAMPLE = 1 << 17
_LEVEL_SAMPLE = 1 << 13

#: biases are kept within this magnitude (the decoder's sums stay in int64)
_BIAS_CAP = 1 << 52


@dataclass
class XLSParams:
    """Weights ``w`` ``(N_GROUPS, N_CLASSES, N_TAPS)`` and biases ``b`` ``(N_GROUPS,
    N_CLASSES)`` (int64, in 1/2^SHIFT; the bias includes the rounding half), and how a voxel's
    class is found: its gradient level (``thr`` None) or, with ``thr`` (7 non-decreasing int64),
    the number of thresholds at or below ``W + N`` (its intensity)."""

    w: np.ndarray
    b: np.ndarray
    thr: np.ndarray | None = None

    def classes(self, nv: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Class of voxels with neighbours ``nv`` ``(11, m)`` and gradient levels ``level``."""
        if self.thr is None:
            return level
        return np.searchsorted(self.thr, nv[0] + nv[1], side="right")

    def to_bytes(self) -> bytes:
        """The stored form: ``u8`` classifier (0 gradient, 1 intensity), for 1 the 7 ``i64``
        thresholds, then one ``<25hq`` set per group and class."""
        head = bytes([0]) if self.thr is None else bytes([1]) + _THR.pack(*map(int, self.thr))
        return head + b"".join(
            _SET.pack(*[int(x) for x in self.w[g, k]], int(self.b[g, k]))
            for g in range(N_GROUPS)
            for k in range(N_CLASSES)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> XLSParams:
        """Read :meth:`to_bytes`; raises ``FormatError`` for a wrong length, classifier or bias."""
        bad = FormatError("bad wide least-squares parameters in a lossless block")
        if not data or data[0] > 1:
            raise bad
        thr = None
        pos = 1
        if data[0] == 1:
            if len(data) < 1 + _THR.size:
                raise bad
            thr = np.array(_THR.unpack_from(data, 1), np.int64)
            if np.any(np.diff(thr) < 0):
                raise bad
            pos += _THR.size
        if len(data) != pos + _SETS_BYTES:
            raise bad
        w = np.zeros((N_GROUPS, N_CLASSES, N_TAPS), np.int64)
        b = np.zeros((N_GROUPS, N_CLASSES), np.int64)
        for i in range(N_GROUPS * N_CLASSES):
            *wts, bias = _SET.unpack_from(data, pos + i * _SET.size)
            if abs(bias) > _BIAS_CAP:
                raise bad
            w[i // N_CLASSES, i % N_CLASSES], b[i // N_CLASSES, i % N_CLASSES] = wts, bias
        return cls(w, b, thr)

    @property
    def nbytes(self) -> int:
        """Stored size."""
        return 1 + (0 if self.thr is None else _THR.size) + _SETS_BYTES


def ext_values(v: np.ndarray, z: int, pos: np.ndarray, nv: np.ndarray) -> np.ndarray:
    """Values ``(14, m)`` of the extra neighbours of the voxels at slice positions ``pos`` of
    slice ``z`` of block ``v`` ``(d, h, w)`` (``nv``: their 11 neighbours of
    :mod:`.predict`, for the fallbacks). Before the first slice everything is 0; two slices
    back from slice 1 is the previous slice (``P``)."""
    d, h, w = v.shape
    y, x = np.divmod(pos, w)
    out = np.empty((len(EXT_NAMES), pos.size), np.int64)
    cur = v[z]
    for k, (dy, dx, fb) in enumerate(IN_SLICE):
        yy, xx = y + dy, x + dx
        ok = (yy >= 0) & (xx >= 0) & (xx < w)
        out[k] = np.where(ok, cur[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], nv[fb])
    base = len(IN_SLICE)
    for k, (dy, dx) in enumerate(PREV_SLICE):
        if z == 0:
            out[base + k] = 0
        else:
            out[base + k] = v[z - 1][np.clip(y + dy, 0, h - 1), np.clip(x + dx, 0, w - 1)]
    out[-1] = v[z - 2].ravel()[pos] if z >= 2 else nv[4]
    return out


def predict_xls(
    params: XLSParams, group: int, level: np.ndarray, nv: np.ndarray, xv: np.ndarray
) -> np.ndarray:
    """The sub-prediction of voxels with gradient levels ``level``, neighbours ``nv``
    ``(11, m)`` and extra neighbours ``xv`` ``(14, m)`` in slice group ``group``."""
    taps = np.concatenate([nv, xv])
    cls = params.classes(nv, level)
    wts = params.w[group][cls].T  # (25, m)
    return ((wts * taps).sum(axis=0) + params.b[group][cls]) >> SHIFT


def _irls(a: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """Robust least squares (weights ``1 / (|r| + 2)``, 4 rounds): coefficients and bias."""
    a1 = np.concatenate([a, np.ones((t.size, 1))], axis=1)
    wt = np.ones(t.size)
    coef = None
    for _ in range(4):
        aw = a1 * wt[:, None]
        gram = a1.T @ aw
        gram += np.eye(a1.shape[1]) * (1e-6 * np.trace(gram) / a1.shape[1] + 1e-9)
        try:
            coef = np.linalg.solve(gram, aw.T @ t)
        except np.linalg.LinAlgError:
            return None
        wt = 1.0 / (np.abs(t - a1 @ coef) + 2.0)
    return coef if coef is not None and np.all(np.isfinite(coef)) else None


def _quantized(coef: np.ndarray | None, taps: np.ndarray, a: np.ndarray, t: np.ndarray):
    """Integer weights (1/2^SHIFT) of the fitted ``coef`` on ``taps``, and the bias (median
    residual plus the rounding half) measured on the samples ``a`` ``(m, 25)``, ``t``."""
    w = np.zeros(N_TAPS, np.int64)
    if coef is not None:
        w[taps] = np.clip(np.rint(coef[: taps.size] * (1 << SHIFT)), -32768, 32767)
    med = float(np.median((t << SHIFT) - a @ w)) if t.size else 0.0
    bias = int(np.clip(round(med) + (1 << (SHIFT - 1)), -_BIAS_CAP, _BIAS_CAP))
    return w, bias


def _samples(v: np.ndarray, zs: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps ``(m, 25)``, targets and gradient levels of evenly spaced voxels of slices
    ``zs`` (about :data:`_GROUP_SAMPLE` in all)."""
    d, h, w = v.shape
    hw = h * w
    step = max(1, (len(zs) * hw) // _GROUP_SAMPLE)
    nbrs = _Neighbours(d, h, w)
    vflat = np.concatenate([np.zeros(hw, np.int64), v.ravel()])
    parts = []
    for z in zs:
        pos = np.arange((z * hw) % step, hw, step, dtype=np.int64)
        nv = vflat[nbrs.index(pos + z * hw, pos)]
        xv = ext_values(v, z, pos, nv)
        parts.append((np.concatenate([nv, xv]).T, v[z].ravel()[pos], gradient_level(nv)))
    a = np.concatenate([p[0] for p in parts])
    return a, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _fit_classes(
    a: np.ndarray, t: np.ndarray, cls: np.ndarray, taps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(N_CLASSES, 25)`` and biases of samples ``a``, ``t`` by class ``cls`` (a
    class with few samples gets the weights of all of them)."""
    w = np.zeros((N_CLASSES, N_TAPS), np.int64)
    b = np.zeros(N_CLASSES, np.int64)
    if not t.size:
        return w, b
    af, tf = a.astype(np.float64), t.astype(np.float64)
    sub = np.linspace(0, t.size - 1, min(t.size, 2 * _LEVEL_SAMPLE)).astype(np.int64)
    every = _quantized(_irls(af[sub][:, taps], tf[sub]), taps, a[sub], t[sub])
    for k in range(N_CLASSES):
        sel = np.flatnonzero(cls == k)
        if sel.size < _MIN_PER_TAP * taps.size:
            w[k], b[k] = every
            continue
        sel = sel[np.linspace(0, sel.size - 1, min(sel.size, _LEVEL_SAMPLE)).astype(np.int64)]
        w[k], b[k] = _quantized(_irls(af[sel][:, taps], tf[sel]), taps, a[sel], t[sel])
    return w, b


def fit_xls(v: np.ndarray) -> XLSParams:
    """Weights of block ``v`` ``(d, h, w)`` (int64): per slice group and class, robust least
    squares on a sample. Both classifications (gradient level; intensity, at the octiles of
    ``W + N``) are fitted; the one whose residuals cost less (``sum log2(1 + |r|)`` on the
    sample) is kept."""
    d = v.shape[0]
    groups = [(g, zs) for g, zs in enumerate((range(0, min(d, 1)), range(1, d))) if len(zs)]
    samples = {g: _samples(v, zs) for g, zs in groups}
    # intensity thresholds: octiles of W + N over the sample
    m_all = np.concatenate([a[:, 0] + a[:, 1] for a, _t, _l in samples.values()])
    octiles = np.quantile(m_all, np.arange(1, N_CLASSES) / N_CLASSES, method="lower")
    best = None
    for thr in (None, octiles.astype(np.int64)):
        params = XLSParams(
            np.zeros((N_GROUPS, N_CLASSES, N_TAPS), np.int64),
            np.zeros((N_GROUPS, N_CLASSES), np.int64),
            thr,
        )
        cost = 0.0
        for g, (a, t, level) in samples.items():
            cls = params.classes(a[:, :11].T, level)
            taps = IN_TAPS if g == 0 else np.arange(N_TAPS)
            params.w[g], params.b[g] = _fit_classes(a, t, cls, taps)
            pred = ((params.w[g][cls] * a).sum(axis=1) + params.b[g][cls]) >> SHIFT
            cost += float(np.log2(1.0 + np.abs(t - pred)).sum())
        if best is None or cost < best[0]:
            best = (cost, params)
    assert best is not None
    return best[1]


__all__ = ["N_TAPS", "XLS_BYTES", "XLSParams", "ext_values", "fit_xls", "predict_xls"]
