"""Tests of the autoregressive entropy model of the latents (napari_sciz.core.lossy.arm)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_sciz.core.api import decompress
from napari_sciz.core.lossy.arm import (
    N_FEATURES,
    OFFSETS,
    ArmWeights,
    arm_parameters,
    fit_arm,
    level_features,
    log_features,
    wavefront_order,
)
from napari_sciz.core.lossy.entropy import BlockCode, decode_block, encode_block
from napari_sciz.core.lossy.model import FieldConfig
from napari_sciz.errors import FormatError

HERE = Path(__file__).parent / "data"


def smooth_latents(config: FieldConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Spatially correlated integer latents (a blurred random field per level)."""
    out = []
    for i, shape in enumerate(config.grid_shapes()):
        v = rng.normal(0.0, 1.0, shape)
        for axis in range(3):
            if shape[axis] > 2:
                v = (v + np.roll(v, 1, axis) + np.roll(v, -1, axis)) / 1.5
        out.append(np.round(v * 3.0 * 1.5**i).astype(np.int32))
    return out


def code_with(config: FieldConfig, latents: list[np.ndarray], arm: ArmWeights | None):
    rng = np.random.default_rng(1)
    mlp = [rng.integers(-100, 101, size=s).astype(np.int32) for s in config.mlp_shapes()]
    return BlockCode(
        config.first_level,
        config.n_levels,
        config.hidden,
        config.layers,
        0.0,
        1.0,
        0.01,
        2.0,
        latents,
        mlp,
        [7] * len(mlp),
        arm=arm,
    )


CONFIGS = [
    FieldConfig((16, 40, 36), 0, 4, 8, 2),
    FieldConfig((5, 17, 12), 0, 3, 8, 2),  # odd sizes
    FieldConfig((1, 33, 40), 1, 4, 12, 2),  # one plane
    FieldConfig((2, 3, 1), 0, 2, 4, 3),  # size-1 axes
]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: "x".join(map(str, c.shape)))
def fitted(request) -> tuple[FieldConfig, list[np.ndarray], ArmWeights]:
    config = request.param
    latents = smooth_latents(config, np.random.default_rng(0))
    return config, latents, fit_arm([latents], iterations=150)


def test_log_features_are_exact_fixed_point_logs() -> None:
    q = np.array([0, 1, -1, 2, 3, 7, -8, 255, 2**22], dtype=np.int64)
    f = log_features(q)
    # Mitchell's log2(1 + |q|) in 1/16 units: exact at powers of two
    assert f[0] == 0 and f[1] == 16 and f[2] == -16 and f[6] == -(3 * 16 + 2)
    assert f[5] == 3 * 16 and f[7] == 8 * 16
    assert f.dtype == np.int64
    assert np.all(np.diff(log_features(np.arange(0, 5000))) >= 0)


def test_wavefronts_put_every_causal_neighbour_earlier() -> None:
    shape = (4, 5, 6)
    order, bounds = wavefront_order(shape)
    assert sorted(order.tolist()) == list(range(np.prod(shape)))
    front = np.empty(np.prod(shape), dtype=np.int64)
    for t in range(len(bounds) - 1):
        front[order[bounds[t] : bounds[t + 1]]] = t
    front = front.reshape(shape)
    for z, y, x in np.ndindex(shape):
        for dz, dy, dx in OFFSETS:
            n = (z + dz, y + dy, x + dx)
            if all(0 <= c < s for c, s in zip(n, shape, strict=True)):
                assert front[n] < front[z, y, x]


def test_features_read_only_causal_neighbours() -> None:
    rng = np.random.default_rng(2)
    q = rng.integers(-9, 10, size=(4, 6, 7)).astype(np.int32)
    feats = level_features(q, None).reshape(*q.shape, N_FEATURES)
    changed = q.copy()
    changed[2, 3, 4] += 5  # a node decoded after (2, 3, 3) and (2, 2, 5) but before (3, 3, 4)
    after = level_features(changed, None).reshape(*q.shape, N_FEATURES)
    np.testing.assert_array_equal(feats[2, 3, 3], after[2, 3, 3])
    np.testing.assert_array_equal(feats[2, 2, 5], after[2, 2, 5])
    assert not np.array_equal(feats[3, 3, 4], after[3, 3, 4])
    assert not np.array_equal(feats[2, 3, 5], after[2, 3, 5])


def test_parameters_do_not_depend_on_how_nodes_are_batched(fitted: tuple) -> None:
    _config, latents, arm = fitted
    feats = level_features(latents[0], latents[1] if len(latents) > 1 else None)
    mean, scale = arm_parameters(arm, feats)
    perm = np.random.default_rng(3).permutation(len(feats))
    parts = np.array_split(perm, 7)
    for part in parts:
        m, s = arm_parameters(arm, feats[part])
        np.testing.assert_array_equal(m, mean[part])
        np.testing.assert_array_equal(s, scale[part])
    assert np.all(scale > 0) and np.all(np.isfinite(mean))


def test_compiled_parameters_equal_the_numpy_formulation(fitted: tuple) -> None:
    """The decoder's compiled per-node evaluation (:mod:`~napari_sciz.core.lossy.armkernel`)
    gives the numpy path's integers bit for bit, on every level and on wide latents."""
    from napari_sciz.core.lossy import arm as arm_mod
    from napari_sciz.core.lossy.armkernel import mitchell_log

    values = np.concatenate([np.arange(-70000, 70000, 7), [-(2**40), 2**40, 0, 1, -1]])
    expected = log_features(values)
    assert [mitchell_log(int(v), 4) for v in values] == expected.tolist()
    _config, latents, arm = fitted
    wide = [q * 401 - 3 for q in latents]  # large magnitudes: long logs, big accumulators
    for lat in (latents, wide):
        for i, q in enumerate(lat):
            parent = lat[i + 1] if i + 1 < len(lat) else None
            mean, scale = arm_parameters(arm, level_features(q, parent))
            grid = np.zeros(arm_mod._padded_shape(q.shape), np.int64).reshape(-1)
            pidx = arm_mod._padded_index(q.shape)
            grid[pidx] = q.reshape(-1)
            pfeat = arm_mod._parent_features(parent, q.shape)
            deltas = arm_mod._neighbour_deltas(q.shape)
            nodes = np.arange(q.size)
            m, s = arm_mod._node_parameters(grid, pidx, nodes, pfeat, deltas, arm)
            np.testing.assert_array_equal(m, mean)
            np.testing.assert_array_equal(s, scale)


def test_round_trip_is_exact(fitted: tuple) -> None:
    config, latents, arm = fitted
    code = code_with(config, latents, arm)
    payload = encode_block(code)
    assert payload[0] == 0x5B
    decoded = decode_block(payload, config.grid_shapes(), config.mlp_shapes())
    for a, b in zip(decoded.latents + decoded.mlp, code.latents + code.mlp, strict=True):
        np.testing.assert_array_equal(a, b)
    assert decoded.arm is not None
    for a, b in zip(decoded.arm.tensors(), arm.tensors(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (decoded.arm.e1, decoded.arm.e2) == (arm.e1, arm.e2)


def test_arm_codes_correlated_latents_smaller() -> None:
    config = CONFIGS[0]
    latents = smooth_latents(config, np.random.default_rng(5))
    arm = fit_arm([latents], iterations=300)
    static = len(encode_block(code_with(config, latents, None)))
    with_arm = len(encode_block(code_with(config, latents, arm)))
    assert with_arm < 0.9 * static


def test_all_zero_latents_with_an_arm() -> None:
    config = CONFIGS[1]
    zeros = [np.zeros(s, dtype=np.int32) for s in config.grid_shapes()]
    arm = fit_arm([smooth_latents(config, np.random.default_rng(6))], iterations=20)
    payload = encode_block(code_with(config, zeros, arm))
    decoded = decode_block(payload, config.grid_shapes(), config.mlp_shapes())
    assert all(not q.any() for q in decoded.latents)


def test_truncated_or_corrupted_arm_payloads_raise_format_error(fitted: tuple) -> None:
    config, latents, arm = fitted
    code = code_with(config, latents, arm)
    payload = encode_block(code)
    for cut in range(0, len(payload), max(1, len(payload) // 60)):
        if (len(payload) - cut) % 4 == 0 and cut > 60:
            continue  # a word-aligned cut of the ANS stream: the container's CRC catches it
        with pytest.raises(FormatError):
            decode_block(payload[:cut], config.grid_shapes(), config.mlp_shapes())
    for pos in range(0, len(payload), max(1, len(payload) // 80)):
        bad = bytearray(payload)
        bad[pos] ^= 0xFF
        try:
            decode_block(bytes(bad), config.grid_shapes(), config.mlp_shapes())
        except FormatError:
            pass  # anything else (an exception of another type) fails the test


def test_bad_entropy_model_header_is_rejected(fitted: tuple) -> None:
    config, latents, arm = fitted
    payload = bytearray(encode_block(code_with(config, latents, arm)))
    pos = 5 + 21 + len(config.mlp_shapes())
    payload[pos] = 0  # no hidden unit
    with pytest.raises(FormatError, match="entropy model"):
        decode_block(bytes(payload), config.grid_shapes(), config.mlp_shapes())


def test_static_and_arm_payloads_can_be_swapped() -> None:
    config = CONFIGS[1]
    latents = smooth_latents(config, np.random.default_rng(7))
    arm = fit_arm([latents], iterations=50)
    code = code_with(config, latents, arm)
    static = dataclasses.replace(code, arm=None)
    a = decode_block(encode_block(code), config.grid_shapes(), config.mlp_shapes())
    b = decode_block(encode_block(static), config.grid_shapes(), config.mlp_shapes())
    for x, y in zip(a.latents, b.latents, strict=True):
        np.testing.assert_array_equal(x, y)
    assert b.arm is None


@pytest.mark.parametrize("name", ["lossy_static_v1", "lossy_arm_v1"])
def test_stored_lossy_files_still_decode(name: str) -> None:
    """Files written by earlier versions (static models, then the ARM) decode unchanged."""
    data = (HERE / f"{name}.sciz").read_bytes()
    stored = np.load(HERE / f"{name}_decoded.npz")
    np.testing.assert_array_equal(decompress(data), stored["decoded"])
