"""Context trees of lossless payload version 5."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.lossless import ctxtree, decode_block, encode_block
from napari_sciz.core.lossless.ctxtree import N_PROPS, P_ACTIVITY, ContextTree, grow_tree
from napari_sciz.core.lossless.predict import _CLS_THR, _N_CLS2, _N_TEX, _class_of
from napari_sciz.errors import FormatError


def test_grown_tree_separates_contexts_and_survives_its_bytes() -> None:
    """Tokens that depend on a property get split on it; the tree reads back identically."""
    rng = np.random.default_rng(0)
    n = 40_000
    props = rng.integers(0, 8, size=(N_PROPS, n)).astype(np.uint8)
    # tokens small where property 5 is low, large where it is high
    tok = np.where(props[5] <= 3, rng.integers(0, 3, n), rng.integers(8, 20, n))
    tree, bits = grow_tree(props, tok, 20)
    assert tree.n_leaves >= 2 and tree.prop[0] == 5 and tree.thr[0] == 3
    ctx = tree.apply(props)
    assert set(np.unique(ctx)) == set(range(tree.n_leaves))
    single = np.bincount(tok, minlength=20)
    flat_bits = -(single * np.log2(np.where(single > 0, single / n, 1))).sum()
    assert bits < 0.8 * flat_bits
    again = ContextTree.from_bytes(tree.to_bytes(), tree.n_leaves)
    for field in ("prop", "thr", "right", "leaf"):
        assert np.array_equal(getattr(again, field), getattr(tree, field))


def test_version_4_contexts_as_a_tree() -> None:
    """The tree of kept activity thresholds and texture levels gives version 4's contexts."""
    rng = np.random.default_rng(1)
    act_value = rng.integers(0, 5000, 20_000)
    g = rng.integers(0, 6, 20_000)
    keep = np.zeros(_N_CLS2 - 1, bool)
    keep[[2, 5, 9, 17, 30]] = True
    props = np.zeros((N_PROPS, act_value.size), np.uint8)
    props[P_ACTIVITY] = _class_of(act_value)
    props[ctxtree.P_GRADIENT] = _class_of(g)
    for n_tex in (1, _N_TEX):
        tree = ContextTree.from_classes(np.flatnonzero(keep), n_tex)
        expected = _class_of(act_value, _CLS_THR[keep])
        if n_tex > 1:
            expected = expected * n_tex + np.minimum(g, n_tex - 1)
        assert np.array_equal(tree.apply(props), expected)
        assert tree.n_leaves == (keep.sum() + 1) * n_tex


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x03\xff", b"\x20\x03\xff\xff", b"\xff\xff", b"\x00\x03\xff\xff\xff"],
)
def test_bad_tree_bytes_are_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        ContextTree.from_bytes(data, 2)


def test_negated_residuals_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks coded with and without negated residuals decode bit for bit."""
    from napari_sciz.core.lossless import raster

    z, y, x = np.meshgrid(np.arange(3), np.arange(40), np.arange(44), indexing="ij")
    rng = np.random.default_rng(2)
    block = 900 + 300 * np.sin(x / 6.0) * np.cos(y / 9.0) + rng.normal(0, 3, x.shape)
    block = np.maximum(block, 0).astype(np.uint16)
    block[:, :8] = 0  # background: flat, many zero residuals
    seen = set()
    for negate in (False, True):
        monkeypatch.setattr(raster, "_NEGATE", negate)
        payload = encode_block(block)
        assert payload[:4] == b"SZL\x07"
        seen.add(payload)
        assert np.array_equal(decode_block(payload, block.dtype, block.shape), block)
    assert len(seen) == 2


def _chain_tree(thr: int) -> ContextTree:
    """A tree testing every property in turn (``property <= thr``: a leaf, else the next)."""
    prop, thrs, right, leaf = [], [], [], []
    for p in range(N_PROPS):
        prop += [p, -1]
        thrs += [thr, 0]
        right += [len(prop), 0]  # the right child is the next test (after the left leaf)
        leaf += [0, p]
    prop.append(-1)
    thrs.append(0)
    right.append(0)
    leaf.append(N_PROPS)
    return ContextTree(*(np.array(a, np.int64) for a in (prop, thrs, right, leaf)))


@pytest.mark.parametrize("mask", [0b1000100, 0b0010000, 0b1111111])
@pytest.mark.parametrize("thr", [0, 2, 5])
def test_every_property_decodes_as_encoded(
    monkeypatch: pytest.MonkeyPatch, mask: int, thr: int
) -> None:
    """The decoder's properties equal the encoder's: a tree that tests each of them (with and
    without a blend of sub-predictors) round-trips."""
    from napari_sciz.core.lossless import raster, tokens

    tree = _chain_tree(thr)
    monkeypatch.setattr(tokens, "_MASKS", (mask,))
    monkeypatch.setattr(raster, "grow_tree", lambda props, tok, ntok, scale: (tree, 0.0))
    z, y, x = np.meshgrid(np.arange(3), np.arange(30), np.arange(33), indexing="ij")
    rng = np.random.default_rng(thr)
    block = 2000 + 600 * np.sin(x / 5.0 + z) * np.cos(y / 7.0) + rng.normal(0, 4, x.shape)
    block = np.maximum(block, 0).astype(np.uint16)
    payload = encode_block(block)
    used = set(raster.ContextTree.from_bytes(tree.to_bytes(), tree.n_leaves).prop.tolist())
    assert used >= set(range(N_PROPS))
    assert np.array_equal(decode_block(payload, block.dtype, block.shape), block)


def test_tree_of_two_properties_as_a_table() -> None:
    """A tree testing at most two properties is decoded from a table: same contexts."""
    rng = np.random.default_rng(4)
    props = np.zeros((N_PROPS, 5000), np.uint8)
    props[3] = rng.integers(0, 32, 5000)
    props[7] = rng.integers(0, 40, 5000)
    tok = np.where(props[3] > 20, rng.integers(5, 9, 5000), rng.integers(0, 4, 5000))
    tok = np.where(props[7] < 4, tok // 2, tok)
    tree, _bits = grow_tree(props, tok, 9)
    lut, pq = tree.as_table()
    assert sorted(pq.tolist()) == [3, 7]
    p, q = pq
    assert np.array_equal(lut[props[p].astype(np.int64) * 64 + props[q]], tree.apply(props))
    assert _chain_tree(0).as_table()[1].tolist() == [-1, -1]  # many properties: walked
