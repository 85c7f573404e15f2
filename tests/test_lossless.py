"""Lossless and error-bounded modes (napari_sciz.core.lossless and its API/CLI integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _damage import assert_damage_refused

from napari_sciz.core import api
from napari_sciz.core.bitstream import container
from napari_sciz.core.lossless import decode_block, encode_block
from napari_sciz.errors import FormatError, InvalidInputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the clone
INT_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32"]


def _smooth(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """A smooth field plus noise spanning a good part of the dtype range."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    field = sum(np.sin(g * (i + 1)) for i, g in enumerate(grids))
    field = field + rng.normal(0, 0.1, shape)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (field * 100).astype(dt)
    info = np.iinfo(dt)
    span = min(float(info.max) - float(info.min), 60000.0)
    lo = max(float(info.min), -span / 2) if info.min < 0 else 0.0
    norm = (field - field.min()) / (np.ptp(field) + 1e-12)
    return (lo + norm * span).astype(dt)


def _bit_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", INT_DTYPES + ["float16", "float32"])
def test_block_round_trip_every_dtype(dtype: str) -> None:
    block = _smooth((4, 19, 23), dtype)
    payload = encode_block(block)
    assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)
    assert len(payload) < block.nbytes


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_full_range_random_integers(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    block = rng.integers(info.min, info.max, (3, 9, 11), dtype=dtype, endpoint=True)
    block[0, 0, :3] = [info.min, info.max, info.min]
    assert _bit_equal(decode_block(encode_block(block), block.dtype, block.shape), block)


@pytest.mark.parametrize(
    ("dtype", "spread", "tiny", "big"),
    [("float32", 1e3, 1e-40, -1e30), ("float16", 30, 1e-7, -6e4)],
)
def test_float_bit_patterns(dtype: str, spread: float, tiny: float, big: float) -> None:
    rng = np.random.default_rng(1)
    block = rng.normal(0, spread, (2, 16, 16)).astype(dtype)
    block[0, 0, :6] = [0.0, -0.0, tiny, -tiny, np.finfo(dtype).max, big]
    out = decode_block(encode_block(block), block.dtype, block.shape)
    assert _bit_equal(out, block)  # -0.0 and subnormals kept


def test_sparse_histogram_and_constant() -> None:
    rng = np.random.default_rng(2)
    table = np.sort(rng.choice(65536, 300, replace=False)).astype(np.uint16)
    block = table[rng.integers(0, 300, (5, 20, 20))]
    assert _bit_equal(decode_block(encode_block(block), block.dtype, block.shape), block)
    const = np.full((3, 8, 8), 7, np.uint16)
    payload = encode_block(const)
    assert len(payload) < 150
    assert _bit_equal(decode_block(payload, const.dtype, const.shape), const)


@pytest.mark.parametrize("shape", [(1, 60, 64), (5, 256, 256)], ids=["small", "sampled"])
def test_stretched_histogram_codes_table_indices(shape: tuple[int, ...]) -> None:
    """A contrast-stretched image uses every other value: its block is measured as table
    indices too (dense enough that the density rule alone would not use a table)."""
    from napari_sciz.core.lossless.describe import describe_block
    from napari_sciz.core.lossless.layout import _HEAD2

    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(*(np.linspace(0, 3, n) for n in shape), indexing="ij")
    smooth = 40 + 30 * np.sin(y + z) * np.cos(x) + rng.normal(0, 1.5, shape)
    block = (2 * np.clip(np.rint(smooth), 0, 127)).astype(np.uint8)  # even values only
    payload = encode_block(block)
    assert describe_block(payload)["coding"] == "coded"
    assert _HEAD2.unpack_from(payload)[11] > 0  # the value table is used
    halved = encode_block((block // 2).astype(np.uint8))  # the same image without the gaps
    assert len(payload) < 1.05 * len(halved) + 200
    assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


def test_effort_best_measures_predictor_sets_by_coding() -> None:
    """On scikit-image's text.png (an image no design used) the estimate ranks a predictor
    set first that codes 1.8 % larger than the second: effort="best" codes the closest
    three and keeps the smallest; the default is unchanged and both decode exactly."""
    skdata = pytest.importorskip("skimage.data")
    from napari_sciz import compress, decompress

    text = skdata.text()
    plain = compress(text, mode="lossless")
    best = compress(text, mode="lossless", effort="best")
    assert best.nbytes < plain.nbytes
    np.testing.assert_array_equal(decompress(best.data), text)
    np.testing.assert_array_equal(decompress(plain.data), text)


def test_sample_box_is_inside_the_block() -> None:
    from napari_sciz.core.lossless.raster import sample_box

    zs, ys = sample_box((40, 64, 64), 10_000)
    assert (zs.stop - zs.start, ys.stop - ys.start) == (2, 64)
    zs, ys = sample_box((3, 2048, 2048), 1 << 18)
    assert (zs.start, zs.stop) == (1, 2) and ys.stop - ys.start == 128 and ys.start == 960


@pytest.mark.parametrize(
    "shape", [(70, 90), (8, 30, 40), (2, 3, 10, 12, 14)], ids=["2d", "3d", "5d"]
)
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_api_lossless_multi_block(shape: tuple[int, ...], dtype: str) -> None:
    data = _smooth(shape, dtype, seed=len(shape))
    result = api.compress(data, mode="lossless", block_voxels=4096)
    assert result.header["mode"] == "lossless"
    assert result.header["blocks"]["count"] > 1
    assert _bit_equal(result.reconstruction, data)
    assert _bit_equal(api.decompress(result.data), data)
    assert result.max_error == 0


def test_api_4d() -> None:
    data = _smooth((2, 5, 16, 18), "int16")
    result = api.compress(data, mode="lossless", block_voxels=700)
    assert _bit_equal(api.decompress(result.data), data)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("bound", [1, 2, 7, 40.5])
def test_bounded_integers(dtype: str, bound: float) -> None:
    data = _smooth((5, 21, 17), dtype, seed=4)
    data.flat[:2] = [np.iinfo(dtype).max, np.iinfo(dtype).min]
    result = api.compress(data, mode="bounded", max_error=bound, block_voxels=1000)
    out = api.decompress(result.data)
    err = np.abs(out.astype(np.float64) - data.astype(np.float64)).max()
    assert err <= bound
    assert result.header["max_error"] == bound
    assert result.nbytes < api.compress(data, mode="lossless", block_voxels=1000).nbytes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bound", [1e-3, 0.5, 10.0])
def test_bounded_floats(dtype: str, bound: float) -> None:
    data = _smooth((4, 18, 20), dtype, seed=5)
    out = api.decompress(api.compress(data, mode="bounded", max_error=bound).data)
    assert out.dtype == data.dtype
    assert np.abs(out.astype(np.float64) - data.astype(np.float64)).max() <= bound


@pytest.mark.parametrize("dtype", [">u2", ">i4", ">f4", ">f2"])
def test_big_endian_input_round_trips(dtype: str) -> None:
    """Big-endian arrays (TIFF, zarr or memory-mapped data from another machine) decode to
    the same values in native order; a block handed to the block coder in big-endian order
    (a Dask worker's read) verifies too."""
    from napari_sciz.core.lossless import code_verified

    data = _smooth((4, 18, 20), dtype.replace(">", "<"), seed=3).astype(dtype)
    out = api.decompress(api.compress(data, mode="lossless").data)
    assert out.dtype.isnative and np.array_equal(out, data)
    out = api.decompress(api.compress(data, mode="bounded", max_error=2).data)
    assert np.abs(out.astype(np.float64) - data.astype(np.float64)).max() <= 2
    payload, decoded = code_verified(data, "lossless", None)
    assert np.array_equal(decode_block(payload, data.dtype, data.shape), data)
    assert np.array_equal(decoded, data)


def test_blocks_checksummed_over_big_endian_bytes_still_decode(monkeypatch) -> None:
    """Before 2026-12-05 a big-endian input's blocks were checksummed over its big-endian
    bytes (their values were right): such blocks decode; a wrong checksum is still refused."""
    from napari_sciz.core.lossless import interpblock, raster

    def big(arr: np.ndarray) -> np.ndarray:
        return (
            np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).reshape(-1).view(np.uint8)
        )

    data = _smooth((4, 18, 20), "uint16", seed=4)
    monkeypatch.setattr(raster, "le_bytes", big)
    monkeypatch.setattr(interpblock, "le_bytes", big)
    coded = encode_block(data, "lossless")
    interp = interpblock.encode(data, 3)
    monkeypatch.undo()
    assert np.array_equal(decode_block(coded, data.dtype, data.shape), data)
    out = interpblock.decode(interp, data.dtype, data.shape)
    assert np.abs(out.astype(np.int64) - data).max() <= 3
    damaged = bytearray(coded)
    damaged[18] ^= 1  # the block's CRC-32 (format.md: after the magic, flags and D, H, W)
    with pytest.raises(FormatError, match="checksum"):
        decode_block(bytes(damaged), data.dtype, data.shape)


def test_bounded_floats_at_the_ends_of_the_range() -> None:
    """A float32 stack whose values all lie within E of each other (SPERR writes an empty
    chunk for it, which the reader refuses: that candidate is dropped), and one whose range
    is too wide for a grid of step 2E (coded exactly, which is within any bound); float64,
    which has no exact code, is told the smallest bound that works."""
    wave = np.sin(np.indices((4, 32, 32)).sum(0) / 5.0)
    for scale in (1e-30, 1e30):
        data = (wave * scale).astype(np.float32)
        out = api.decompress(api.compress(data, mode="bounded", max_error=2).data)
        assert np.abs(out.astype(np.float64) - data.astype(np.float64)).max() <= 2
    assert np.array_equal(out, data)
    with pytest.raises(InvalidInputError, match="use at least"):
        api.compress(wave * 1e30, mode="bounded", max_error=2)


def _gradient_volume(dtype: str) -> np.ndarray:
    """A smooth stack with mild noise: at a bound of 16, SPERR's wavelets code it in far
    fewer bytes than the predictive coder's grid of step 33."""
    z, y, x = np.mgrid[:6, :64, :64]
    rng = np.random.default_rng(11)
    v = 3000 + 900 * np.sin(x / 9.0 + z / 4.0) * np.cos(y / 13.0) + rng.normal(0, 3, z.shape)
    return v.astype(dtype)


def _coded_within_16(data: np.ndarray, version: int, coding: str) -> api.CompressResult:
    """``data`` in bounded mode at E = 16: the header's model version, the bound, the dtype,
    and what ``sciz info`` says of its first block (it starts with ``coding``)."""
    from napari_sciz.core.lossless import describe

    result = api.compress(data, mode="bounded", max_error=16)
    assert result.header["model"] == {"type": "causal-predictor", "version": version}
    out = api.decompress(result.data)
    assert out.dtype == data.dtype
    assert np.abs(out.astype(np.float64) - data.astype(np.float64)).max() <= 16
    with container.SciZFile(result.data) as f:
        payload = f.payload(0)
    assert describe.predictor_text(describe.describe_block(payload)).startswith(coding)
    return result


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_bounded_blocks_may_be_coded_by_sperr(monkeypatch, dtype: str) -> None:
    """At a large bound the block is coded by SPERR's point-wise error mode when that is
    smaller; the bound holds, the header says model version 2, ``sciz info`` names it."""
    from napari_sciz.core.lossless import interpblock, sperrblock, szblock

    for later in (szblock, interpblock):  # (the next tests)
        monkeypatch.setattr(later, "encode", lambda block, bound: None)
    data = _gradient_volume(dtype)
    result = _coded_within_16(data, 2, "SPERR (point-wise error)")
    monkeypatch.setattr(sperrblock, "encode", lambda block, bound: None)
    grid_only = api.compress(data, mode="bounded", max_error=16)
    assert grid_only.header["model"]["version"] == 1
    assert result.nbytes < 0.7 * grid_only.nbytes


def test_sperr_block_damage_is_a_format_error() -> None:
    from napari_sciz.core.lossless import sperrblock

    block = _gradient_volume("uint16")
    payload = sperrblock.encode(block, 16)
    assert payload is not None
    np.testing.assert_array_equal(decode_block(payload, block.dtype, block.shape),
                                  sperrblock.decode(payload, block.dtype, block.shape))  # fmt: skip
    for bad in (payload[:20], payload[:3] + b"\x09" + payload[4:]):
        with pytest.raises(FormatError):
            decode_block(bad, block.dtype, block.shape)
    with pytest.raises(FormatError):  # the stream declares another block size
        decode_block(payload, block.dtype, (6, 64, 32))
    assert sperrblock.encode(np.full((2, 8, 8), 7, np.uint16), 4) is None  # flat: no SPERR
    assert sperrblock.encode(block[:, :3], 16) is None  # too thin for SPERR


def _ramp_volume(dtype: str) -> np.ndarray:
    """A noisy ramp: at a bound of 16, in-loop quantization (SZ3's, or its interpolation in our
    entropy coder) codes it in fewer bytes than SPERR's wavelets and the predictive grid."""
    z, y, x = np.mgrid[:8, :64, :64]
    rng = np.random.default_rng(3)
    return (2000 + 20 * x + 10 * y + rng.normal(0, 6, z.shape)).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64"])
def test_bounded_blocks_may_be_coded_by_sz3(monkeypatch, dtype: str) -> None:
    """Where SZ3 codes a block in fewer bytes at a large bound, the block is coded (in a
    helper process) by SZ3, the bound holds, the header says model version 3, ``sciz info``
    names it; without SZ3 the file is the SPERR one."""
    from napari_sciz.core.lossless import interpblock, szblock

    monkeypatch.setattr(interpblock, "encode", lambda block, bound: None)  # (the next test)
    data = _ramp_volume(dtype)
    result = _coded_within_16(data, 3, "SZ3 (absolute error)")
    monkeypatch.setattr(szblock, "encode", lambda block, bound: None)
    without = api.compress(data, mode="bounded", max_error=16)
    assert without.header["model"]["version"] == 2
    assert result.nbytes < without.nbytes


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint32", "int32", "float32", "float64"])
def test_bounded_blocks_may_be_coded_by_interpolation(monkeypatch, dtype: str) -> None:
    """SZ3's interpolation predictor with in-loop quantization, coded by our entropy coder,
    codes the ramp smaller than SZ3 itself: the block says so (model version 4, or 5 for
    floats, put on a fine integer grid first), the bound holds, and without it the file is
    the SZ3 one."""
    from napari_sciz.core.lossless import interpblock

    data = _ramp_volume(dtype)
    result = _coded_within_16(data, 5 if data.dtype.kind == "f" else 4, "interpolation")
    monkeypatch.setattr(interpblock, "encode", lambda block, bound: None)
    without = api.compress(data, mode="bounded", max_error=16)
    assert without.header["model"]["version"] < 4
    assert result.nbytes < without.nbytes


@pytest.mark.parametrize("shape", [(1, 37, 53), (5, 21, 17), (9, 1, 33), (2, 2, 2), (1, 1, 40)])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_interpolation_blocks_hold_any_bound_on_any_shape(shape, dtype: str) -> None:
    from napari_sciz.core.lossless import interpblock

    data = _smooth(shape, dtype, seed=6)
    data.flat[0], data.flat[-1] = np.iinfo(dtype).max, np.iinfo(dtype).min
    for bound in (1, 2, 40.5):
        payload = interpblock.encode(data, bound)
        assert payload is not None
        out = interpblock.decode(payload, data.dtype, data.shape)
        assert np.abs(out.astype(np.float64) - data.astype(np.float64)).max() <= bound
    for bound in (0.25, 4, 1000.0):  # floats: on a fine grid, the bound checked after the cast
        floats = data.astype(np.float32) / 7
        payload = interpblock.encode(floats, bound)
        assert payload is not None and interpblock.is_interp_v2_block(payload)
        out = interpblock.decode(payload, floats.dtype, floats.shape)
        assert np.abs(out.astype(np.float64) - floats.astype(np.float64)).max() <= bound
    assert interpblock.encode(data, 0.5) is None  # below 1: lossless
    assert interpblock.encode(np.full((2, 3, 4), 1.5, np.float32), 4) is None  # flat


def test_interpolation_index_contexts_are_kept_where_smaller(monkeypatch) -> None:
    """Contexts split by the neighbours' quantization indices (payload version 2, flag 2) are
    kept when they code the block smaller; the decode holds the bound; a flag this reader does
    not know is refused."""
    from napari_sciz.core.lossless import interpblock

    z, y, x = np.mgrid[:8, :96, :96]
    rng = np.random.default_rng(3)
    data = (2000 + 60 * x + 10 * y + rng.normal(0, 6, z.shape)).astype(np.uint16)
    payload = interpblock.encode(data, 16)
    assert interpblock.is_interp_v2_block(payload)
    flags_at = interpblock._HEAD.size
    assert payload[flags_at] == 2
    out = interpblock.decode(payload, data.dtype, data.shape)
    assert np.abs(out.astype(np.int64) - data).max() <= 16
    from napari_sciz.core.lossless import describe

    text = describe.predictor_text(describe.describe_block(payload))
    assert text == "interpolation, in-loop quantization, index contexts"  # (sciz info)
    plain = interpblock._body(data.astype(np.int64) - int(data.min()), 16, False)[0]
    assert len(payload) < len(plain) + flags_at  # (the same header, less its flags byte)
    unknown = bytearray(payload)
    unknown[flags_at] |= 4
    with pytest.raises(FormatError, match="flags"):
        interpblock.decode(bytes(unknown), data.dtype, data.shape)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_interpolation_block_damage_is_a_format_error(dtype: str) -> None:
    """Sizes are checked before use and the decoded block against its stored CRC-32: a
    damaged payload is a FormatError or, where the damage is in unused bits, the block."""
    from napari_sciz.core.lossless import interpblock

    block = _ramp_volume(dtype)
    payload = interpblock.encode(block, 16)
    assert payload is not None and interpblock.is_interp_block(payload)
    good = interpblock.decode(payload, block.dtype, block.shape)
    with pytest.raises(FormatError, match="shape"):
        interpblock.decode(payload, block.dtype, (8, 64, 128))
    with pytest.raises(FormatError, match="dtype"):  # an integer block in a float file, or back
        interpblock.decode(payload, np.dtype("int16" if block.dtype.kind == "f" else "f4"),
                           block.shape)  # fmt: skip
    rng = np.random.default_rng(8)
    refused = 0
    for _ in range(150):
        bad = bytearray(payload)
        for i in rng.integers(3, len(bad), size=int(rng.integers(1, 4))):
            bad[i] = int(rng.integers(256))
        if rng.random() < 0.3:
            bad = bad[: int(rng.integers(3, len(bad)))]
        try:
            out = decode_block(bytes(bad), block.dtype, block.shape)
        except FormatError:
            refused += 1
            continue
        np.testing.assert_array_equal(out, good)
    assert refused > 100


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_sz3_block_damage_is_a_format_error_never_a_crash() -> None:
    """SZ3's decoder aborts, segfaults or loops on damaged streams: here it runs in a helper
    process, so every damaged payload is a FormatError or a decode of the block's size (never
    NaN cast to integers)."""
    from napari_sciz.core.lossless import szblock

    block = _ramp_volume("uint16")
    payload = szblock.encode(block, 16)
    assert payload is not None and szblock.is_sz3_block(payload)
    np.testing.assert_array_equal(decode_block(payload, block.dtype, block.shape),
                                  szblock.decode(payload, block.dtype, block.shape))  # fmt: skip
    for bad in (payload[:3] + b"\x09" + payload[4:], payload[:4] + b"\x07" + payload[5:]):
        with pytest.raises(FormatError, match="version|coded type"):
            decode_block(bad, block.dtype, block.shape)
    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(60):
        bad = bytearray(payload)
        for i in rng.integers(5, len(bad), size=3):
            bad[i] = int(rng.integers(256))
        if rng.random() < 0.3:
            bad = bad[: int(rng.integers(5, len(bad)))]
        try:
            out = decode_block(bytes(bad), block.dtype, block.shape)
            assert out.shape == block.shape and out.dtype == block.dtype
            outcomes.add("decoded")
        except FormatError:
            outcomes.add("refused")
    assert "refused" in outcomes
    assert szblock.encode(np.full((2, 8, 8), 7, np.uint16), 4) is None  # flat: no SZ3
    assert szblock.encode(block, 0.5) is None  # integers below a bound of 1: lossless


def test_helper_limits_its_memory_and_time() -> None:
    """A job past its memory fails in the helper (or ends it: SZ3 aborts), one past its time
    ends it; either way the caller goes on with a fresh helper."""
    from napari_sciz.core import helperproc

    with pytest.raises(helperproc.JobFailed):  # (a function that is not a job)
        helperproc.call("numpy:frombuffer", {}, b"")
    with pytest.raises((helperproc.JobFailed, helperproc.HelperDied)):
        helperproc.call(
            "napari_sciz.core.lossless.szblock:decode_job",
            {"shape": [1 << 14, 1 << 14], "dtype": "<f8"}, b"\x00" * 64, memory=64 << 20,
        )  # fmt: skip
    wait = "napari_sciz.core.helperproc:wait_job"
    assert helperproc.call(wait, {"seconds": 0.01}, b"back", timeout=5) == b"back"
    with pytest.raises(helperproc.HelperDied, match="did not answer"):
        helperproc.call(wait, {"seconds": 30}, b"", timeout=0.5)
    with pytest.raises(helperproc.HelperUnavailable):
        helperproc.call("napari_sciz.no_such_module:job", {}, b"")
    # a helper that ended while idle (killed from outside) is not handed out again
    assert helperproc.call(wait, {"seconds": 0}, b"x") == b"x"
    with helperproc._idle_lock:
        for helper in helperproc._idle:
            helper.proc.kill()
            helper.proc.wait()
    assert helperproc.call(wait, {"seconds": 0}, b"y") == b"y"


def test_bounded_zero_is_lossless() -> None:
    data = _smooth((3, 10, 12), "uint8")
    out = api.decompress(api.compress(data, mode="bounded", max_error=0).data)
    assert _bit_equal(out, data)


def test_roi_decode_equals_crop() -> None:
    data = _smooth((2, 12, 30, 26), "uint16", seed=6)
    blob = api.compress(data, mode="lossless", block_voxels=1200).data
    with api.open_sciz(blob) as reader:
        assert reader.mode == "lossless"
        assert _bit_equal(reader.decode("1:2,3:11,5:29,0:7"), data[1:2, 3:11, 5:29, 0:7])
        assert _bit_equal(reader[0, 5], data[0, 5])
        assert _bit_equal(reader[:, 2:9:2, 7], data[:, 2:9:2, 7])
        # scale: linear interpolation of the exact voxels, exact at integer positions
        fine = reader.decode("1:2,3:11,5:29,0:7", scale=3)
        assert fine.shape == (1, 24, 72, 21) and fine.dtype == data.dtype
        assert _bit_equal(fine[:, 1::3, 1::3, 1::3], data[1:2, 3:11, 5:29, 0:7])
        half = reader.decode("1:2,4:6,:,:", scale=(2, 1, 1))[0]
        mean = (data[1, 4].astype(np.float64) * 0.75 + data[1, 5] * 0.25).round()
        np.testing.assert_array_equal(half[1], mean.astype(np.uint16))  # z = 4.25


def test_corrupted_payload_raises() -> None:
    block = _smooth((4, 16, 16), "uint16")
    payload = bytearray(encode_block(block))
    for pos in (len(payload) - 5, len(payload) // 2, 40):
        bad = bytearray(payload)
        bad[pos] ^= 0x5A
        with pytest.raises(FormatError):
            decode_block(bytes(bad), block.dtype, block.shape)
    with pytest.raises(FormatError):
        decode_block(bytes(payload[:-4]), block.dtype, block.shape)
    with pytest.raises(FormatError):
        decode_block(bytes(payload), block.dtype, (4, 16, 15))


def test_corrupted_file_raises() -> None:
    data = _smooth((3, 20, 20), "uint16")
    blob = api.compress(data, mode="lossless").data
    with container.SciZFile(blob) as f:
        header, payload = f.header, f.payload(0)
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0xFF
    tampered = container.pack(header, [bytes(bad)])  # valid container, bad block
    with pytest.raises(FormatError):
        api.decompress(tampered)


def test_invalid_arguments() -> None:
    data = _smooth((3, 8, 8), "uint16")
    with pytest.raises(InvalidInputError):
        api.compress(data, mode="bounded")
    with pytest.raises(InvalidInputError):
        api.compress(data, mode="lossless", max_error=1)
    with pytest.raises(InvalidInputError):
        api.compress(data, mode="bounded", max_error=-1)
    with pytest.raises(InvalidInputError):
        api.compress(data, mode="nearly")
    with pytest.raises(InvalidInputError):
        api.compress(data)  # lossy needs a ratio
    with pytest.raises(InvalidInputError, match="mode='bounded'"):  # and what to do instead
        api.compress(data.astype(np.float64), mode="lossless")


@pytest.mark.parametrize(
    "name",
    [
        "nbsd_cells3d_nuclei.tif",
        "flowdec_bead_25pct.tif",
        "neuroproof_fib25_crop128.tif",
        "philips_ct_phantom_crop.tif",
        "bia_membrane_2d_timelapse.tif",
    ],
)
def test_real_data_crops(name: str) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    import tifffile

    data = np.asarray(tifffile.imread(path))
    crop = data[tuple(slice(0, min(n, 8 if i == 0 else 64)) for i, n in enumerate(data.shape))]
    crop = np.ascontiguousarray(crop)
    result = api.compress(crop, mode="lossless", block_voxels=8192)
    assert _bit_equal(api.decompress(result.data), crop)
    assert result.ratio > 1.0
    if crop.dtype.kind in "ui":
        bounded = api.compress(crop, mode="bounded", max_error=3)
        out = api.decompress(bounded.data).astype(np.int64)
        assert np.abs(out - crop.astype(np.int64)).max() <= 3


def test_cli_round_trip(tmp_path: Path) -> None:
    import tifffile

    from napari_sciz.cli import main

    data = _smooth((4, 24, 20), "uint16")
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, data)
    out = tmp_path / "out.sciz"
    assert main(["compress", str(src), "-o", str(out), "--mode", "lossless", "--json"]) == 0
    back = tmp_path / "back.tif"
    assert main(["decompress", str(out), "-o", str(back)]) == 0
    assert _bit_equal(np.asarray(tifffile.imread(back)), data)
    bounded = tmp_path / "b.sciz"
    argv = ["compress", str(src), "-o", str(bounded), "--mode", "bounded", "--max-error", "5"]
    assert main(argv) == 0
    with api.open_sciz(bounded) as reader:
        assert reader.header["mode"] == "bounded"
        assert np.abs(reader.decode().astype(int) - data.astype(int)).max() <= 5
    assert main(["info", str(bounded)]) == 0
    # --ratio is needed in lossy mode only; --max-error in bounded mode only
    assert main(["compress", str(src), "-o", str(tmp_path / "c.sciz")]) == 1
    assert main(["compress", str(src), "-o", str(tmp_path / "d.sciz"), "--mode", "bounded"]) == 1


def test_bench_lossless_entries() -> None:
    from napari_sciz.bench.lossless import bounded_entries, ours_lossless, render_markdown

    vol = _smooth((3, 16, 16), "uint16")
    ours = ours_lossless(vol)
    assert ours["exact"] and ours["ratio"] > 0
    bounded = bounded_entries(vol, 2.0)
    assert bounded[0]["codec"] == "napari-sciz bounded" and bounded[0]["max_error"] <= 2
    record = {
        "command": "x",
        "machine": "cpu",
        "date": "today",
        "volumes": [
            {
                "name": "v",
                "shape": [3, 16, 16],
                "dtype": "uint16",
                "raw_nbytes": vol.nbytes,
                "lossless": [ours],
                "bounded": {"2": bounded},
            }
        ],
    }
    text = render_markdown(record)
    assert "napari-sciz lossless" in text and "Error-bounded" in text
    assert sum(ours["predictors"].values()) == 1 and "Which predictor won" in text
    assert f"| v | {next(iter(ours['predictors']))} |" in text


def test_describe_every_stored_version() -> None:
    """What the encoder chose is readable from any payload version (sciz info, benchmarks)."""
    from napari_sciz.core.lossless.describe import describe_block, predictor_text, summarize

    seen = []
    for version in range(1, 8):
        saved = np.load(STORED / f"lossless_v{version}_blocks.npz")
        for key in (k for k in saved.files if k.endswith("_payload")):
            d = describe_block(saved[key].tobytes())
            assert d["coding"] == "coded" and d["version"] == version and d["predictors"]
            if version >= 4:
                assert 1 <= d["lanes"] and d["lane_axis"] in ("slabs", "bands")
            assert ("sparse_contexts" in d) == (version >= 7)
            seen.append(d)
    assert any(d.get("sparse_contexts") and d["lanes"] > 1 for d in seen)
    texts = summarize(seen)
    assert sum(texts.values()) == len(seen)
    assert any("wide LS (intensity)" in t for t in texts) and any(
        "wide LS (gradient)" in t for t in texts
    )
    stored = encode_block(np.random.default_rng(0).integers(0, 65535, (2, 8, 8), np.uint16))
    assert predictor_text(describe_block(stored)) == "stored (incompressible)"
    with pytest.raises(FormatError):
        describe_block(b"nonsense")
    mapped = {"coding": "coded", "predictors": ["MED"], "map": {1: "LS", 3: "LS", 4: "LS"}}
    assert predictor_text(mapped) == "MED; gradient levels 1, 3, 4: LS"


STORED = Path(__file__).parent / "data"


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6, 7])
def test_older_payloads_still_decode(version: int) -> None:
    """Blocks written by the version-1 (row-wise), version-2 (wavefront, one model per
    symbol), version-3 (wavefront, class runs), version-4 (lanes, predictor map; one block
    with two lanes), version-5 (context trees), version-6 (wide least squares; in lanes
    too) and version-7 (lane-major symbols, sparse contexts; in lanes too) coders decode bit
    for bit."""
    saved = np.load(STORED / f"lossless_v{version}_blocks.npz")
    names = [k[: -len("_payload")] for k in saved.files if k.endswith("_payload")]
    assert len(names) >= 6
    for name in names:
        payload = saved[name + "_payload"].tobytes()
        expected = saved[name + "_data"]
        assert payload[:4] == b"SZL" + bytes([version])
        out = decode_block(payload, expected.dtype, expected.shape)
        assert _bit_equal(out, expected), name
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0x33
        with pytest.raises(FormatError):
            decode_block(bytes(bad), expected.dtype, expected.shape)


def test_new_payloads_are_version_7() -> None:
    block = _smooth((3, 20, 24), "uint16") // 64
    payload = encode_block(block)
    assert payload[:4] == b"SZL\x07"
    assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


@pytest.mark.parametrize(
    "mask",
    [0b010000, 0b111111, 0b011111, 0b010100, 0b110011, 0b000001, 0b000100]
    + [0b10000000, 0b11010000, 0b11111111],  # with the wide least squares (version 6)
)
@pytest.mark.parametrize("dtype", INT_DTYPES + ["float32"])
def test_every_sub_predictor_set_round_trips(
    monkeypatch: pytest.MonkeyPatch, mask: int, dtype: str
) -> None:
    from napari_sciz.core.lossless import labelblock, raster, resampled, tokens

    monkeypatch.setattr(tokens, "_MASKS", (mask,))
    monkeypatch.setattr(raster, "_XLS_MIN_VOXELS", 1)
    # (a posterized block of 16 values codes smaller as labels, a smooth posterized 8-bit one
    # as a resampled block: the predictor is tested here)
    monkeypatch.setattr(labelblock, "looks_like_labels", lambda block: False)
    monkeypatch.setattr(resampled, "interpolated_axes", lambda block: ((), ()))
    # (the wide least squares' 928 bytes of weights need a block that codes larger)
    block = _smooth((3, 13, 17) if mask < 128 else (4, 40, 48), dtype, seed=mask)
    # compressible, so that the block is coded (not stored)
    block = (block // 16 if block.dtype.kind in "ui" else np.round(block)).astype(dtype)
    payload = encode_block(block)
    assert payload[:4] == b"SZL\x07"
    assert payload[_V2_MASK_OFFSET] == mask
    assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


#: offset of the sub-predictor mask byte in a version-2/3 payload
_V2_MASK_OFFSET = 52


@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (1, 1, 9), (1, 7, 1), (6, 1, 1), (2, 2, 2), (3, 5, 1), (2, 3, 70)]
)
def test_thin_blocks_round_trip(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for block in (
        rng.integers(0, 9, shape).astype(np.uint16),
        np.full(shape, 40000, np.uint16),
        rng.normal(0, 1, shape).astype(np.float32),
    ):
        out = decode_block(encode_block(block), block.dtype, block.shape)
        assert _bit_equal(out, block)


def test_exact_background_and_large_jumps() -> None:
    """CT-like: an exact constant background, a smooth body, jumps of the full 16-bit range."""
    z, y, x = np.meshgrid(np.arange(4), np.arange(40), np.arange(48), indexing="ij")
    body = (x - 24) ** 2 + (y - 20) ** 2 < 15**2
    block = np.where(body, 1000 + 3 * x + 2 * y + z, 0).astype(np.uint16)
    block[1, 5, 5] = 65535
    block[2, 30, 40] = 65534
    payload = encode_block(block)
    assert len(payload) < block.nbytes / 10
    assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


def test_large_residuals_round_trip() -> None:
    """Residuals of up to 32 bits (raw bits of the hybrid code) in coded, not stored, blocks."""
    z, y, x = np.meshgrid(np.arange(3), np.arange(24), np.arange(28), indexing="ij")
    smooth = np.sin(x / 5.0) * np.cos(y / 7.0) + z / 3.0
    u32 = ((smooth + 2) / 4 * (2**32 - 1)).astype(np.uint32)
    u32[1, 3, 4], u32[2, 10, 11] = 0, 2**32 - 1  # jumps of the whole range
    f32 = (smooth * 1e30).astype(np.float32)
    f32[0, 0, :4] = [-0.0, 1e-45, -3e38, 3e38]
    for block in (u32, f32):
        payload = encode_block(block)
        assert payload[:4] == b"SZL\x07"
        assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


def test_corruption_never_returns_wrong_data() -> None:
    z, y, x = np.meshgrid(np.arange(3), np.arange(30), np.arange(34), indexing="ij")
    block = (1000 + 40 * np.sin(x / 4.0) + 30 * np.cos(y / 5.0) + 7 * z).astype(np.uint16)
    block[:, 10:14, 5:20] = 0
    payload = encode_block(block)
    assert payload[:4] == b"SZL\x07"
    rng = np.random.default_rng(5)
    positions = sorted({*range(0, 90, 3), *rng.integers(90, len(payload), 60).tolist()})
    _flips_never_decode_wrong(payload, block, positions, rng)


def _flips_never_decode_wrong(
    payload: bytes, block: np.ndarray, positions: list[int], rng: np.random.Generator
) -> None:
    """Each position's flipped bit gives a FormatError or the right block (an unused bit)."""
    for pos in positions:
        bad = bytearray(payload)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            out = decode_block(bytes(bad), block.dtype, block.shape)
        except FormatError:
            continue
        assert _bit_equal(out, block), pos


#: offset of the lane count and axis in a version-4 payload (after the 78-byte header and two u32)
_V4_LANES_OFFSET = 78 + 8


def _force_lanes(monkeypatch: pytest.MonkeyPatch, axis: int, lanes: int = 4) -> None:
    from napari_sciz.core.lossless import raster

    monkeypatch.setattr(raster, "_LANE_VOXELS", 100)
    monkeypatch.setattr(raster, "_MIN_LANE_ROWS", 4)
    monkeypatch.setattr(
        raster,
        "plan_lanes",
        lambda v, *_: (min(lanes, raster.max_lanes(v.shape, axis)), axis),
    )


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", ["uint16", "float32", "uint8"])
def test_lanes_round_trip(monkeypatch: pytest.MonkeyPatch, dtype: str, axis: int) -> None:
    """Blocks cut into lanes (slabs of slices or bands of rows, decoded on threads) decode bit
    for bit with every sub-predictor set: lane borders use the in-block fallbacks."""
    from napari_sciz.core.lossless import raster, resampled, tokens

    _force_lanes(monkeypatch, axis)
    monkeypatch.setattr(raster, "_XLS_MIN_VOXELS", 1)
    # (a smooth posterized 8-bit block codes smaller as a resampled block: lanes tested here)
    monkeypatch.setattr(resampled, "interpolated_axes", lambda block: ((), ()))
    block = _smooth((5, 23, 31), dtype, seed=3)
    block = (block // 8 if block.dtype.kind in "ui" else np.round(block)).astype(dtype)
    for mask in (0b1111111, 0b0010000, 0b1000100, 0b10000000, 0b11000100):
        monkeypatch.setattr(tokens, "_MASKS", (mask,))
        payload = encode_block(block)
        assert payload[:4] == b"SZL\x07"
        assert payload[_V4_LANES_OFFSET : _V4_LANES_OFFSET + 2] == bytes([4, axis])
        assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


def test_lanes_are_chosen_by_cost() -> None:
    """A large block gets lanes; a 2x512x512 CT-like block (slices that predict each other
    poorly) is cut between its slices, not across its rows."""
    from napari_sciz.core.lossless import raster

    rng = np.random.default_rng(4)
    y, x = np.mgrid[:512, :512]
    body = ((x - 256) ** 2 + (y - 256) ** 2 < 200**2).astype(np.int64)
    ct = np.stack([body * (1000 + rng.normal(0, 6, body.shape)) for _ in range(2)])
    ct = ct.astype(np.uint16)
    mask = 0b1000100
    lanes, axis = raster.plan_lanes(ct.astype(np.int64), mask)
    assert (lanes, axis) == (2, raster.AXIS_Z)
    payload = encode_block(ct)
    assert payload[_V4_LANES_OFFSET] >= 2
    assert _bit_equal(decode_block(payload, ct.dtype, ct.shape), ct)


def test_lane_corruption_never_returns_wrong_data(monkeypatch: pytest.MonkeyPatch) -> None:
    _force_lanes(monkeypatch, 1, lanes=2)
    block = _smooth((2, 20, 30), "uint16", seed=9) // 16
    payload = encode_block(block)
    assert payload[_V4_LANES_OFFSET] == 2
    rng = np.random.default_rng(2)
    # the extension (count lengths, lanes, axis, the lane's bit position), then random bytes
    positions = [*range(78, _V4_LANES_OFFSET + 2 + 8)]
    positions += rng.integers(90, len(payload), 40).tolist()
    _flips_never_decode_wrong(payload, block, positions, rng)


@pytest.mark.parametrize(
    ("mask", "pmap"),
    [
        (0b0010000, [0, 1, 2, 3, 4, 5, 6, 7]),  # least squares, then every sub-predictor
        (0b1000100, [3, 3, 7, 1, 2, 4, 6, 0]),  # a blend: its own first sub-predictor alone
        (0b1111111, [7, 6, 5, 4, 3, 2, 1, 0]),
        (0b11111111, [8, 6, 5, 4, 3, 2, 1, 0]),  # the wide least squares (version 6)
        (0b10010000, [0, 8, 5, 8, 0, 0, 7, 0]),
    ],
)
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_predictor_maps_round_trip(
    monkeypatch: pytest.MonkeyPatch, mask: int, pmap: list[int], dtype: str
) -> None:
    """Any predictor map (per gradient level: the blend or one sub-predictor) decodes bit
    for bit, in lanes too."""
    from napari_sciz.core.lossless import labelblock, raster, tokens

    monkeypatch.setattr(tokens, "_MASKS", (mask,))
    monkeypatch.setattr(raster, "_XLS_MIN_VOXELS", 1)
    # (a posterized block of 16 values codes smaller as labels: the predictor is tested here)
    monkeypatch.setattr(labelblock, "looks_like_labels", lambda block: False)
    monkeypatch.setattr(raster, "choose_map", lambda v, m, *_: np.array(pmap, np.int64))
    block = _smooth((4, 29, 33), dtype, seed=len(pmap) + mask)
    block = (block // 4 if block.dtype.kind in "ui" else np.round(block)).astype(dtype)
    for axis in (0, 1):
        _force_lanes(monkeypatch, axis, lanes=2)
        payload = encode_block(block)
        assert list(payload[_V4_LANES_OFFSET + 2 : _V4_LANES_OFFSET + 10]) == pmap
        assert _bit_equal(decode_block(payload, block.dtype, block.shape), block)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_smooth_data_keeps_the_blend() -> None:
    from napari_sciz.core.lossless.tokens import choose_map

    smooth = _smooth((2, 64, 64), "uint16").astype(np.int64)
    assert not np.any(choose_map(smooth - smooth.min(), 0b1000100)[:3])


@pytest.mark.skipif(not (DATA / "pydicom_eCT_2x512x512.tif").exists(), reason="no shared data")
def test_predictor_map_pays_on_ct(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the clinical CT slices the median edge detector alone beats the blend at strong
    gradients: the map takes it there and the block gets smaller."""
    import tifffile

    from napari_sciz.core.lossless import raster, resampled

    # (the slices were zoomed 2x: a resampled block codes them smaller, tested in
    # tests/test_resampled.py; the predictor map of the causal coder is tested here)
    monkeypatch.setattr(resampled, "interpolated_axes", lambda block: ((), ()))
    ct = tifffile.imread(DATA / "pydicom_eCT_2x512x512.tif")
    payload = encode_block(ct)
    pmap = list(payload[_V4_LANES_OFFSET + 2 : _V4_LANES_OFFSET + 10])
    assert any(pmap)
    monkeypatch.setattr(raster, "choose_map", lambda v, m, *_: np.zeros(8, np.int64))
    assert len(payload) < 0.995 * len(encode_block(ct))  # 0.8 % with context trees
    assert _bit_equal(decode_block(payload, ct.dtype, ct.shape), ct)


def test_info_names_the_predictors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from napari_sciz.cli import main

    data = _smooth((4, 24, 20), "uint16") // 8
    path = tmp_path / "a.sciz"
    api.compress(data, mode="lossless").save(path)
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sum(info["lossless_predictors"].values()) == 1
    assert main(["info", str(path)]) == 0
    assert "predictors" in capsys.readouterr().out


def test_blocks_coded_on_threads_match_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks are coded on threads: same file as one at a time, progress in block order,
    and a cancel stops the job (nothing returned)."""
    from napari_sciz.core import lossless
    from napari_sciz.errors import CancelledError

    data = _smooth((6, 40, 36), "uint16") // 8
    seen: list[tuple[int, int]] = []

    def progress(info: object) -> None:
        seen.append((info.block, info.n_blocks))  # type: ignore[attr-defined]

    threaded = api.compress(data, mode="lossless", block_voxels=2048, progress=progress)
    n = threaded.header["blocks"]["count"]
    assert n >= 4 and seen == [(i, n) for i in range(n)]
    monkeypatch.setattr(lossless, "_BLOCK_THREADS", 1)
    single = api.compress(data, mode="lossless", block_voxels=2048)
    assert bytes(threaded.data) == bytes(single.data)
    monkeypatch.setattr(lossless, "_BLOCK_THREADS", 4)
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(CancelledError):
        api.compress(data, mode="lossless", block_voxels=2048, cancel=cancel)


def test_a_boolean_mask_is_coded_exactly_and_only_so() -> None:
    mask = np.zeros((6, 40, 48), bool)
    mask[:, 8:30, 5:40] = True
    mask[2, 35, 44] = True
    for kwargs in ({}, {"ratio": 20}, {"mode": "lossless"}, {"mode": "bounded", "max_error": 0.5}):
        result = api.compress(mask, **kwargs)
        assert result.header["dtype"] == "bool" and result.header["value_range"] == [0, 1]
        assert result.header["mode"] == kwargs.get("mode", "lossless")
        decoded = api.open_sciz(result.data).decode()
        assert decoded.dtype == np.bool_ and np.array_equal(decoded, mask)
        assert result.ratio > 20
        said = any("boolean mask" in m for m in result.messages)
        assert said == ("ratio" in kwargs)
    for mode in ("lossy", "hybrid"):
        with pytest.raises(InvalidInputError, match="boolean mask"):
            api.compress(mask, ratio=20, mode=mode)


def voronoi_labels(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    """A dense label image: each voxel labelled by its nearest of ``n`` random seeds (cells
    touching each other), with label numbers that are not in raster order, and background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    seeds = rng.random((n, len(shape))) * np.array(shape)
    dist = ((grid[..., None, :] - seeds) ** 2).sum(axis=-1)
    labels = rng.permutation(np.arange(1, n + 1))[dist.argmin(axis=-1)] * 3 + 1000
    labels[dist.min(axis=-1) > 60] = 0
    return labels.astype(np.int32)


def test_label_images_are_coded_as_neighbour_copies(monkeypatch) -> None:
    """A segmentation is coded as which neighbour each voxel copies: much smaller than the
    intensity predictor codes it, exact, in lossless and bounded mode, any integer dtype."""
    from napari_sciz.core.lossless import describe, labelblock

    labels = voronoi_labels((6, 48, 56), 40)
    result = api.compress(labels, mode="lossless")
    assert result.header["model"]["version"] == 6
    assert np.array_equal(api.decompress(result.data), labels)
    assert np.array_equal(api.decompress(result.data, roi="2:4,10:30,5:9"), labels[2:4, 10:30, 5:9])
    with container.SciZFile(result.data) as f:
        payload = f.payload(0)
    assert labelblock.is_label_block(payload)
    assert describe.predictor_text(describe.describe_block(payload)) == "labels (neighbour copies)"
    for small in (labels % 250, labels.astype(np.uint16), labels > 0):
        small = np.ascontiguousarray(small.astype(np.uint8) if small.dtype == np.int32 else small)
        coded = api.compress(small, mode="lossless")
        decoded = api.decompress(coded.data)
        assert decoded.dtype == small.dtype and np.array_equal(decoded, small)
    bounded = api.compress(labels.astype(np.uint16), mode="bounded", max_error=2)
    assert np.array_equal(api.decompress(bounded.data), labels.astype(np.uint16))
    assert bounded.header["model"]["version"] == 6
    monkeypatch.setattr(labelblock, "looks_like_labels", lambda block: False)
    plain = api.compress(labels, mode="lossless")
    assert plain.header["model"]["version"] == 1
    assert len(plain.data) > 1.5 * len(result.data)


def test_an_image_is_not_taken_for_labels() -> None:
    from napari_sciz.core.lossless import labelblock

    rng = np.random.default_rng(1)
    noisy = (1000 + rng.normal(0, 20, (4, 32, 32))).astype(np.uint16)
    assert not labelblock.looks_like_labels(noisy)
    assert not labelblock.looks_like_labels(noisy.astype(np.float32))
    assert api.compress(noisy, mode="lossless").header["model"]["version"] == 1


def test_damaged_label_blocks_are_refused() -> None:
    """Every damaged label payload is a FormatError (or, with a valid CRC, the right block)."""
    from napari_sciz.core.lossless import labelblock

    labels = voronoi_labels((3, 40, 40), 25, seed=2)
    payload = labelblock.encode(labels)
    assert payload is not None
    assert np.array_equal(decode_block(payload, labels.dtype, labels.shape), labels)
    assert_damage_refused(
        payload,
        labels,
        mutations=120,
        cuts=(3, 10, len(payload) // 2, len(payload) - 3),
        wrong_shape=(3, 40, 41),
    )
