"""A small neural network over the decoded base: the nonlinear synthesis of a hybrid block.

The loop filter (:mod:`.loopfilter`) is linear within each activity class. What it leaves is
largely nonlinear: the sharp phase boundaries of an XCT volume come out of a wavelet or HEVC
base blurred and rung in ways that depend on the sign and size of the local gradients. A
multilayer perceptron, overfitted to the block at encode time and shipped in the payload
(Cool-chic's synthesis, applied to a classical base instead of latent grids), predicts the
error of the filtered base from the base's neighbourhood::

    out[n] = f[n] + span * MLP(x[n])
    x[n]   = ((b[n + o] - b[n]) / span for each offset o,  (b[n] - lo) / span - 1/2,
              (f[n] - b[n]) / span)

where ``b`` is the decoded base, ``f`` the loop filter's output, ``o`` the 26 neighbours of
the 3x3x3 cube and the six voxels two steps along the axes (8 and 4 in one-plane blocks), and
``lo``/``span`` the block's value range. The network has ``depth`` hidden layers of ``hidden``
rectified units; its inputs are scaled by powers of two to about unit spread (the exponents
are stored). It is trained with Adam on a sample of the block's voxels under the block's time
budget; then, for each of a few precisions (:data:`.nntrain.PRECISION_LEVELS`: a tensor's largest
weight is that many steps), it trains a few more steps through the quantizer
(straight-through: the forward pass uses the rounded weights, the gradient updates the float
ones), and keeps the precision whose coded network removes the most error net of its bytes
(priced by the caller). The integer weights are entropy-coded, one quantized Laplace model
per tensor. Decoding is plain float32 numpy (no torch), plane by plane; a plane reads two
base planes on each side. The training is :mod:`.nntrain`'s.

Serialised form (payload version 6 on; ``docs/format.md``)::

    u8 flags (bit 0: one-plane block; bit 1: weights entropy-coded) | u8 hidden | u8 depth
    | f32 lo | f32 span
    | i8 input scale exponents (one per input: the input is multiplied by 2 ** -e)
    | i8 step code per tensor (first layer's weights, its biases, ..., the output's:
      step = 2 ** (code / 4))
    | the integer tensors (:func:`napari_sciz.core.lossy.entropy.encode_tensors`)

Version-5 payloads (flag bit 1 clear) store per tensor ``f32 step | i8 values`` instead of the
step codes and the coded tensors.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..lossy.entropy import decode_tensors, encode_tensors

__all__ = [
    "NeuralFilter",
    "coded_size_estimate",
    "network_size",
    "neighbour_offsets",
    "parse_neural_filter",
]

#: planes (and voxels) a filtered voxel reads on each side in the base
REACH = 2
#: voxels whose features are built at a time when the network is evaluated
_CHUNK = 1 << 18
_HEAD = struct.Struct("<BBBff")
_SCALE = struct.Struct("<f")
#: flag bit of a network's head: one-plane block
_FLAT = 0x01
#: ... its weights are entropy-coded (step codes, then :func:`encode_tensors`)
_CODED = 0x02
#: coded bits per weight assumed before a network is trained (measured: 4.0-4.2 at 15 levels)
_BITS_PER_WEIGHT = 4.5


def neighbour_offsets(flat: bool) -> list[tuple[int, int, int]]:
    """The offsets ``(dz, dy, dx)`` whose base values (less the centre's) feed the network."""
    zs = (0,) if flat else (-1, 0, 1)
    out = [(dz, dy, dx) for dz in zs for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    out.remove((0, 0, 0))
    out += [(0, 2, 0), (0, -2, 0), (0, 0, 2), (0, 0, -2)]
    if not flat:
        out += [(2, 0, 0), (-2, 0, 0)]
    return out


def n_inputs(flat: bool) -> int:
    """Number of inputs of the network."""
    return len(neighbour_offsets(flat)) + 2


def _layer_shapes(flat: bool, hidden: int, depth: int) -> list[tuple[int, ...]]:
    """Shapes of the tensors in stored order: (weights ``(in, out)``, biases) per layer."""
    sizes = [n_inputs(flat)] + [hidden] * depth + [1]
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        shapes += [(a, b), (b,)]
    return shapes


@dataclass
class NeuralFilter:
    """A trained, quantized network (see the module docstring).

    Attributes
    ----------
    flat : bool
        One-plane block (2D neighbourhood).
    hidden, depth : int
        Units per hidden layer and number of hidden layers.
    lo, span : float
        The block's lowest value and value span (feature and output units).
    exponents : numpy.ndarray
        Input ``k`` is multiplied by ``2 ** -exponents[k]`` (int8).
    tensors : list of numpy.ndarray
        Integer weights and biases, layer by layer.
    scales : list of float
        The step of each tensor.
    step_codes : list of int, optional
        The steps as stored, ``2 ** (code / 4)``, for entropy-coded weights; None: the
        version-5 form (float32 steps, int8 weights).
    """

    flat: bool
    hidden: int
    depth: int
    lo: float
    span: float
    exponents: np.ndarray
    tensors: list[np.ndarray]
    scales: list[float]
    step_codes: list[int] | None = None

    reach = REACH

    def weights(self) -> list[np.ndarray]:
        """The float32 weights and biases, layer by layer."""
        return [
            (t.astype(np.float32) * np.float32(s))
            for t, s in zip(self.tensors, self.scales, strict=True)
        ]

    def to_bytes(self) -> bytes:
        """Serialised form."""
        coded = self.step_codes is not None
        flags = (_FLAT if self.flat else 0) | (_CODED if coded else 0)
        out = [_HEAD.pack(flags, self.hidden, self.depth, self.lo, self.span)]
        out.append(self.exponents.astype(np.int8).tobytes())
        if self.step_codes is not None:
            out.append(np.asarray(self.step_codes, dtype=np.int8).tobytes())
            out.append(encode_tensors(self.tensors))
            return b"".join(out)
        for t, s in zip(self.tensors, self.scales, strict=True):
            out += [_SCALE.pack(s), t.astype(np.int8).tobytes()]
        return b"".join(out)

    def apply(
        self, base: np.ndarray, filtered: np.ndarray, z0: int = 0, z1: int | None = None
    ) -> np.ndarray:
        """``filtered`` planes ``z0:z1`` plus the network's correction (float64).

        Parameters
        ----------
        base : numpy.ndarray
            The block's decoded base, ``(D, H, W)``; planes ``z0 - 2`` to ``z1 + 2`` (clamped)
            must hold their values.
        filtered : numpy.ndarray
            The loop filter's output of planes ``z0:z1``, ``(z1 - z0, H, W)``.
        """
        z1 = base.shape[0] if z1 is None else z1
        weights = self.weights()
        inv_scale = np.ldexp(np.float32(1.0), -self.exponents.astype(np.int32)).astype(np.float32)
        out = np.array(filtered, dtype=np.float64, copy=True)
        depth = base.shape[0]
        # each base plane padded once (a plane's features read the two on each side)
        padded = {
            zz: np.pad(base[zz].astype(np.float32), REACH, mode="edge")
            for zz in range(max(z0 - REACH, 0), min(z1 + REACH, depth))
        }
        for z in range(z0, z1):
            plane_f = out[z - z0]
            feats = _plane_features(padded, depth, plane_f, z, self.flat, self.lo, self.span)
            feats *= inv_scale
            plane_f += self.span * _forward(weights, feats).reshape(plane_f.shape)
        return out


def _plane_features(
    padded: dict[int, np.ndarray],
    depth: int,
    filtered: np.ndarray,
    z: int,
    flat: bool,
    lo: float,
    span: float,
) -> np.ndarray:
    """Inputs of every voxel of plane ``z``: ``(H * W, n_inputs)`` float32 (``padded``: the
    base planes around ``z`` as float32, edges replicated by :data:`REACH` voxels)."""
    h, w = filtered.shape
    inv = np.float32(1.0 / span)
    planes = {dz: padded[min(max(z + dz, 0), depth - 1)] for dz in range(-REACH, REACH + 1)}
    centre = planes[0][REACH : REACH + h, REACH : REACH + w]
    offs = neighbour_offsets(flat)
    feats = np.empty((h * w, len(offs) + 2), dtype=np.float32)
    for k, (dz, dy, dx) in enumerate(offs):
        src = planes[dz][REACH + dy : REACH + dy + h, REACH + dx : REACH + dx + w]
        feats[:, k] = ((src - centre) * inv).ravel()
    feats[:, -2] = ((centre - np.float32(lo)) * inv - np.float32(0.5)).ravel()
    feats[:, -1] = ((filtered.astype(np.float32) - centre) * inv).ravel()
    return feats


def _forward(weights: list[np.ndarray], feats: np.ndarray) -> np.ndarray:
    """The network on rows of ``feats`` (float32), in chunks; one output per row."""
    out = np.empty(len(feats), dtype=np.float32)
    for i in range(0, len(feats), _CHUNK):
        x = feats[i : i + _CHUNK]
        for k in range(0, len(weights) - 2, 2):
            x = x @ weights[k]
            x += weights[k + 1]
            np.maximum(x, 0.0, out=x)
        out[i : i + _CHUNK] = (x @ weights[-2]).ravel() + weights[-1][0]
    return out


def parse_neural_filter(data: bytes) -> NeuralFilter:
    """Read a serialised :class:`NeuralFilter` (either form).

    Raises
    ------
    FormatError
        Truncated, oversized or inconsistent data.
    """
    if len(data) < _HEAD.size:
        raise FormatError("hybrid neural filter is truncated")
    flags, hidden, depth, lo, span = _HEAD.unpack_from(data)
    if flags & ~(_FLAT | _CODED) or not 1 <= hidden or not 1 <= depth <= 8:
        raise FormatError("hybrid neural filter has an invalid head")
    if not (math.isfinite(lo) and math.isfinite(span) and span > 0):
        raise FormatError("hybrid neural filter has an invalid value range")
    flat = bool(flags & _FLAT)
    n_in = n_inputs(flat)
    if len(data) < _HEAD.size + n_in:
        raise FormatError("hybrid neural filter is truncated")
    exponents = np.frombuffer(data, np.int8, n_in, _HEAD.size).copy()
    shapes = _layer_shapes(flat, hidden, depth)
    read = _read_coded if flags & _CODED else _read_int8
    tensors, scales, codes = read(data, _HEAD.size + n_in, shapes)
    return NeuralFilter(
        flat, hidden, depth, float(lo), float(span), exponents, tensors, scales, codes
    )


def _read_coded(
    data: bytes, pos: int, shapes: list[tuple[int, ...]]
) -> tuple[list[np.ndarray], list[float], list[int]]:
    """Step codes and entropy-coded tensors from ``pos`` to the end of ``data``."""
    if pos + len(shapes) > len(data):
        raise FormatError("hybrid neural filter is truncated")
    codes = [int(c) for c in np.frombuffer(data, np.int8, len(shapes), pos)]
    flat = decode_tensors(data, pos + len(shapes), [math.prod(s) for s in shapes])
    tensors = [t.reshape(s) for t, s in zip(flat, shapes, strict=True)]
    return tensors, [_step(c) for c in codes], codes


def _read_int8(
    data: bytes, pos: int, shapes: list[tuple[int, ...]]
) -> tuple[list[np.ndarray], list[float], None]:
    """Version 5's tensors: ``f32 step | i8 values`` each, to the end of ``data``."""
    tensors, scales = [], []
    for shape in shapes:
        n = math.prod(shape)
        if pos + _SCALE.size + n > len(data):
            raise FormatError("hybrid neural filter is truncated")
        (scale,) = _SCALE.unpack_from(data, pos)
        if not math.isfinite(scale):
            raise FormatError("hybrid neural filter has a non-finite weight step")
        pos += _SCALE.size
        tensors.append(np.frombuffer(data, np.int8, n, pos).reshape(shape).copy())
        scales.append(float(scale))
        pos += n
    if pos != len(data):
        raise FormatError("hybrid neural filter has trailing bytes")
    return tensors, scales, None


def _step(code: int) -> float:
    """The weight step of a stored step code."""
    return float(np.float32(2.0 ** (code / 4)))


def _step_code(peak: float, levels: int) -> int:
    """The step code whose step puts ``peak`` about ``levels`` steps from zero."""
    if peak <= 0:
        return 0
    return int(np.clip(round(4 * math.log2(peak / levels)), -128, 127))


def coded_size_estimate(flat: bool, hidden: int, depth: int) -> int:
    """Bytes an entropy-coded network of this shape is expected to take before it is trained
    (:data:`_BITS_PER_WEIGHT`; the real size is known once it is coded)."""
    shapes = _layer_shapes(flat, hidden, depth)
    weights = sum(math.prod(s) for s in shapes)
    side = 3 * len(shapes) + 4  # step code, largest magnitude, scale; the stream's last word
    return _HEAD.size + n_inputs(flat) + side + math.ceil(weights * _BITS_PER_WEIGHT / 8)


def network_size(flat: bool, hidden: int, depth: int) -> int:
    """Serialised size of a network of this shape in version 5's form (int8 weights)."""
    shapes = _layer_shapes(flat, hidden, depth)
    return _HEAD.size + n_inputs(flat) + sum(_SCALE.size + math.prod(s) for s in shapes)
