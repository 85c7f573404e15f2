"""Quantized block codes and their entropy coding (ANS via ``constriction``).

A block's payload holds the normalisation range, the architecture, the quantized MLP weights
and the quantized latent grids. Integer symbols are coded with a zero-mean quantized Laplace
model per tensor whose scale is stored in one byte, so the decoder rebuilds exactly the model
the encoder used. The layout is documented in ``docs/format.md``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ...errors import FormatError
from ..bitstream.layout import _varint, read_varint
from .arm import ArmWeights, decode_levels, encode_levels
from .contexts import N_CONTEXTS, dequantize_scale, parent_context, quantize_scale

__all__ = [
    "BlockCode",
    "encode_block",
    "decode_block",
    "quantize_scale",
    "dequantize_scale",
    "best_scale_code",
    "encode_tensors",
    "decode_tensors",
]

_MAGIC = 0x5A  # first byte of a block payload whose latents use per-class static models
_MAGIC_ARM = 0x5B  # first byte of a block payload whose latents use the ARM (:mod:`.arm`)
#: largest |q| that can be coded: the ANS models have 24-bit probabilities, so a model's
#: support (2 * maxabs + 1 symbols) must stay below 2**24
_MAX_SYMBOL = 2**23 - 1


def _laplace_bits_table(values: np.ndarray, counts: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits of integers ``values`` (seen ``counts`` times) under discretised Laplace models
    of scales ``b`` (one total per scale)."""
    v = values.astype(np.float64)[None, :]
    scale = np.asarray(b, np.float64).reshape(-1, 1)
    upper = 0.5 + 0.5 * np.sign(v + 0.5) * (1 - np.exp(-np.abs(v + 0.5) / scale))
    lower = 0.5 + 0.5 * np.sign(v - 0.5) * (1 - np.exp(-np.abs(v - 0.5) / scale))
    p = np.clip(upper - lower, 2.0**-24, 1.0)
    return -(counts * np.log2(p)).sum(axis=1)


def best_scale_code(q: np.ndarray) -> int:
    """The one-byte scale code that minimises the coded size of the integers ``q``."""
    values, counts = np.unique(np.asarray(q).ravel(), return_counts=True)
    mean_abs = float(np.abs(q).mean()) if q.size else 0.0
    centre = quantize_scale(max(mean_abs, 1e-3))
    candidates = np.arange(max(0, centre - 24), min(255, centre + 24) + 1)
    scales = np.array([dequantize_scale(int(c)) for c in candidates])
    # (argmin: the first of equal sizes, the smallest code, as a scan would keep)
    return int(candidates[int(np.argmin(_laplace_bits_table(values, counts, scales)))])


@dataclass
class BlockCode:
    """Everything stored for one block.

    Attributes
    ----------
    first_level, n_levels, hidden, layers : int
        Architecture (see :class:`napari_sciz.core.lossy.model.FieldConfig`).
    vmin, vmax : float
        Normalisation: the field predicts ``(value - vmin) / (vmax - vmin)``.
    latent_step : float
        Dequantisation step of the finest latent level.
    level_gain : float
        Level ``i`` (finest = 0) has step ``latent_step / level_gain**i``.
    latents : list of numpy.ndarray
        Integer latent grids, finest first.
    mlp : list of numpy.ndarray
        Integer MLP parameters (weight, bias, ...).
    mlp_exponents : list of int
        Per-tensor step exponents: parameter = ``q * 2 ** -exponent``.
    arm : ArmWeights, optional
        The autoregressive entropy model of the latents; without it every level is coded with
        per-context-class static Laplace models.
    """

    first_level: int
    n_levels: int
    hidden: int
    layers: int
    vmin: float
    vmax: float
    latent_step: float
    level_gain: float = 2.0
    latents: list[np.ndarray] = field(default_factory=list)
    mlp: list[np.ndarray] = field(default_factory=list)
    mlp_exponents: list[int] = field(default_factory=list)
    arm: ArmWeights | None = None

    def dequantized_latents(self) -> list[np.ndarray]:
        """Latent grids as float32."""
        return [q.astype(np.float32) for q in self.latents]

    def level_steps(self) -> list[float]:
        """Dequantisation step of each latent level, finest first."""
        return [
            float(np.float32(self.latent_step / self.level_gain**i)) for i in range(self.n_levels)
        ]

    def dequantized_mlp(self) -> list[np.ndarray]:
        """MLP parameters as float32."""
        return [
            (q.astype(np.float32) * np.float32(2.0**-e))
            for q, e in zip(self.mlp, self.mlp_exponents, strict=True)
        ]


def _gain_byte(gain: float) -> int:
    value = round(gain * 16)
    if not 1 <= value <= 255 or abs(value / 16 - gain) > 1e-9:
        raise ValueError(f"level gain {gain} is not a multiple of 1/16 in (0, 16)")
    return value


def _write_varint(out: bytearray, value: int) -> None:
    out += _varint(value)


def _coded_groups(latents: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Split each latent level into context groups (coarsest level: one group).

    Returns, for each level (finest first), the list of ``N_CONTEXTS`` flat symbol arrays (the
    coarsest level has a single group).
    """
    out: list[list[np.ndarray]] = []
    for i, q in enumerate(latents):
        flat = q.reshape(-1)
        if i == len(latents) - 1:
            out.append([flat])
            continue
        ctx = parent_context(latents[i + 1], q.shape).reshape(-1)
        out.append([flat[ctx == c] for c in range(N_CONTEXTS)])
    return out


def _tensor_side_info(out: bytearray, q: np.ndarray) -> tuple[int, float]:
    maxabs = int(np.abs(q.astype(np.int64)).max()) if q.size else 0
    if maxabs > _MAX_SYMBOL:
        raise ValueError(
            f"cannot entropy-code symbols beyond +-{_MAX_SYMBOL} (got {maxabs}); "
            "use a coarser quantization step"
        )
    _write_varint(out, maxabs)
    if not maxabs:
        return 0, 0.0
    code = best_scale_code(q)
    out.append(code)
    return maxabs, dequantize_scale(code)


def encode_block(code: BlockCode) -> bytes:
    """Serialise and entropy-code a block.

    MLP parameters use one quantized Laplace model per tensor. Latent levels are coded from
    the coarsest to the finest; every finer level is split into context classes computed from
    its decoded parent level (:func:`parent_context`), each with its own Laplace scale.

    Parameters
    ----------
    code : BlockCode
        The quantized block.

    Returns
    -------
    bytes
        The block payload.
    """
    import constriction

    if code.arm is not None:
        return _encode_arm(code)
    out = _header(code, _MAGIC)
    streams: list[tuple[np.ndarray, int, float]] = []  # in decoding order
    for q in code.mlp:
        flat = np.asarray(q, dtype=np.int32).ravel()
        maxabs, b = _tensor_side_info(out, flat)
        streams.append((flat, maxabs, b))
    latents = [np.asarray(q, dtype=np.int32) for q in code.latents]
    groups = _coded_groups(latents)
    for level_groups in reversed(groups):
        if len(level_groups) > 1:
            mask = sum(1 << c for c, g in enumerate(level_groups) if g.size and np.any(g))
            out += struct.pack("<H", mask)
            for c, g in enumerate(level_groups):
                if mask >> c & 1:
                    maxabs, b = _tensor_side_info(out, g)
                    streams.append((g, maxabs, b))
        else:
            maxabs, b = _tensor_side_info(out, level_groups[0])
            streams.append((level_groups[0], maxabs, b))
    coder = constriction.stream.stack.AnsCoder()
    for q, maxabs, b in reversed(streams):
        if maxabs:
            model = constriction.stream.model.QuantizedLaplace(-maxabs, maxabs, 0.0, b)
            coder.encode_reverse(q, model)
    out += coder.get_compressed().astype("<u4").tobytes()
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def varint(self) -> int:
        value, self.pos = read_varint(self.data, self.pos)
        return value

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FormatError("block payload is truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def side_info(self) -> tuple[int, int]:
        maxabs = self.varint()
        if maxabs > _MAX_SYMBOL:
            raise FormatError("block payload declares an implausible symbol range")
        return maxabs, (self.byte() if maxabs else 0)


def decode_block(
    data: bytes, grid_shapes: list[tuple[int, ...]], mlp_shapes: list[tuple[int, ...]]
) -> BlockCode:
    """Inverse of :func:`encode_block`.

    Parameters
    ----------
    data : bytes
        The payload.
    grid_shapes, mlp_shapes : list of tuple of int
        Shapes of the latent grids (finest first) and MLP parameters, derived from the
        architecture fields (:func:`read_architecture`) and the block shape.

    Raises
    ------
    FormatError
        If the payload is malformed.
    """

    first, n_levels, hidden, layers = read_architecture(data)
    if len(grid_shapes) != n_levels:
        raise FormatError("block payload does not match its architecture")
    if data[0] == _MAGIC_ARM:
        return _decode_arm(data, grid_shapes, mlp_shapes)
    (vmin, vmax, step, gain_byte), exps, pos = _read_head(data, len(mlp_shapes), 0)
    reader = _Reader(data, pos)
    mlp_info = [reader.side_info() for _ in mlp_shapes]
    level_info: list[list[tuple[int, int, int]]] = []  # coarsest first: (class, maxabs, scale)
    for i in reversed(range(n_levels)):
        if i == n_levels - 1:
            level_info.append([(0, *reader.side_info())])
        else:
            if reader.pos + 2 > len(data):
                raise FormatError("block payload is truncated")
            (mask,) = struct.unpack_from("<H", data, reader.pos)
            reader.pos += 2
            level_info.append(
                [(c, *reader.side_info()) for c in range(N_CONTEXTS) if mask >> c & 1]
            )
    coder = _open_stream(data, reader.pos)

    def decode(n: int, maxabs: int, scale_code: int) -> np.ndarray:
        return _decode_group(coder, n, maxabs, scale_code)

    mlp = [
        decode(math.prod(shape), *info).reshape(shape)
        for shape, info in zip(mlp_shapes, mlp_info, strict=True)
    ]
    latents: list[np.ndarray] = [np.zeros(0, np.int32)] * n_levels
    for k, i in enumerate(reversed(range(n_levels))):
        shape = grid_shapes[i]
        n = math.prod(shape)
        if i == n_levels - 1:
            (_c, maxabs, sc) = level_info[k][0]
            latents[i] = decode(n, maxabs, sc).reshape(shape)
            continue
        ctx = parent_context(latents[i + 1], shape).reshape(-1)
        flat = np.zeros(n, dtype=np.int32)
        for c, maxabs, sc in level_info[k]:
            sel = ctx == c
            flat[sel] = decode(int(sel.sum()), maxabs, sc)
        latents[i] = flat.reshape(shape)
    if not coder.is_empty():
        # decoding everything the encoder wrote leaves the coder exactly empty
        raise FormatError("block payload is corrupted (entropy stream has unused data)")
    return BlockCode(
        first,
        n_levels,
        hidden,
        layers,
        float(vmin),
        float(vmax),
        float(step),
        level_gain=gain_byte / 16.0,
        latents=latents,
        mlp=mlp,
        mlp_exponents=exps,
    )


def read_architecture(data: bytes) -> tuple[int, int, int, int]:
    """Read ``(first_level, n_levels, hidden, layers)`` from a block payload."""
    if len(data) < 5 or data[0] not in (_MAGIC, _MAGIC_ARM):
        raise FormatError("block payload is corrupted (bad block marker)")
    first, n_levels, hidden, layers = data[1], data[2], data[3], data[4]
    if not (n_levels >= 1 and 1 <= hidden <= 128 and 1 <= layers <= 8 and first <= 12):
        raise FormatError("block payload declares an unsupported architecture")
    return first, n_levels, hidden, layers


def _header(code: BlockCode, magic: int) -> bytearray:
    out = bytearray([magic, code.first_level, code.n_levels, code.hidden, code.layers])
    out += struct.pack("<ddfB", code.vmin, code.vmax, code.latent_step, _gain_byte(code.level_gain))
    for e in code.mlp_exponents:
        out += struct.pack("<b", int(e))
    return out


def encode_tensors(tensors: list[np.ndarray]) -> bytes:
    """Integer tensors coded with one zero-mean quantized Laplace model each.

    The bytes hold each tensor's side information (varint largest magnitude; the model's
    one-byte scale code when that is nonzero) and then one ANS stream (little-endian u32
    words, to the end) of all their symbols in order; :func:`decode_tensors` reads them.
    """
    import constriction

    out = bytearray()
    streams: list[tuple[np.ndarray, int, float]] = []
    for q in tensors:
        flat = np.asarray(q, dtype=np.int32).ravel()
        maxabs, b = _tensor_side_info(out, flat)
        streams.append((flat, maxabs, b))
    coder = constriction.stream.stack.AnsCoder()
    for q, m, b in reversed(streams):
        if m:
            coder.encode_reverse(q, constriction.stream.model.QuantizedLaplace(-m, m, 0.0, b))
    out += coder.get_compressed().astype("<u4").tobytes()
    return bytes(out)


def decode_tensors(data: bytes, pos: int, sizes: list[int]) -> list[np.ndarray]:
    """The flat int32 tensors of ``sizes`` elements that :func:`encode_tensors` wrote from
    ``pos`` to the end of ``data``.

    Raises
    ------
    FormatError
        Truncated or corrupted bytes.
    """
    reader = _Reader(data, pos)
    side = [reader.side_info() for _ in sizes]
    coder = _open_stream(data, reader.pos)
    try:
        return [_decode_group(coder, n, m, c) for n, (m, c) in zip(sizes, side, strict=True)]
    except (ValueError, RuntimeError) as exc:
        raise FormatError(f"entropy-coded tensors are corrupted ({exc})") from exc


def _encode_arm(code: BlockCode) -> bytes:
    """Payload whose latents are coded with the ARM (magic ``0x5B``, ``docs/format.md``)."""
    import constriction

    arm = code.arm
    assert arm is not None
    out = _header(code, _MAGIC_ARM)
    out += bytes([arm.hidden, arm.e1, arm.e2])
    streams: list[tuple[np.ndarray, int, float]] = []
    for q in [*code.mlp, *arm.tensors()]:
        flat = np.asarray(q, dtype=np.int32).ravel()
        maxabs, b = _tensor_side_info(out, flat)
        streams.append((flat, maxabs, b))
    latents = [np.asarray(q, dtype=np.int32) for q in code.latents]
    maxabs = max((int(np.abs(q.astype(np.int64)).max()) for q in latents if q.size), default=0)
    if maxabs > _MAX_SYMBOL:
        raise ValueError(
            f"cannot entropy-code symbols beyond +-{_MAX_SYMBOL} (got {maxabs}); "
            "use a coarser quantization step"
        )
    _write_varint(out, maxabs)
    coder = constriction.stream.stack.AnsCoder()
    if maxabs:
        encode_levels(latents, arm, maxabs, coder)
    for q, m, b in reversed(streams):
        if m:
            coder.encode_reverse(q, constriction.stream.model.QuantizedLaplace(-m, m, 0.0, b))
    out += coder.get_compressed().astype("<u4").tobytes()
    return bytes(out)


def _decode_arm(
    data: bytes, grid_shapes: list[tuple[int, ...]], mlp_shapes: list[tuple[int, ...]]
) -> BlockCode:
    from .arm import N_FEATURES

    first, n_levels, hidden, layers = read_architecture(data)
    (vmin, vmax, step, gain_byte), exps, pos = _read_head(data, len(mlp_shapes), 3)
    arm_hidden, e1, e2 = data[pos], data[pos + 1], data[pos + 2]
    if not 1 <= arm_hidden <= 64 or e1 > 24 or e2 > 24:
        raise FormatError("block payload declares an unsupported entropy model")
    arm_shapes = [(arm_hidden, N_FEATURES), (arm_hidden,), (2, arm_hidden), (2,)]
    reader = _Reader(data, pos + 3)
    infos = [reader.side_info() for _ in [*mlp_shapes, *arm_shapes]]
    maxabs = reader.varint()
    if maxabs > _MAX_SYMBOL:
        raise FormatError("block payload declares an implausible symbol range")
    coder = _open_stream(data, reader.pos)
    tensors = [
        _decode_group(coder, math.prod(shape), m, sc).reshape(shape)
        for shape, (m, sc) in zip([*mlp_shapes, *arm_shapes], infos, strict=True)
    ]
    mlp = tensors[: len(mlp_shapes)]
    arm = ArmWeights(*tensors[len(mlp_shapes) :], e1=e1, e2=e2)
    if maxabs:
        latents = decode_levels(list(grid_shapes), arm, maxabs, coder)
    else:
        latents = [np.zeros(s, dtype=np.int32) for s in grid_shapes]
    if not coder.is_empty():
        raise FormatError("block payload is corrupted (entropy stream has unused data)")
    return BlockCode(
        first,
        n_levels,
        hidden,
        layers,
        float(vmin),
        float(vmax),
        float(step),
        level_gain=gain_byte / 16.0,
        latents=latents,
        mlp=mlp,
        mlp_exponents=exps,
        arm=arm,
    )


def _read_head(
    data: bytes, n_tensors: int, extra: int
) -> tuple[tuple[float, float, float, int], list[int], int]:
    """``(vmin, vmax, step, gain byte)``, the MLP exponents and the offset after them.

    ``extra`` bytes must follow the exponents (the ARM's header).
    """
    pos = 5
    if len(data) < pos + 21 + n_tensors + extra:
        raise FormatError("block payload is truncated")
    vmin, vmax, step, gain_byte = struct.unpack_from("<ddfB", data, pos)
    pos += 21
    if not all(math.isfinite(v) for v in (vmin, vmax, step)):
        raise FormatError("block payload holds non-finite parameters")
    exps = list(struct.unpack_from(f"<{n_tensors}b", data, pos))
    return (vmin, vmax, step, gain_byte), exps, pos + n_tensors


def _open_stream(data: bytes, pos: int):
    """The ANS decoder of the stream from ``pos`` to the end of the payload."""
    import constriction

    rest = data[pos:]
    if len(rest) % 4:
        raise FormatError("block payload is truncated or corrupted (entropy stream length)")
    words = np.frombuffer(rest, dtype="<u4").astype(np.uint32)
    try:
        return constriction.stream.stack.AnsCoder(words)
    except ValueError as exc:  # e.g. a last word of zero
        raise FormatError(f"block payload is corrupted ({exc})") from exc


def _decode_group(coder, n: int, maxabs: int, scale_code: int) -> np.ndarray:
    """``n`` symbols of one group (zero-mean quantized Laplace), or zeros if it is empty."""
    import constriction

    # (an empty coder is not an error here: symbols the encoder left no trace of, such as a
    # single symbol at the bottom of its range, decode from an empty stream)
    if not maxabs or n == 0:
        return np.zeros(n, dtype=np.int32)
    model = constriction.stream.model.QuantizedLaplace(
        -maxabs, maxabs, 0.0, dequantize_scale(scale_code)
    )
    return np.asarray(coder.decode(model, n), dtype=np.int32)
