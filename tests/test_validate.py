"""Tests of the input checks (napari_sciz.core.validate)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.validate import (
    SUPPORTED_DTYPES,
    check_array,
    check_axes,
    check_ratio,
    default_axes,
    parse_roi,
)
from napari_sciz.errors import InvalidInputError, SciZError

SHAPE = (16, 64, 48)


# --------------------------------------------------------------------------------------------
# check_array
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_check_array_accepts_supported_dtypes(dtype: str) -> None:
    arr = np.zeros((4, 5), dtype=dtype)
    out = check_array(arr)
    assert out.dtype == np.dtype(dtype)
    assert out is arr  # no copy


def test_check_array_accepts_array_likes_and_views() -> None:
    out = check_array([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(out, np.ndarray) and out.shape == (2, 2) and out.dtype == np.float64
    base = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    view = base[:, ::2, 1:]
    assert check_array(view).shape == (4, 3, 7)
    big_endian = base.astype(">u2")
    assert check_array(big_endian).dtype.name == "uint16"


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "int64", "uint64", "float128"])
def test_check_array_rejects_unsupported_dtypes(dtype: str) -> None:
    with pytest.raises(InvalidInputError, match="unsupported dtype"):
        check_array(np.zeros((8, 8), dtype=dtype))


def test_check_array_rejects_non_arrays() -> None:
    with pytest.raises(InvalidInputError):
        check_array("not an image")
    with pytest.raises(InvalidInputError):
        check_array([[1, 2], [3]])  # ragged
    with pytest.raises(InvalidInputError):
        check_array(np.array([[object(), object()], [object(), object()]]))


@pytest.mark.parametrize(
    "shape",
    [(), (7,), (0, 5), (5, 0), (3, 0, 4), (1, 1), (1, 8), (8, 1), (4, 8, 1), (1, 1, 1)],
)
def test_check_array_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError):
        check_array(np.zeros(shape, np.uint8))


def test_check_array_dimension_limits() -> None:
    assert check_array(np.zeros((1,) * 4 + (2, 2), np.uint8)).ndim == 6
    with pytest.raises(InvalidInputError, match="at most 6"):
        check_array(np.zeros((1,) * 5 + (2, 2), np.uint8))
    # a single plane in a 3D stack is fine (depth 1), so is a 2x2 image
    assert check_array(np.zeros((1, 2, 2), np.uint16)).shape == (1, 2, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_array_rejects_non_finite(bad: float, dtype: str) -> None:
    arr = np.ones((4, 6, 6), dtype)
    arr[2, 3, 1] = bad
    arr[0, 0, 0] = bad
    with pytest.raises(InvalidInputError, match="2 NaN or infinite"):
        check_array(arr)


def test_errors_are_sciz_and_value_errors() -> None:
    with pytest.raises(SciZError):
        check_array(np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError):
        check_array(np.zeros((4, 4), np.int64))


# --------------------------------------------------------------------------------------------
# check_axes / default_axes / check_ratio
# --------------------------------------------------------------------------------------------


def test_default_axes() -> None:
    assert default_axes(2) == "YX"
    assert default_axes(3) == "ZYX"
    assert default_axes(4) == "CZYX"
    assert default_axes(5) == "TCZYX"
    assert len(default_axes(6)) == 6


def test_check_axes() -> None:
    assert check_axes(None, 3) == "ZYX"
    assert check_axes("", 2) == "YX"
    assert check_axes("tyx", 3) == "TYX"
    assert check_axes("CZYX", 4) == "CZYX"
    for bad, ndim in [("ZYX", 2), ("YX", 3), ("ZZX", 3), ("Z1X", 3), ("Z X", 3), ("Z-X", 3)]:
        with pytest.raises(InvalidInputError, match="axes"):
            check_axes(bad, ndim)


@pytest.mark.parametrize("ratio", [1, 1.0, 8, "16", 2.5, np.float32(64), 1e6])
def test_check_ratio_accepts(ratio: object) -> None:
    assert check_ratio(ratio) == float(ratio)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ratio", [0, 0.5, -8, float("nan"), float("inf"), 1e7, None, "fast", [8], object()]
)
def test_check_ratio_rejects(ratio: object) -> None:
    with pytest.raises(InvalidInputError, match="ratio"):
        check_ratio(ratio)


# --------------------------------------------------------------------------------------------
# parse_roi
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roi", "expected"),
    [
        (None, ((0, 16), (0, 64), (0, 48))),
        ("0:10,20:30,:", ((0, 10), (20, 30), (0, 48))),
        ("5,:,:", ((5, 6), (0, 64), (0, 48))),
        (":,:,:", ((0, 16), (0, 64), (0, 48))),
        (":4, 10:, :7", ((0, 4), (10, 64), (0, 7))),
        (" 1 : 3 ,2:5, 0 : 48 ", ((1, 3), (2, 5), (0, 48))),
        ("15,63,47", ((15, 16), (63, 64), (47, 48))),
        # fewer entries than axes apply to the last axes
        ("10:20", ((0, 16), (0, 64), (10, 20))),
        ("3:9,0:2", ((0, 16), (3, 9), (0, 2))),
        # negative bounds and indices count from the end, as in Python
        ("-3,:,:", ((13, 14), (0, 64), (0, 48))),
        ("0:-1,-10:,-48:-47", ((0, 15), (54, 64), (0, 1))),
    ],
)
def test_parse_roi_strings(roi: str | None, expected: tuple) -> None:
    assert parse_roi(roi, SHAPE) == expected


@pytest.mark.parametrize(
    ("roi", "expected"),
    [
        ((slice(0, 4), slice(None), slice(2, None)), ((0, 4), (0, 64), (2, 48))),
        ([(1, 3), (5, 9), (0, 48)], ((1, 3), (5, 9), (0, 48))),
        ((2, slice(10, 20), (3, 4)), ((2, 3), (10, 20), (3, 4))),
        ((np.int64(7), slice(np.int32(1), np.int64(2))), ((0, 16), (7, 8), (1, 2))),
        ([slice(0, 1)], ((0, 16), (0, 64), (0, 1))),
        ((), ((0, 16), (0, 64), (0, 48))),
        ((slice(None, None, 1),) * 3, ((0, 16), (0, 64), (0, 48))),
        ((-1, slice(-2, None), (-5, -1)), ((15, 16), (62, 64), (43, 47))),
    ],
)
def test_parse_roi_sequences(roi: object, expected: tuple) -> None:
    assert parse_roi(roi, SHAPE) == expected


@pytest.mark.parametrize(
    "roi",
    [
        "",  # nothing
        ",",
        "a:b,:,:",
        "1:2:3,:,:",  # no steps in strings
        "0:10;0:10",
        "-1:5,:,:",  # 15:5, reversed
        "-17,:,:",  # before the start
        "-20:,:,:",
        "0:-16,:,:",  # empty
        "5:5,:,:",  # empty
        "6:2,:,:",  # reversed
        "0:17,:,:",  # out of range
        "16,:,:",
        ":,64,:",
        ":,:,0:49",
        "0:1,0:1,0:1,0:1",  # too many axes
        (slice(0, 8, 2), slice(None), slice(None)),  # steps are not allowed
        [(0, 4), (0, 4), (0, 4), (0, 4)],
        [(3, 3)],
        [(-2, 3)],
        [(0, 100)],
        [None],
        [1.5],
        [(0, 1, 2)],
        [slice(0, 100)],
    ],
)
def test_parse_roi_rejects(roi: object) -> None:
    with pytest.raises(InvalidInputError):
        parse_roi(roi, SHAPE)


def test_parse_roi_error_names_the_axis() -> None:
    with pytest.raises(InvalidInputError, match="axis 1 of size 64"):
        parse_roi(":,60:70,:", SHAPE)
    with pytest.raises(InvalidInputError, match="expected e.g."):
        parse_roi("x", SHAPE)


@pytest.mark.parametrize("roi", [[("a", "b")], [(0.5, "x")], 5, object()])
def test_parse_roi_rejects_garbage_with_invalid_input(roi: object) -> None:
    # not an internal TypeError/ValueError, but the user-facing error
    with pytest.raises(InvalidInputError):
        parse_roi(roi, SHAPE)


def test_parse_roi_2d_and_stack() -> None:
    assert parse_roi("3,1:4", (8, 8)) == ((3, 4), (1, 4))
    assert parse_roi("1,:,2:4,:", (2, 5, 6, 7)) == ((1, 2), (0, 5), (2, 4), (0, 7))
    assert parse_roi(":,0:3", (2, 5, 6, 7)) == ((0, 2), (0, 5), (0, 6), (0, 3))


def test_64_bit_integers_are_told_the_type_that_holds_them() -> None:
    """numpy's default integer (and napari's labels) is 64-bit: the message names the
    smallest supported type that keeps every value, or says none does."""
    labels = np.arange(6 * 7, dtype=np.int64).reshape(6, 7) - 3
    with pytest.raises(InvalidInputError, match=r"fit int8, so data.astype\(np.int8\)"):
        check_array(labels)
    with pytest.raises(InvalidInputError, match="do not fit 32 bits"):
        check_array(np.full((4, 4), 2**40, np.uint64))


def test_64_bit_integers_narrowed_to_the_type_that_holds_them() -> None:
    """What the widget and the CLI code instead of a 64-bit integer image: every value kept."""
    from napari_sciz.core.validate import narrowed_integers, narrowest_integer

    assert narrowest_integer(0, 255) == np.uint8 and narrowest_integer(-3, 100) == np.int8
    assert narrowest_integer(0, 40000) == np.uint16 and narrowest_integer(-1, 40000) == np.int32
    assert narrowest_integer(0, 2**32) is None
    image = np.arange(6 * 7, dtype=np.int64).reshape(6, 7) * 1000
    narrowed = narrowed_integers(image)
    assert narrowed.dtype == np.uint16 and np.array_equal(narrowed, image)
    floats = image.astype(np.float32)
    assert narrowed_integers(floats) is floats
    with pytest.raises(InvalidInputError, match="do not fit 32-bit"):
        narrowed_integers(np.full((4, 4), 2**40, np.int64))
