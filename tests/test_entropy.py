"""Tests of the block codes and their entropy coding (napari_sciz.core.lossy.entropy)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_sciz.core.lossy.entropy import (
    N_CONTEXTS,
    BlockCode,
    _laplace_bits_table,
    best_scale_code,
    decode_block,
    dequantize_scale,
    encode_block,
    parent_context,
    quantize_scale,
    read_architecture,
)
from napari_sciz.core.lossy.model import FieldConfig, level_shape
from napari_sciz.errors import FormatError

LIMIT = 2**23 - 1  # largest codable |symbol|


def random_code(
    config: FieldConfig,
    rng: np.random.Generator,
    scales: list[float] | None = None,
    *,
    vmin: float = -3.25,
    vmax: float = 4095.5,
    gain: float = 2.0,
) -> BlockCode:
    """A block code with Laplace-distributed latents (coarser levels larger) and random MLP."""
    shapes = config.grid_shapes()
    if scales is None:
        scales = [0.4 * 2.0**i for i in range(len(shapes))]
    latents = [
        np.round(rng.laplace(0.0, s, size=shape)).astype(np.int32)
        for shape, s in zip(shapes, scales, strict=True)
    ]
    mlp = [rng.integers(-200, 201, size=shape).astype(np.int32) for shape in config.mlp_shapes()]
    exps = [int(e) for e in rng.integers(-128, 128, size=len(mlp))]
    step = float(np.float32(rng.uniform(1e-4, 1.0)))
    return BlockCode(
        config.first_level,
        config.n_levels,
        config.hidden,
        config.layers,
        vmin,
        vmax,
        step,
        gain,
        latents,
        mlp,
        exps,
    )


def assert_same_code(a: BlockCode, b: BlockCode) -> None:
    assert (a.first_level, a.n_levels, a.hidden, a.layers) == (
        b.first_level,
        b.n_levels,
        b.hidden,
        b.layers,
    )
    assert a.vmin == b.vmin and a.vmax == b.vmax
    assert a.latent_step == b.latent_step
    assert a.level_gain == b.level_gain
    assert a.mlp_exponents == b.mlp_exponents
    assert len(a.latents) == len(b.latents) and len(a.mlp) == len(b.mlp)
    for x, y in zip(a.latents + a.mlp, b.latents + b.mlp, strict=True):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def round_trip(code: BlockCode, config: FieldConfig) -> tuple[bytes, BlockCode]:
    payload = encode_block(code)
    assert isinstance(payload, bytes)
    decoded = decode_block(payload, config.grid_shapes(), config.mlp_shapes())
    return payload, decoded


CONFIGS = [
    FieldConfig((16, 64, 64), 0, 5, 16, 2),
    FieldConfig((5, 17, 12), 0, 3, 8, 2),  # odd sizes
    FieldConfig((1, 33, 40), 1, 4, 12, 2),  # 2D block (depth 1)
    FieldConfig((1, 2, 2), 0, 1, 1, 1),  # tiny: one level, one hidden unit
    FieldConfig((2, 3, 1), 0, 2, 4, 3),  # size-1 and size-2 axes
    FieldConfig((9, 1, 1), 2, 2, 8, 1),
    FieldConfig((7, 13, 29), 2, 3, 128, 8),  # widest / deepest MLP accepted
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "x".join(map(str, c.shape)))
def test_round_trip_random_latents(config: FieldConfig) -> None:
    rng = np.random.default_rng(sum(config.shape))
    code = random_code(config, rng)
    payload, decoded = round_trip(code, config)
    assert payload[0] == 0x5A
    assert read_architecture(payload) == (
        config.first_level,
        config.n_levels,
        config.hidden,
        config.layers,
    )
    assert_same_code(code, decoded)


@pytest.mark.parametrize(
    "scales",
    [
        [0.0, 0.0, 0.0],  # all zero: no stream at all
        [0.0, 0.0, 50.0],  # only the coarsest level
        [30.0, 0.0, 0.0],  # only the finest level
        [0.05, 0.05, 0.05],  # nearly all zero, a few +-1
        [1e4, 3e4, 1e5],  # wide ranges
    ],
)
def test_round_trip_latent_distributions(scales: list[float]) -> None:
    config = FieldConfig((6, 21, 18), 0, 3, 8, 2)
    code = random_code(config, np.random.default_rng(1), scales)
    _payload, decoded = round_trip(code, config)
    assert_same_code(code, decoded)


def test_round_trip_extremes() -> None:
    config = FieldConfig((3, 9, 8), 0, 3, 4, 1)
    rng = np.random.default_rng(2)
    code = random_code(config, rng, vmin=-1e300, vmax=1e300, gain=15.9375)
    code.latents[0].flat[5] = LIMIT
    code.latents[1].flat[0] = -LIMIT
    code.mlp[0][:] = 0
    code.mlp[1].flat[0] = LIMIT
    code.mlp_exponents = [-128, 127, 0, 5]
    _payload, decoded = round_trip(code, config)
    assert_same_code(code, decoded)


def test_stream_that_leaves_the_coder_empty() -> None:
    # all latents zero and a single negative output bias: the only coded symbol is the bottom
    # of its range, which leaves no trace in the ANS stream; it must still decode
    config = FieldConfig((4, 9, 9), 0, 3, 8, 2)
    code = random_code(config, np.random.default_rng(10), [0.0, 0.0, 0.0])
    code.mlp = [np.zeros_like(m) for m in code.mlp]
    code.mlp[-1][0] = -47
    payload, decoded = round_trip(code, config)
    assert_same_code(code, decoded)


def test_latent_step_is_stored_as_float32() -> None:
    config = FieldConfig((2, 4, 4), 0, 2, 2, 1)
    code = random_code(config, np.random.default_rng(3))
    code.latent_step = 0.1
    _payload, decoded = round_trip(code, config)
    assert decoded.latent_step == float(np.float32(0.1))
    assert decoded.level_steps() == code.level_steps()


def test_zero_symbols_cost_little() -> None:
    config = FieldConfig((16, 64, 64), 0, 5, 16, 2)
    code = random_code(config, np.random.default_rng(4), [0.0] * 5)
    code.mlp = [np.zeros_like(m) for m in code.mlp]
    payload = encode_block(code)
    # architecture, ranges, exponents, one varint per tensor and a 2-byte mask per finer level
    assert len(payload) <= 5 + 21 + 6 + 6 + 1 + 4 * 2
    # a busier code is bigger
    busy = random_code(config, np.random.default_rng(4), [3.0] * 5)
    assert len(encode_block(busy)) > 10 * len(payload)


def test_symbols_beyond_the_limit_are_rejected() -> None:
    config = FieldConfig((2, 4, 4), 0, 2, 2, 1)
    code = random_code(config, np.random.default_rng(5))
    code.latents[0].flat[0] = LIMIT + 1
    with pytest.raises(ValueError, match="cannot entropy-code"):
        encode_block(code)


def test_gain_must_be_a_multiple_of_one_sixteenth() -> None:
    config = FieldConfig((2, 4, 4), 0, 2, 2, 1)
    for gain in (2.01, 0.0, 16.0, -1.0):
        code = random_code(config, np.random.default_rng(6), gain=gain)
        with pytest.raises(ValueError, match="gain"):
            encode_block(code)


def test_dequantized_values() -> None:
    config = FieldConfig((2, 4, 4), 0, 2, 2, 1)
    code = random_code(config, np.random.default_rng(7))
    code.mlp_exponents = [3, -2, 0, 1]
    for q, e, w in zip(code.mlp, code.mlp_exponents, code.dequantized_mlp(), strict=True):
        assert w.dtype == np.float32
        np.testing.assert_array_equal(w, q.astype(np.float32) * np.float32(2.0**-e))
    assert all(g.dtype == np.float32 for g in code.dequantized_latents())
    code.latent_step, code.level_gain = 0.5, 2.0
    assert code.level_steps() == [0.5, 0.25]


# --------------------------------------------------------------------------------------------
# malformed payloads
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coded() -> tuple[FieldConfig, BlockCode, bytes]:
    config = FieldConfig((5, 17, 12), 0, 3, 8, 2)
    code = random_code(config, np.random.default_rng(8), [0.7, 3.0, 20.0])
    return config, code, encode_block(code)


def test_truncated_payloads_raise_format_error(coded: tuple) -> None:
    config, _code, payload = coded
    for cut in range(len(payload)):
        if (len(payload) - cut) % 4 == 0 and cut > 40:
            # a cut on a word boundary of the ANS stream may decode to wrong values: the
            # container's CRC-32 catches those
            continue
        with pytest.raises(FormatError):
            decode_block(payload[:cut], config.grid_shapes(), config.mlp_shapes())


def test_corrupted_payloads_raise_only_format_error(coded: tuple) -> None:
    config, code, payload = coded
    detected = changed = 0
    for pos in range(len(payload)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(payload)
            bad[pos] ^= flip
            try:
                decoded = decode_block(bytes(bad), config.grid_shapes(), config.mlp_shapes())
            except FormatError:
                detected += 1
                continue
            try:
                assert_same_code(code, decoded)
            except AssertionError:
                changed += 1
    # most corruptions are caught by the payload itself (the ANS stream must end exactly
    # empty); the container's CRC-32 catches all of them in a file
    assert detected > 0.8 * 3 * len(payload)
    assert changed < 0.1 * 3 * len(payload)


@pytest.mark.parametrize(
    ("pos", "value", "match"),
    [
        (0, 0x00, "block marker"),
        (2, 0, "architecture"),  # no latent level
        (3, 0, "architecture"),  # no hidden unit
        (3, 129, "architecture"),
        (4, 0, "architecture"),  # no hidden layer
        (4, 9, "architecture"),
        (1, 13, "architecture"),  # finest level too coarse
    ],
)
def test_bad_architecture_bytes(coded: tuple, pos: int, value: int, match: str) -> None:
    config, _code, payload = coded
    bad = bytearray(payload)
    bad[pos] = value
    with pytest.raises(FormatError, match=match):
        read_architecture(bytes(bad))
    with pytest.raises(FormatError):
        decode_block(bytes(bad), config.grid_shapes(), config.mlp_shapes())


def test_architecture_must_match_the_grid_shapes(coded: tuple) -> None:
    config, _code, payload = coded
    with pytest.raises(FormatError, match="architecture"):
        decode_block(payload, config.grid_shapes()[:-1], config.mlp_shapes())


@pytest.mark.parametrize("offset", [0, 8, 16])
def test_non_finite_parameters(coded: tuple, offset: int) -> None:
    config, _code, payload = coded
    bad = bytearray(payload)
    fmt = "<f" if offset == 16 else "<d"
    struct.pack_into(fmt, bad, 5 + offset, math.nan)
    with pytest.raises(FormatError, match="non-finite"):
        decode_block(bytes(bad), config.grid_shapes(), config.mlp_shapes())


def test_implausible_symbol_range() -> None:
    config = FieldConfig((2, 4, 4), 0, 1, 1, 1)
    code = random_code(config, np.random.default_rng(9))
    payload = encode_block(code)
    head = 5 + 21 + len(config.mlp_shapes())
    # replace the first side info (the varint of the first MLP tensor) by 2**23
    n = 0
    while payload[head + n] & 0x80:
        n += 1
    huge = bytes([0x80, 0x80, 0x80, 0x04])  # LEB128 of 2**23
    bad = payload[:head] + huge + payload[head + n + 1 :]
    with pytest.raises(FormatError, match="implausible"):
        decode_block(bad, config.grid_shapes(), config.mlp_shapes())
    # an endless varint
    bad = payload[:head] + b"\xff" * 12
    with pytest.raises(FormatError, match="varint"):
        decode_block(bad, config.grid_shapes(), config.mlp_shapes())


# --------------------------------------------------------------------------------------------
# Laplace scale codes
# --------------------------------------------------------------------------------------------


def test_scale_codes_round_trip() -> None:
    for code in range(256):
        assert quantize_scale(dequantize_scale(code)) == code
    assert dequantize_scale(0) == 2.0**-6
    assert dequantize_scale(96) == 1.0
    assert quantize_scale(0.0) == 0
    assert quantize_scale(-1.0) == 0
    assert quantize_scale(math.nan) == 0
    assert quantize_scale(1e-9) == 0
    assert quantize_scale(1e9) == 255


@pytest.mark.parametrize("b", [0.05, 0.5, 2.0, 30.0, 400.0])
def test_best_scale_code_is_near_optimal(b: float) -> None:
    rng = np.random.default_rng(int(b * 100))
    q = np.round(rng.laplace(0, b, 4000)).astype(np.int64)
    code = best_scale_code(q)
    values, counts = np.unique(q, return_counts=True)
    bits = _laplace_bits_table(values, counts, np.array([dequantize_scale(c) for c in range(256)]))
    # the search is local (around the mean magnitude); it may miss the optimum of very sparse
    # tensors by a few bits
    assert bits[code] <= min(bits) * 1.01 + 4
    assert 0 <= code <= 255


# --------------------------------------------------------------------------------------------
# context classes
# --------------------------------------------------------------------------------------------


def reference_context(parent: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Direct transcription of the rule documented in docs/format.md (loops, floats)."""
    pz, py, px = parent.shape

    def parents(j: int, n_child: int, n_parent: int) -> list[int]:
        if n_child == n_parent:
            return [j]
        return sorted({min(j // 2, n_parent - 1), min((j + 1) // 2, n_parent - 1)})

    up = np.zeros(shape, np.int64)
    for z, y, x in np.ndindex(*shape):
        up[z, y, x] = max(
            abs(int(parent[a, b, c]))
            for a in parents(z, shape[0], pz)
            for b in parents(y, shape[1], py)
            for c in parents(x, shape[2], px)
        )
    out = np.zeros(shape, np.int64)
    for z, y, x in np.ndindex(*shape):
        m = 0
        for dz in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    zz = min(max(z + dz, 0), shape[0] - 1)
                    yy = min(max(y + dy, 0), shape[1] - 1)
                    xx = min(max(x + dx, 0), shape[2] - 1)
                    m = max(m, int(up[zz, yy, xx]))
        out[z, y, x] = min(max(math.floor(2 * math.log2(m + 0.5)) + 2, 0), N_CONTEXTS - 1)
    return out


EDGE_SHAPES = [
    (1, 1, 1),
    (1, 1, 2),
    (1, 2, 2),
    (1, 3, 5),
    (2, 2, 2),
    (3, 1, 7),
    (5, 9, 3),
    (1, 17, 12),
    (4, 4, 9),
    (2, 33, 1),
]


@pytest.mark.parametrize("block", EDGE_SHAPES)
@pytest.mark.parametrize("first", [0, 1])
def test_parent_context_matches_reference(block: tuple[int, int, int], first: int) -> None:
    child = level_shape(block, first)
    parent_shape = level_shape(block, first + 1)
    rng = np.random.default_rng(sum(block) + first)
    parent = np.round(rng.laplace(0, 4, parent_shape)).astype(np.int32)
    parent.flat[0] = -300  # one large magnitude, to reach the top class
    ctx = parent_context(parent, child)
    assert ctx.shape == child
    assert ctx.min() >= 0 and ctx.max() < N_CONTEXTS
    np.testing.assert_array_equal(ctx, reference_context(parent, child))


def test_parent_context_classes_of_magnitudes() -> None:
    # a single parent value everywhere: the class is a function of its magnitude
    expected = {0: 0, 1: 3, 2: 4, 3: 5, 4: 6, 5: 6, 6: 7, 8: 8, 11: 9, 16: 10, 23: 11, 10**6: 11}
    for m, cls in expected.items():
        ctx = parent_context(np.full((2, 3, 3), -m, np.int32), (3, 5, 5))
        assert np.all(ctx == cls), m
        assert min(max(math.floor(2 * math.log2(m + 0.5)) + 2, 0), N_CONTEXTS - 1) == cls


def test_parent_context_reaches_only_neighbours() -> None:
    parent = np.zeros((1, 9, 9), np.int32)
    parent[0, 4, 4] = 100
    ctx = parent_context(parent, (1, 17, 17))
    busy = np.argwhere(ctx > 0)
    # parent node (4, 4) sits on child node (8, 8); children 7..9 touch it, then +-1 dilation
    assert busy[:, 1].min() == 6 and busy[:, 1].max() == 10
    assert busy[:, 2].min() == 6 and busy[:, 2].max() == 10


@settings(max_examples=40, deadline=None)
@given(
    block=st.tuples(st.integers(1, 12), st.integers(1, 20), st.integers(1, 20)),
    seed=st.integers(0, 2**31),
)
def test_round_trip_property(block: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_levels = int(rng.integers(1, 5))
    config = FieldConfig(block, int(rng.integers(0, 3)), n_levels, int(rng.integers(1, 17)), 2)
    scales = [float(s) for s in rng.choice([0.0, 0.1, 1.0, 10.0, 300.0], size=n_levels)]
    code = random_code(config, rng, scales)
    _payload, decoded = round_trip(code, config)
    assert_same_code(code, decoded)


def test_payload_layout_matches_the_format_spec() -> None:
    """Parse a payload by hand, following docs/format.md section 7.2."""
    config = FieldConfig((5, 17, 12), 1, 3, 8, 2)
    code = random_code(config, np.random.default_rng(11), [0.5, 2.0, 9.0], gain=1.5)
    code.mlp[1][:] = 0  # a tensor without symbols: no scale byte
    payload = encode_block(code)
    assert payload[:5] == bytes([0x5A, 1, 3, 8, 2])
    vmin, vmax, step, gain = struct.unpack_from("<ddfB", payload, 5)
    assert (vmin, vmax, step, gain) == (code.vmin, code.vmax, code.latent_step, 24)
    n_tensors = 2 * (config.layers + 1)
    assert list(struct.unpack_from(f"<{n_tensors}b", payload, 26)) == code.mlp_exponents
    pos = 26 + n_tensors

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = payload[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def group(symbols: np.ndarray) -> None:
        nonlocal pos
        maxabs = varint()
        assert maxabs == int(np.abs(symbols).max(initial=0))
        if maxabs:
            assert payload[pos] == best_scale_code(symbols)
            pos += 1

    for q in code.mlp:
        group(q.ravel())
    group(code.latents[-1].ravel())
    for i in reversed(range(config.n_levels - 1)):
        (mask,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        ctx = parent_context(code.latents[i + 1], code.latents[i].shape).ravel()
        flat = code.latents[i].ravel()
        present = [c for c in range(N_CONTEXTS) if np.any(flat[ctx == c])]
        assert mask == sum(1 << c for c in present)
        for c in present:
            group(flat[ctx == c])
    assert (len(payload) - pos) % 4 == 0 and len(payload) > pos
