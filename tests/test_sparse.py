"""Sparse contexts of lossless payload version 7: nearly-all-zero token runs coded as gaps."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.lossless import decode_block, encode_block
from napari_sciz.core.lossless import raster as raster_mod
from napari_sciz.core.lossless.lanes import read_lane_ext
from napari_sciz.core.lossless.layout import _HEAD2
from napari_sciz.core.lossless.sparse import SparseTable, choose, split_run
from napari_sciz.errors import FormatError


def _ct_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Air (exact zeros, a few specks) around a noisy disc: a CT slice's statistics."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.mgrid[:d, :h, :w]
    disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2
    v = np.where(disc, 1000 + 40 * np.sin(x / 6) + rng.normal(0, 6, shape), 0)
    specks = rng.random(shape) < 2e-4
    v[specks & ~disc] = rng.integers(1, 40, int((specks & ~disc).sum()))
    return v.astype(np.uint16)


def _sparse_table(payload: bytes, shape: tuple[int, int, int]) -> SparseTable:
    ext, _pos = read_lane_ext(payload, _HEAD2.size, shape, payload[3])
    n_ctx = _HEAD2.unpack_from(payload)[13]
    return SparseTable.from_bytes(ext.sparse, n_ctx, ext.lanes)


def test_split_run_gaps_and_nonzero_tokens() -> None:
    gaps, nz = split_run(np.array([0, 0, 3, 0, 1, 1, 0, 0, 0]))
    assert gaps.tolist() == [2, 1, 0, 3] and nz.tolist() == [3, 1, 1]
    gaps, nz = split_run(np.zeros(0, np.int64))
    assert gaps.tolist() == [0] and nz.size == 0


def test_air_is_coded_as_a_sparse_context_and_round_trips() -> None:
    v = _ct_like((2, 160, 160))
    payload = encode_block(v)
    assert payload[:4] == b"SZL\x07"
    table = _sparse_table(payload, v.shape)
    assert table.ctx.size >= 1 and table.nnz.shape[1] == table.ctx.size
    assert np.array_equal(decode_block(payload, v.dtype, v.shape), v)


def test_sparse_contexts_in_lanes_where_some_lanes_have_none_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four lanes; the air is only in the first and last slabs (empty runs elsewhere)."""
    v = _ct_like((4, 160, 160), seed=3)
    v[1:3] = np.random.default_rng(1).normal(2000, 30, (2, 160, 160)).astype(np.uint16)
    monkeypatch.setattr(raster_mod, "plan_lanes", lambda *a, **k: (4, raster_mod.AXIS_Z))
    payload = encode_block(v)
    table = _sparse_table(payload, v.shape)
    assert table.nnz.shape == (4, table.ctx.size) and table.ctx.size >= 1
    assert np.array_equal(decode_block(payload, v.dtype, v.shape), v)


def test_noisy_data_has_no_sparse_context() -> None:
    rng = np.random.default_rng(2)
    v = rng.normal(3000, 50, (2, 64, 64)).astype(np.uint16)
    payload = encode_block(v)
    assert _sparse_table(payload, v.shape).ctx.size == 0
    assert np.array_equal(decode_block(payload, v.dtype, v.shape), v)


def test_choose_counts_every_lane_and_keeps_dense_contexts_dense() -> None:
    rng = np.random.default_rng(0)
    tok = np.where(rng.random(60000) < 5e-4, 3, 0)
    ctx = np.zeros(60000, np.int64)
    ctx[50000:] = 1
    tok[50000:] = rng.integers(0, 8, 10000)  # context 1: busy
    q = np.stack([np.bincount(tok[ctx == c], minlength=8) for c in (0, 1)])
    table = choose(tok, ctx, np.array([0, 52000, 60000]), q)
    assert table.ctx.tolist() == [0]
    assert table.nnz[:, 0].tolist() == [int((tok[:50000] > 0).sum()), 0]
    back = SparseTable.from_bytes(table.to_bytes(), 2, 2)
    assert np.array_equal(back.ctx, table.ctx) and np.array_equal(back.hist, table.hist)
    assert np.array_equal(back.nnz, table.nnz)


@pytest.mark.parametrize("field", ["nnz", "ctx", "count"])
def test_inconsistent_sparse_sections_are_refused(field: str) -> None:
    table = SparseTable(np.array([1, 4]), np.array([[3, 1], [2, 0]]), np.array([[1, 0], [1, 0]]))
    good = SparseTable.from_bytes(table.to_bytes(), 6, 2)
    assert good.ctx.tolist() == [1, 4]
    if field == "nnz":
        table.nnz[0, 0] += 1  # the bucket counts no longer add up
    elif field == "ctx":
        table.ctx = np.array([1, 6])  # beyond the contexts
    else:
        data = bytearray(table.to_bytes())
        data[0] = 0  # no sparse context
        with pytest.raises(FormatError):
            SparseTable.from_bytes(bytes(data), 6, 2)
        return
    with pytest.raises(FormatError):
        SparseTable.from_bytes(table.to_bytes(), 6, 2)


def test_a_corrupted_gap_stream_is_refused() -> None:
    v = _ct_like((2, 160, 160), seed=5)
    payload = encode_block(v)
    for k in range(1, 40):
        bad = bytearray(payload)
        bad[-4 * k] ^= 0x5A  # the ANS words are at the end
        with pytest.raises(FormatError):
            decode_block(bytes(bad), v.dtype, v.shape)
