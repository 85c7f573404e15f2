"""Segmentation lock: coding the switched sides, moving the values, the file and its reader."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("skimage")

from _locks import with_lock  # noqa: E402
from _nuclei import nuclei  # noqa: E402

from napari_sciz.core.bitstream import container  # noqa: E402
from napari_sciz.core.seglock import apply_lock, crc, flags, lock_inputs  # noqa: E402
from napari_sciz.core.seglock.geometry import N_CONTEXTS, otsu, smooth  # noqa: E402
from napari_sciz.core.seglock.payload import LockPayload  # noqa: E402
from napari_sciz.core.seglock.project import lock_sides  # noqa: E402
from napari_sciz.core.seglock.select import build_lock  # noqa: E402
from napari_sciz.errors import FormatError  # noqa: E402

SIGMAS3 = (1.0, 1.0, 1.0)


def _nuclei(seed: int = 0, shape: tuple[int, int, int] = (12, 64, 64)) -> np.ndarray:
    """Touching ellipsoidal nuclei in noise (uint16)."""
    return nuclei(seed, shape, count=8, noise=150.0)


def _coarse(vol: np.ndarray) -> np.ndarray:
    """A crude stand-in for a high-ratio decode: blurred and coarsely quantized."""
    from scipy import ndimage as ndi

    blurred = ndi.gaussian_filter(vol.astype(float), 2.0)
    return (np.round(blurred / 300.0) * 300.0).clip(0, 65535).astype(vol.dtype)


def _segmentation(vol: np.ndarray):
    from napari_sciz.core.task.score import seed_distance, segment

    spacing = seed_distance(vol)
    return segment(vol, min_distance=spacing), spacing


def test_flags_round_trip_in_their_contexts() -> None:
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, N_CONTEXTS, (6, 20, 30)).astype(np.uint8)
    ctx[ctx == 5] = 6  # a context with no voxels
    switch = rng.random(ctx.shape) < np.where(ctx < 4, 0.3, 0.01)
    switch[ctx == 7] = True  # a context with every voxel flagged
    switch[ctx == 9] = False  # and one with none
    ones, words = flags.encode(switch, ctx)
    assert np.array_equal(flags.decode(ctx, ones, words), switch)
    assert 8 * len(words) < 1.1 * flags.estimate_bits(switch, ctx) + 64


def test_flags_refuse_a_damaged_stream() -> None:
    rng = np.random.default_rng(1)
    ctx = rng.integers(0, 4, (4, 16, 16)).astype(np.uint8)
    switch = rng.random(ctx.shape) < 0.2
    ones, words = flags.encode(switch, ctx)
    with pytest.raises(FormatError):
        flags.decode(ctx, ones, words[:-2])
    too_many = ones.copy()
    too_many[0] = ctx.size + 1
    with pytest.raises(FormatError):
        flags.decode(ctx, too_many, words)


def test_lock_sides_moves_the_flagged_voxels_across_the_threshold() -> None:
    yy, xx = np.indices((64, 64))
    original = 1000.0 * ((yy - 32) ** 2 + (xx - 32) ** 2 < 14**2)
    decoded = 1000.0 * ((yy - 32) ** 2 + (xx - 34) ** 2 < 13**2)  # shifted and smaller
    sigmas = (1.0, 1.0)
    threshold = 500.0
    side_o = smooth(original, sigmas) > threshold
    side_d = smooth(decoded, sigmas) > threshold
    switch = side_o != side_d
    assert switch.sum() > 50
    out = lock_sides(decoded, side_o, switch, threshold, 10.0, sigmas)
    after = smooth(out, sigmas)
    # (a fixed number of dual steps: the margin is approached, the side is reached)
    assert np.all((after > threshold + 3.0)[switch & side_o])
    assert np.all((after < threshold - 3.0)[switch & ~side_o])
    assert np.array_equal(after > threshold, side_o)
    assert out[0, 0] == decoded[0, 0]  # far from every flag: untouched
    # the least-squares change: smaller than replacing the decode by the original
    assert np.sum((out - decoded) ** 2) < np.sum((original - decoded) ** 2)


def test_a_built_lock_decodes_to_what_the_encoder_measured() -> None:
    from napari_sciz.core.task.score import segment, segmentation_fidelity

    vol = _nuclei(2)
    decoded = _coarse(vol)
    reference, spacing = _segmentation(vol)
    vrange = (0.0, 65535.0)
    lock = build_lock(vol, decoded, 600, SIGMAS3, reference, spacing, vrange)
    assert lock is not None and len(lock.payload) <= 600
    assert lock.switched > 0 and 0 < lock.groups <= lock.groups_total
    values, applied = apply_lock(decoded, lock.payload)
    from napari_sciz.core.blocks import finalize

    assert applied and np.array_equal(finalize(values, vol.dtype, vrange), lock.corrected)
    before = segmentation_fidelity(reference, segment(decoded, min_distance=spacing))
    after = segmentation_fidelity(reference, segment(lock.corrected, min_distance=spacing))
    assert after.dice > before.dice
    assert after.f1 >= before.f1


def test_a_lock_for_another_decode_is_not_applied() -> None:
    vol = _nuclei(3)
    decoded = _coarse(vol)
    reference, spacing = _segmentation(vol)
    lock = build_lock(vol, decoded, 400, SIGMAS3, reference, spacing, (0.0, 65535.0))
    assert lock is not None
    other = decoded.copy()
    other[decoded.shape[0] // 2] += 300  # a plane that decoded differently
    with pytest.warns(RuntimeWarning, match="not applied"):
        values, applied = apply_lock(other, lock.payload)
    assert not applied and np.array_equal(values, other)


def test_nothing_to_lock_when_the_decode_segments_alike() -> None:
    vol = _nuclei(4)
    reference, spacing = _segmentation(vol)
    assert build_lock(vol, vol, 400, SIGMAS3, reference, spacing, (0.0, 65535.0)) is None


def test_lock_payloads_are_checked() -> None:
    vol = _nuclei(5)
    decoded = _coarse(vol)
    reference, spacing = _segmentation(vol)
    payload = build_lock(vol, decoded, 400, SIGMAS3, reference, spacing, (0.0, 65535.0)).payload
    with pytest.raises(FormatError, match="truncated"):
        apply_lock(decoded, payload[:20])
    with pytest.raises(FormatError, match="magic"):
        apply_lock(decoded, b"XXX" + payload[3:])
    with pytest.raises(FormatError, match="newer"):
        apply_lock(decoded, payload[:3] + bytes([9]) + payload[4:])
    with pytest.raises(FormatError, match="does not fit"):
        apply_lock(decoded[0], payload)
    nan = bytearray(payload)
    struct.pack_into("<f", nan, 5, float("nan"))  # (the first sigma)
    with pytest.raises(FormatError, match="invalid"):
        apply_lock(decoded, bytes(nan))
    flipped = bytearray(payload)
    flipped[-1] ^= 0x55  # a damaged ANS word: garbage flags, caught by their checksum
    with pytest.raises(FormatError):
        apply_lock(decoded, bytes(flipped))


def test_payload_round_trip() -> None:
    """Version 2: float32 sigmas, offset and margin; the context threshold is the decoder's
    Otsu level of its own smoothed decode; only the contexts with flags store a count."""
    ones = np.zeros(N_CONTEXTS, np.uint64)
    ones[[3, 17, 33]] = [5, 1, 300]
    lock = LockPayload((1.0, 0.5, 0.5), 0.0, 1.25, 2.0, 7, 8, ones, b"abcd")
    data = lock.pack()
    parsed = LockPayload.parse(data, 3)
    assert parsed.version == 2 and parsed.sigmas == (1.0, 0.5, 0.5) and parsed.words == b"abcd"
    assert np.array_equal(parsed.ones, ones)
    assert (parsed.threshold, parsed.margin) == (1.25, 2.0)
    assert (parsed.context_crc, parsed.flags_crc) == (7, 8)
    smoothed = np.arange(1000.0).reshape(10, 10, 10)
    t_ctx, t = parsed.levels(smoothed)
    assert t_ctx == otsu(smoothed) and t == t_ctx + 1.25
    assert len(data) == 3 + 2 + 3 * 4 + 16 + 5 + 1 + 1 + 2 + 4  # (a 2D head: 34 bytes)
    with pytest.raises(ValueError, match="float32"):  # (the decoder would not see them)
        LockPayload((0.1, 1.0), 0.0, 0.0, 1.0, 0, 0, ones, b"").pack()


def test_version_1_payloads_still_decode() -> None:
    """Files written before session 54 store every level as f64 and a count per context."""
    head = struct.pack(
        "<3sBB3d3dIIB", b"SZK", 1, 2, 1.0, 1.0, 0.0, 480.0, 495.5, 3.0, 11, 12, N_CONTEXTS
    )
    counts = bytes([2] + [0] * (N_CONTEXTS - 1))
    parsed = LockPayload.parse(head + counts + b"xyz", 2)
    assert parsed.version == 1 and parsed.sigmas == (1.0, 1.0) and parsed.words == b"xyz"
    assert parsed.levels(np.zeros((4, 4))) == (480.0, 495.5) and parsed.margin == 3.0
    with pytest.raises(FormatError, match="truncated"):
        LockPayload.parse(head + counts[:5], 2)


def test_contexts_follow_the_decoded_surface() -> None:
    yy, xx = np.indices((48, 48))
    vol = 1000.0 * ((yy - 24) ** 2 + (xx - 24) ** 2 < 12**2)
    smoothed, ctx = lock_inputs(vol, (1.0, 1.0), 500.0)
    assert np.array_equal(ctx % 2 == 1, smoothed > 500.0)
    assert ctx[24, 24 + 12] // 2 <= 2  # on the surface: a near class
    assert ctx[0, 0] // 2 == ctx.max() // 2  # far away: the last class
    assert crc(ctx) == crc(ctx.copy())
    assert 0.0 < otsu(smoothed) < 1000.0


def test_a_single_plane_stack_is_locked_like_its_image() -> None:
    """A ZYX stack of one plane (a TIFF of one page read as 3D): its lock is the image's."""
    vol = _nuclei(5)[6:7]
    decoded = _coarse(vol)
    smoothed, ctx = lock_inputs(decoded, SIGMAS3, 3000.0)
    flat_smoothed, flat_ctx = lock_inputs(decoded[0], SIGMAS3[1:], 3000.0)
    assert np.array_equal(ctx[0], flat_ctx) and np.allclose(smoothed[0], flat_smoothed)
    reference, spacing = _segmentation(vol)
    lock = build_lock(vol, decoded, 300, SIGMAS3, reference, spacing, (0.0, 65535.0))
    assert lock is not None and lock.switched > 0
    values, applied = apply_lock(decoded, lock.payload)
    from napari_sciz.core.blocks import finalize

    assert applied and np.array_equal(finalize(values, vol.dtype, (0.0, 65535.0)), lock.corrected)


# the file -----------------------------------------------------------------------------


def _locked_file(
    vol: np.ndarray, block_voxels: int | None = None
) -> tuple[bytes, np.ndarray, bytes]:
    """A hybrid file of ``vol`` with a lock appended by hand: (file, locked decode, plain)."""
    from napari_sciz.core.api import compress
    from napari_sciz.core.task.score import _sigmas

    blocks = {"block_voxels": block_voxels} if block_voxels else {}
    plain = compress(vol, 64, budget=3.0, mode="hybrid", **blocks)
    reference, spacing = _segmentation(vol)
    vrange = tuple(plain.header["value_range"])
    lock = build_lock(
        vol, plain.reconstruction, 800, _sigmas(vol.ndim, None, 1.0), reference, spacing, vrange
    )
    assert lock is not None
    return with_lock(plain, lock.payload, 1), lock.corrected, plain.data


def test_reader_applies_the_lock_to_every_region() -> None:
    from napari_sciz.core.api import decompress, open_sciz

    vol = _nuclei(6)
    data, corrected, plain = _locked_file(vol)
    with open_sciz(data) as reader:
        assert reader.locked
        assert np.array_equal(reader.decode(), corrected)
        assert np.array_equal(reader[3:7, 10:40, 5], corrected[3:7, 10:40, 5])
        assert np.array_equal(reader[5], corrected[5])
        assert reader.decode(scale=2).shape == (24, 128, 128)
    assert not np.array_equal(decompress(plain), corrected)


def test_a_locked_file_of_several_blocks_decodes_on_several_threads() -> None:
    """The locked volume is made while the blocks decode on the reader's threads (a lock
    held across that wait once deadlocked every multi-block locked file)."""
    import threading

    from napari_sciz.core.reader import SciZReader

    vol = _nuclei(10, (12, 64, 128))
    data, corrected, _plain = _locked_file(vol, block_voxels=12 * 64 * 64)
    out: list[np.ndarray] = []
    with SciZReader(data, threads=2) as reader:
        assert reader.grid.n_blocks >= 2 and reader.locked
        worker = threading.Thread(target=lambda: out.append(reader.decode()), daemon=True)
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the decode of a locked multi-block file hangs"
    assert np.array_equal(out[0], corrected)


def test_header_and_payloads_must_agree_on_the_lock() -> None:
    from napari_sciz.core.api import open_sciz

    vol = _nuclei(7)
    data, _corrected, plain = _locked_file(vol)
    with container.SciZFile(data) as f:
        header, payloads = f.header, [f.payload(i) for i in range(f.n_payloads)]
    unlocked = {k: v for k, v in header.items() if k != "segmentation_lock"}
    with pytest.raises(FormatError, match="payloads"):
        open_sciz(container.pack(unlocked, payloads))
    with pytest.raises(FormatError, match="payloads"):
        open_sciz(container.pack(header, payloads[:-1]))
    with pytest.raises(FormatError, match="segmentation_lock"):
        open_sciz(container.pack({**header, "segmentation_lock": {"version": 2}}, payloads))
    older = {**header, "model": {**header["model"], "version": 4}}
    with pytest.raises(FormatError, match="model version 5"):
        open_sciz(container.pack(older, payloads))
    with pytest.raises(FormatError, match="segmentation lock"):
        open_sciz(container.pack(header, [*payloads[:-1], b"SZK\x01"])).decode()


def test_cli_info_shows_the_lock(tmp_path, capsys) -> None:
    from napari_sciz.cli import main

    data, _corrected, _plain = _locked_file(_nuclei(8))
    path = tmp_path / "locked.sciz"
    path.write_bytes(data)
    assert main(["info", str(path)]) == 0
    assert "segmentation lock" in capsys.readouterr().out


def test_a_locked_file_from_the_encoder_decodes_as_measured() -> None:
    from napari_sciz.core.api import decompress
    from napari_sciz.core.encode import BlockEncoder, FitSettings
    from napari_sciz.core.task.lockedfile import _locked_file
    from napari_sciz.core.task.prefilter import TaskChoice

    vol = _nuclei(9)
    reference, spacing = _segmentation(vol)
    settings = FitSettings(
        arr=vol, ratio=48.0, mode="hybrid", device="cpu", steps=None, budget=3.0, seed=0,
        axes="ZYX", voxel_size=None, units=None, name=None, block_voxels=1 << 22,
        guidance="none", guidance_weights=None, labels=None, cancel=None,
    )  # fmt: skip
    choice = TaskChoice("segmentation", reference=reference, spacing=spacing)
    choice.lock_share, choice.lock_bytes = 0.3, int(0.3 * vol.nbytes / 48)
    result = _locked_file(BlockEncoder(settings), choice, 3.0)
    assert result is not None
    assert result.header["segmentation_lock"] == {"version": 1}
    assert result.header["model"]["version"] == 5 and result.header["target_ratio"] == 48.0
    assert result.header["task_lock_share"] == 0.3
    assert result.nbytes <= vol.nbytes / 48  # the lock fills at most the ratio's bytes
    assert np.array_equal(decompress(result.data), result.reconstruction)
    assert any("voxels switched sides" in m for m in result.messages)


def test_a_lock_too_large_for_this_machine_is_skipped(monkeypatch) -> None:
    from napari_sciz.core import validate
    from napari_sciz.core.api import decompress, open_sciz

    vol = _nuclei(10)
    data, corrected, plain = _locked_file(vol)
    monkeypatch.setattr(validate, "memory_cap", lambda: 1000)
    with open_sciz(data) as reader:
        with pytest.warns(RuntimeWarning, match="not applied"):
            out = reader.decode()
    assert np.array_equal(out, decompress(plain))
