"""The context-mixing bit coder of SPERR's SPECK bits (napari_sciz/core/hybrid/bitmix.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from napari_sciz.core.hybrid import bitmix


def _biased(n: int, p_one: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p_one).astype(np.uint8)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 50_000])
@pytest.mark.parametrize("p_one", [0.0, 0.05, 0.5, 1.0])
def test_bits_round_trip(n: int, p_one: float) -> None:
    bits = _biased(n, p_one, seed=n)
    code = bitmix.encode_bits(bits)
    np.testing.assert_array_equal(bitmix.decode_bits(code, n), bits)


def test_the_model_learns_skewed_and_patterned_bits() -> None:
    """Skewed bits cost about their entropy; a repeating pattern costs almost nothing; fair
    coin flips cost little more than themselves."""
    skewed = _biased(80_000, 0.05, seed=1)
    entropy = -(0.05 * np.log2(0.05) + 0.95 * np.log2(0.95)) * skewed.size / 8
    assert len(bitmix.encode_bits(skewed)) < 1.08 * entropy
    pattern = np.tile(np.array([1, 0, 0, 1, 1, 0, 1], np.uint8), 10_000)
    assert len(bitmix.encode_bits(pattern)) < pattern.size / 8 / 20
    fair = _biased(80_000, 0.5, seed=2)
    assert len(bitmix.encode_bits(fair)) < 1.01 * fair.size / 8


def test_the_longest_prefix_that_fits_a_budget() -> None:
    """encode_prefix keeps the longest prefix whose code fits: one bit more would not fit,
    and the code is the code of that prefix (sizes grow with the prefix)."""
    bits = _biased(20_000, 0.2, seed=3)
    for budget in (1, 2, 3, 10, 257, 1500):
        n, code = bitmix.encode_prefix(bits, budget)
        assert len(code) <= budget
        assert code == bitmix.encode_bits(bits[:n])
        if n < bits.size:
            assert len(bitmix.encode_bits(bits[: n + 1])) > budget
        np.testing.assert_array_equal(bitmix.decode_bits(code, n), bits[:n])
    assert bitmix.encode_prefix(bits, 0) == (0, b"")
    whole = bitmix.encode_bits(bits)
    assert bitmix.encode_prefix(bits, len(whole) + 5) == (bits.size, whole)


def test_incompressible_bits_expand_boundedly() -> None:
    """The model's worst case: bits that contradict it each time (at most 12 bits per bit)."""
    bits = np.zeros(2000, np.uint8)
    bits[::97] = 1  # the model learns zeros, then meets ones
    code = bitmix.encode_bits(bits)
    np.testing.assert_array_equal(bitmix.decode_bits(code, bits.size), bits)
    assert len(code) <= bitmix._most_bytes(bits.size)


def test_the_logistic_tables_are_consistent() -> None:
    """stretch is the inverse of squash on the probabilities squash reaches, and both are
    monotone (integers only: every machine builds the same tables)."""
    stretch = bitmix._STRETCH
    assert np.all(np.diff(stretch) >= 0) and stretch[0] == -2047 and stretch[-1] > 1900
    squash = [bitmix._squash_int(x, bitmix._SQUASH_KNOTS) for x in range(-2047, 2048)]
    assert all(b >= a for a, b in zip(squash, squash[1:], strict=False))
    for p in range(1, 4096, 37):
        assert bitmix._squash_int(int(stretch[p]), bitmix._SQUASH_KNOTS) >= p


def test_the_code_is_frozen() -> None:
    """Stored files hold these codes: a change of the model (orders, rates, tables) must be a
    new payload version, not a silent change of what old files decode to."""
    bits = np.concatenate([_biased(30_000, 0.1, seed=5), _biased(30_000, 0.45, seed=6)])
    digest = hashlib.sha256(bitmix.encode_bits(bits)).hexdigest()
    assert digest == FROZEN_DIGEST


#: sha256 of the code in test_the_code_is_frozen (payload version 4)
FROZEN_DIGEST = "58135b9629ead72e5a787f8ec67586d9e5cf3f67cfb13cf0daa0124f7e621982"
