"""Segmentation locks of a stack: one lock per volume, their payload, the file and its reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("skimage")

from _locks import with_lock  # noqa: E402
from _nuclei import nuclei  # noqa: E402

from napari_sciz.core.bitstream import container  # noqa: E402
from napari_sciz.core.seglock import apply_lock  # noqa: E402
from napari_sciz.core.seglock.stacked import (  # noqa: E402
    build_stacked_locks,
    pack_stacked,
    parse_stacked,
    stacked_overhead,
)
from napari_sciz.errors import FormatError  # noqa: E402

SIGMAS3 = (1.0, 1.0, 1.0)
VRANGE = (0.0, 65535.0)


def _stack(n: int = 3, shape: tuple[int, int, int] = (10, 48, 48)) -> np.ndarray:
    """``n`` volumes of touching nuclei in noise (uint16), each different."""
    return np.stack([nuclei(seed, shape, count=7, noise=150.0) for seed in range(20, 20 + n)])


def _coarse(vol: np.ndarray) -> np.ndarray:
    """A crude stand-in for a high-ratio decode of each volume: blurred, coarsely quantized."""
    from scipy import ndimage as ndi

    sigma = (0.0,) * (vol.ndim - 3) + (2.0, 2.0, 2.0)
    blurred = ndi.gaussian_filter(vol.astype(float), sigma)
    return (np.round(blurred / 300.0) * 300.0).clip(0, 65535).astype(vol.dtype)


def test_the_payload_of_a_stack_round_trips_and_is_checked() -> None:
    locks = [b"abc", None, b"defgh"]
    data = pack_stacked(locks)
    assert parse_stacked(data, 3) == locks
    assert len(data) <= 3 + 5 + stacked_overhead(3, 5)
    with pytest.raises(FormatError, match="3 volumes' locks for a stack of 4"):
        parse_stacked(data, 4)
    with pytest.raises(FormatError, match="magic"):
        parse_stacked(b"SZK" + data[3:], 3)
    with pytest.raises(FormatError, match="newer"):
        parse_stacked(data[:3] + bytes([9]) + data[4:], 3)
    with pytest.raises(FormatError, match="do not fill"):
        parse_stacked(data[:-1], 3)
    with pytest.raises(FormatError, match="truncated"):
        parse_stacked(data[:5], 3)
    with pytest.raises(FormatError, match="truncated"):
        parse_stacked(b"SZ", 3)


def test_each_volume_is_locked_against_its_own_segmentation() -> None:
    from napari_sciz.core.blocks import finalize
    from napari_sciz.core.task.score import seed_distance, segment, segmentation_fidelity

    stack = _stack()
    decoded = _coarse(stack)
    locks = build_stacked_locks(stack, decoded, 1, 1500, SIGMAS3, (1,), VRANGE)
    assert locks is not None and len(locks.payload) <= 1500
    assert locks.locked == locks.volumes == 3 and locks.switched > 0
    per_volume = parse_stacked(locks.payload, 3)
    for i in range(3):
        assert per_volume[i] is not None
        values, applied = apply_lock(decoded[i], per_volume[i])
        assert applied
        np.testing.assert_array_equal(finalize(values, stack.dtype, VRANGE), locks.corrected[i])
        spacing = seed_distance(stack[i])
        reference = segment(stack[i], min_distance=spacing)
        before = segmentation_fidelity(reference, segment(decoded[i], min_distance=spacing))
        after = segmentation_fidelity(reference, segment(locks.corrected[i], min_distance=spacing))
        assert after.dice > before.dice


def test_the_volume_measured_is_locked_first_and_the_rest_wait_for_time() -> None:
    import time

    stack = _stack()
    decoded = _coarse(stack)
    past = time.perf_counter() - 1.0
    locks = build_stacked_locks(stack, decoded, 1, 1500, SIGMAS3, (2,), VRANGE, deadline=past)
    assert locks is not None and locks.locked == locks.reached == 1
    per_volume = parse_stacked(locks.payload, 3)
    assert per_volume[0] is None and per_volume[1] is None and per_volume[2] is not None
    np.testing.assert_array_equal(locks.corrected[:2], decoded[:2])


def test_bytes_a_volume_leaves_go_to_a_volume_that_needs_them() -> None:
    stack = _stack(3)[[0, 2]]
    decoded = _coarse(stack)
    decoded[0] = stack[0]  # (nothing to lock there, found after volume 1 took its half)
    half = build_stacked_locks(stack[1:], decoded[1:], 1, 400, SIGMAS3, (0,), VRANGE)
    locks = build_stacked_locks(stack, decoded, 1, 800, SIGMAS3, (1,), VRANGE)
    assert half is not None and locks is not None and locks.locked == 1
    assert half.groups < half.groups_total  # (half the bytes did not hold every switch)
    assert len(locks.payload) <= 800 and locks.groups == locks.groups_total
    assert parse_stacked(locks.payload, 2)[0] is None


def test_nothing_to_lock_in_a_stack_that_decodes_alike() -> None:
    stack = _stack(2)
    assert build_stacked_locks(stack, stack, 1, 1000, SIGMAS3, (1,), VRANGE) is None


# the file -----------------------------------------------------------------------------


def _locked_stack_file(stack: np.ndarray, nbytes: int = 1500) -> tuple[bytes, np.ndarray, bytes]:
    """A hybrid file of ``stack`` (TZYX) with locks appended by hand: (file, locked, plain)."""
    from napari_sciz.core.api import compress

    plain = compress(stack, 64, budget=4.0, mode="hybrid", axes="TZYX")
    vrange = tuple(plain.header["value_range"])
    middle = (stack.shape[0] // 2,)
    locks = build_stacked_locks(stack, plain.reconstruction, 1, nbytes, SIGMAS3, middle, vrange)
    assert locks is not None
    data = with_lock(plain, locks.payload, 2, guidance="segmentation")
    return data, locks.corrected, plain.data


def test_the_reader_locks_each_volume_of_a_stack() -> None:
    from napari_sciz.core.api import decompress, open_sciz

    stack = _stack(3)
    data, corrected, plain = _locked_stack_file(stack)
    base = decompress(plain)
    with open_sciz(data) as reader:
        assert reader.locked
        np.testing.assert_array_equal(reader.decode(), corrected)
        np.testing.assert_array_equal(reader[1:3, 2:7, 10:40, 5], corrected[1:3, 2:7, 10:40, 5])
        np.testing.assert_array_equal(reader[2, 4], corrected[2, 4])
        assert reader.decode(scale=2).shape == (3, 20, 96, 96)
    locked = [i for i in range(3) if not np.array_equal(corrected[i], base[i])]
    assert locked  # (the locks moved values)


def test_a_volume_without_a_lock_decodes_from_its_blocks() -> None:
    from napari_sciz.core.api import decompress, open_sciz

    stack = _stack(3)
    data, _corrected, plain = _locked_stack_file(stack)
    with container.SciZFile(data) as f:
        header, payloads = f.header, [f.payload(i) for i in range(f.n_payloads)]
    locks = parse_stacked(payloads[-1], 3)
    locks[0] = locks[2] = None  # (as when the time ran out before them)
    partial = container.pack(header, [*payloads[:-1], pack_stacked(locks)])
    base = decompress(plain)
    with open_sciz(partial) as reader:
        out = reader.decode()
    np.testing.assert_array_equal(out[0], base[0])
    np.testing.assert_array_equal(out[2], base[2])
    values, _ = apply_lock(base[1], locks[1])
    assert not np.array_equal(out[1], base[1])


def test_the_reader_keeps_a_few_locked_volumes(monkeypatch) -> None:
    from napari_sciz.core import lockedview
    from napari_sciz.core.api import open_sciz

    monkeypatch.setattr(lockedview, "KEEP_VOLUMES", 2)
    stack = _stack(4, (6, 40, 40))
    data, corrected, _plain = _locked_stack_file(stack, 2000)
    with open_sciz(data) as reader:
        for i in (0, 1, 2, 3, 1):
            np.testing.assert_array_equal(reader[i], corrected[i])
        view = reader._locked_view
        assert view is not None and list(view._volumes) == [3, 1]


def test_the_header_says_which_kind_of_lock() -> None:
    from napari_sciz.core.api import open_sciz

    data, _corrected, _plain = _locked_stack_file(_stack(2))
    with container.SciZFile(data) as f:
        header, payloads = f.header, [f.payload(i) for i in range(f.n_payloads)]
    with pytest.raises(FormatError, match="version 1 needs a single 2D/3D volume"):
        open_sciz(container.pack({**header, "segmentation_lock": {"version": 1}}, payloads))
    with pytest.raises(FormatError, match="version 5 needs a colour image"):
        open_sciz(container.pack({**header, "segmentation_lock": {"version": 5}}, payloads))
    with pytest.raises(FormatError, match="newer napari-sciz"):
        open_sciz(container.pack({**header, "segmentation_lock": {"version": 6}}, payloads))
    with pytest.raises(FormatError, match="stack of 2"):
        three = pack_stacked([None, None, None])
        open_sciz(container.pack(header, [*payloads[:-1], three])).decode()


def _encoder_locked(
    arr: np.ndarray, ratio: float, axes: str, share: float, progress: Any = None
) -> Any:
    """The encoder's locked file of a stack (``_locked_file``, the proxy's lock of one volume
    taken as ``share`` of its bytes)."""
    from napari_sciz.core.encode import BlockEncoder, FitSettings
    from napari_sciz.core.task.lockedfile import _locked_file
    from napari_sciz.core.task.prefilter import TaskChoice

    settings = FitSettings(
        arr=arr, ratio=ratio, mode="hybrid", device="cpu", steps=None, budget=6.0, seed=0,
        axes=axes, voxel_size=None, units=None, name=None, block_voxels=1 << 22,
        guidance="none", guidance_weights=None, labels=None, cancel=None,
    )  # fmt: skip
    choice = TaskChoice("segmentation")
    choice.lock_share, choice.lock_bytes = share, int(share * arr[0].nbytes / ratio)
    result = _locked_file(BlockEncoder(settings, progress=progress), choice, 6.0)
    assert result is not None and result.header["segmentation_lock"] == {"version": 2}
    return result


def test_a_locked_stack_from_the_encoder_decodes_as_measured() -> None:
    from napari_sciz.core.api import decompress

    stack = _stack(3)
    told: list[str] = []
    result = _encoder_locked(stack, 48.0, "TZYX", 0.3, lambda info: told.append(info.message))
    assert result.nbytes <= stack.nbytes / 48
    locking = [m for m in told if m.startswith("segmentation lock")]
    assert locking == [f"segmentation lock: volume {i} of 3" for i in (1, 2, 3)]
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)
    assert any("volumes locked" in m for m in result.messages)


def test_cli_info_shows_the_locks_of_a_stack(tmp_path, capsys) -> None:
    from napari_sciz.cli import main

    data, _corrected, _plain = _locked_stack_file(_stack(2))
    path = tmp_path / "locked.sciz"
    path.write_bytes(data)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "threshold surface of each volume" in out
    assert "(2 of 2 volumes)" in out


def test_the_locks_of_a_stack_are_planned_for_the_time_there_is() -> None:
    from napari_sciz.core.task.lockedfile import _lock_time

    assert _lock_time(1, 2.0, 100.0) == (1, 85.0)  # (a single volume: a share of the time)
    assert _lock_time(1, 20.0, 100.0) == (1, 70.0)  # (... or what the proxy's lock took)
    assert _lock_time(5, 0.0, 100.0) == (5, 85.0)  # (no proxy time measured)
    assert _lock_time(3, 2.0, 100.0) == (3, 85.0)  # (9 s expected: the single share holds it)
    assert _lock_time(10, 2.0, 100.0) == (10, 70.0)
    assert _lock_time(100, 2.0, 100.0) == (16, 50.0)  # (at most half the time: 16 locks)
    assert _lock_time(100, 80.0, 100.0) == (1, 50.0)  # (the middle volume's, always)
    assert _lock_time(100, 2.0, None) == (100, None)


def test_the_channels_of_a_colour_image_are_locked_one_by_one() -> None:
    """A 3D array whose axes start with C is a stack of 2D channels: one 2D lock each (its
    blocks are 3D: the lock's stack is told by the axes, not the block grid)."""
    from napari_sciz.core.api import decompress, open_sciz

    channels = np.stack([nuclei(s, (8, 96, 96), count=14, noise=150.0)[4] for s in (31, 32, 33)])
    result = _encoder_locked(channels, 24.0, "CYX", 0.35)
    assert result.header["blocks"]["spatial_ndim"] == 3
    np.testing.assert_array_equal(decompress(result.data), result.reconstruction)
    with open_sciz(result.data) as reader:
        np.testing.assert_array_equal(reader[1, 10:50], result.reconstruction[1, 10:50])


def test_a_cancelled_job_stops_between_volumes() -> None:
    from napari_sciz.errors import CancelledError

    stack = _stack(3)
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # (cancelled once the first volume is locked)

    with pytest.raises(CancelledError):
        build_stacked_locks(stack, _coarse(stack), 1, 1500, SIGMAS3, (1,), VRANGE, cancel=cancel)
    assert len(calls) == 2


def test_a_stack_of_two_leading_axes_is_locked_volume_by_volume() -> None:
    """TCZYX: every (time point, channel) volume has its own lock, read back by the reader."""
    from napari_sciz.core.api import compress, open_sciz

    stack = _stack(4, (8, 40, 40)).reshape(2, 2, 8, 40, 40)
    plain = compress(stack, 48, budget=4.0, mode="hybrid", axes="TCZYX")
    locks = build_stacked_locks(stack, plain.reconstruction, 2, 2400, SIGMAS3, (1, 1), VRANGE)
    assert locks is not None and locks.volumes == 4
    assert len(parse_stacked(locks.payload, 4)) == 4
    with open_sciz(with_lock(plain, locks.payload, 2)) as reader:
        np.testing.assert_array_equal(reader.decode(), locks.corrected)
        np.testing.assert_array_equal(reader[1, 0, 3], locks.corrected[1, 0, 3])
