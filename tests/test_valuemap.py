"""The value maps of perceptual guidance (power map, sensitivity curve): the maps, their
header entries and files coded through them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.task.valuemap import (
    CURVE_KNOTS,
    CurveMap,
    PowerMap,
    fit_curve,
    parse_value_map,
)
from napari_sciz.errors import FormatError


@pytest.mark.parametrize("exponent", [0.35, 0.5, 1.0])
def test_the_map_keeps_the_range_and_inverts(exponent) -> None:
    m = PowerMap.for_range(exponent, 100.0, 4095.0)
    v = np.linspace(100.0, 4095.0, 1001)
    w = m.forward(v)
    assert w[0] == pytest.approx(100.0) and w[-1] == pytest.approx(4095.0)
    assert np.all(np.diff(w) > 0)
    np.testing.assert_allclose(m.inverse(w), v, rtol=0, atol=1e-9 * 4095)
    if exponent < 1:  # dark values get more of the range than bright ones
        assert w[100] - w[0] > w[-1] - w[-101]


def test_the_inverse_holds_the_low_end() -> None:
    m = PowerMap.for_range(0.5, 10.0, 20.0)
    assert m.inverse(np.array([5.0, 10.0]))[0] == pytest.approx(10.0)


def test_header_entry_round_trips() -> None:
    m = PowerMap.for_range(0.35, 0.0, 65535.0)
    assert parse_value_map(m.to_header(), (0.0, 65535.0)) == m


@pytest.mark.parametrize(
    "entry",
    [
        {"log": 0.5, "offset": 1.0},
        {"power": 0.5, "offset": 1.0, "version": 2},
        {"power": 2.0, "offset": 1.0},
        {"power": 0.5, "offset": 0.0},
        {"power": float("nan"), "offset": 1.0},
        {"power": "0.5", "offset": 1.0},
        "power",
    ],
)
def test_bad_header_entries_are_refused(entry) -> None:
    with pytest.raises(FormatError, match="value_map"):
        parse_value_map(entry, (0.0, 100.0))


def test_a_curve_keeps_the_range_and_inverts() -> None:
    m = CurveMap((0, -3, -8, -16, -8, 0), 100.0, 4095.0)
    v = np.linspace(100.0, 4095.0, 1001)
    w = m.forward(v)
    assert w[0] == pytest.approx(100.0) and w[-1] == pytest.approx(4095.0)
    assert np.all(np.diff(w) > 0)
    np.testing.assert_allclose(m.inverse(w), v, rtol=0, atol=1e-9 * 4095)
    # piece 0 (samples 0-166) rises 2 ** (16 / 8) = 4 times as steeply as piece 3 (500-666)
    assert (w[100] - w[0]) / (w[620] - w[520]) == pytest.approx(4.0, rel=1e-6)
    assert m.inverse(np.array([0.0, 5000.0])).tolist() == [100.0, 4095.0]
    assert parse_value_map(m.to_header(), (100.0, 4095.0)) == m
    # one symbol per step after the first (0): a step 32 + i from the last is symbol i
    assert m.to_header() == {"slopes": "dbYoo"}
    # steps the symbols cannot hold keep the list
    for steps in [(1, -3, -8), (0, -40, -8), (0, 40)]:
        wide = CurveMap(steps, 100.0, 4095.0)
        assert wide.to_header() == {"curve": list(steps)}
        assert parse_value_map(wide.to_header(), (100.0, 4095.0)) == wide
    # both forms of a curve are the same map
    assert parse_value_map({"curve": [0, -3, -8, -16, -8, 0]}, (100.0, 4095.0)) == m


def test_the_curve_follows_where_ms_ssim_weighs_errors() -> None:
    """A flat dark half and a textured bright half: the curve is steep in the dark (an error
    on a flat window weighs most) and shallow over the bright values."""
    rng = np.random.default_rng(0)
    vol = np.empty((64, 64))
    vol[:, :32] = 100 + rng.normal(0, 1, (64, 32))
    vol[:, 32:] = 3000 + 2000 * rng.random((64, 32))
    m = fit_curve(vol, float(vol.min()), float(vol.max()))
    assert len(m.steps) == CURVE_KNOTS and max(m.steps) == 0
    assert m.steps[0] == 0 and m.steps[-1] <= -8  # (a slope at least 2x lower)
    assert set(m.to_header()) == {"slopes"} and len(m.to_header()["slopes"]) == CURVE_KNOTS - 1
    # a sample of the volume, over a wider range: its values are mapped as the sample says
    wide = fit_curve(vol, 0.0, 8191.0)
    assert wide.lo == 0.0 and wide.hi == 8191.0
    assert wide.forward(np.array([100.0]))[0] > 100.0  # (the dark pieces are the steep ones)


@pytest.mark.parametrize(
    "entry",
    [
        {"curve": []},
        {"curve": [0, 1.5]},
        {"curve": [0, True]},
        {"curve": [0, 200]},
        {"curve": "0,1"},
        {"curve": [0, 1], "power": 0.5},
        {"slopes": ""},
        {"slopes": "gg*"},
        {"slopes": 5},
        {"slopes": ["g"]},
        {"slopes": "_" * 5},  # (steps 0, 31, ..., 155: past 128)
        {"slopes": "g", "curve": [0, 0]},
    ],
)
def test_bad_curves_are_refused(entry) -> None:
    with pytest.raises(FormatError, match="value_map"):
        parse_value_map(entry, (0.0, 100.0))
    with pytest.raises(FormatError, match="value_map"):
        parse_value_map({"curve": [0, 1]}, (5.0, 5.0))


def _coded_through(kind: str, exponent: float | None, seed: int):
    """A volume and its hybrid file coded through a ``kind`` map (the guided path, the map
    forced)."""
    pytest.importorskip("skimage")
    from _nuclei import nuclei

    from napari_sciz.core.api import compress
    from napari_sciz.core.task import prefilter as taskfilter

    def mapped(volume, nbytes, guidance, **_kwargs):
        cand = taskfilter.Candidate(kind, None, exponent)
        choice, coded = taskfilter.variant(taskfilter.TaskChoice(guidance), cand, volume)
        choice.ranked = [cand]
        return coded, choice

    patch = pytest.MonkeyPatch()
    patch.setattr(taskfilter, "choose_prefilter", mapped)
    patch.setattr(taskfilter.TaskChoice, "better", lambda self, candidate, plain: True)
    try:
        vol = nuclei(seed, (8, 48, 48))
        result = compress(vol, 24, budget=4.0, guidance="perceptual", seed=0)
    finally:
        patch.undo()
    return vol, result


@pytest.fixture(scope="module")
def mapped_file():
    """A hybrid file coded through a power map."""
    return _coded_through("power", 0.5, 7)


def test_a_mapped_file_decodes_to_its_reconstruction(mapped_file) -> None:
    from napari_sciz.core.header import VALUE_MAP_MODEL_VERSION
    from napari_sciz.core.reader import SciZReader

    vol, result = mapped_file
    assert result.header["value_map"]["power"] == 0.5
    assert result.header["model"]["version"] == VALUE_MAP_MODEL_VERSION
    assert any("kept the value-mapped file" in m for m in result.messages)
    reader = SciZReader(result.data)
    np.testing.assert_array_equal(reader.decode(), result.reconstruction)
    np.testing.assert_array_equal(reader[2:5, 10:30, 5:40], result.reconstruction[2:5, 10:30, 5:40])
    assert result.psnr > 25  # decoded in the volume's units, not the map's


def _repacked(data: bytes, **changes) -> bytes:
    from napari_sciz.core.bitstream import container

    with container.SciZFile(data) as f:
        payloads = [f.payload(i) for i in range(f.n_payloads)]
        header = {**f.header, **changes}
    return container.pack(header, payloads)


def test_a_reader_refuses_a_damaged_value_map(mapped_file) -> None:
    from napari_sciz.core.reader import SciZReader

    _vol, result = mapped_file
    header = result.header
    old_model = {**header["model"], "version": 4}
    with pytest.raises(FormatError, match="model version"):
        SciZReader(_repacked(result.data, model=old_model))
    with pytest.raises(FormatError, match="value_map"):
        SciZReader(_repacked(result.data, value_map={**header["value_map"], "power": -1}))


def test_cli_info_names_the_map(mapped_file, tmp_path, capsys) -> None:
    from napari_sciz.cli import main

    _vol, result = mapped_file
    path = tmp_path / "mapped.sciz"
    path.write_bytes(result.data)
    assert main(["info", str(path)]) == 0
    assert "power map of the intensities, exponent 0.5" in capsys.readouterr().out


@pytest.fixture(scope="module")
def curve_file():
    """A hybrid file coded through a sensitivity curve."""
    return _coded_through("curve", None, 8)


def test_a_curve_mapped_file_decodes_to_its_reconstruction(curve_file, tmp_path, capsys) -> None:
    from napari_sciz.cli import main
    from napari_sciz.core.reader import SciZReader

    vol, result = curve_file
    slopes = result.header["value_map"]["slopes"]
    assert len(slopes) == CURVE_KNOTS - 1
    assert any("kept the value-mapped file" in m for m in result.messages)
    reader = SciZReader(result.data)
    steps = list(reader.value_map.steps)
    assert reader.value_map == CurveMap(tuple(steps), float(vol.min()), float(vol.max()))
    np.testing.assert_array_equal(reader.decode(), result.reconstruction)
    np.testing.assert_array_equal(reader[1:6, 7:40, 0:19], result.reconstruction[1:6, 7:40, 0:19])
    assert result.psnr > 25
    with pytest.raises(FormatError, match="value_map curve"):
        SciZReader(_repacked(result.data, value_map={"curve": [*steps[:-1], 999]}))
    path = tmp_path / "curve.sciz"
    path.write_bytes(result.data)
    assert main(["info", str(path)]) == 0
    said = capsys.readouterr().out
    assert f"sensitivity curve of the intensities in {CURVE_KNOTS} pieces" in said


def test_a_constant_volume_is_not_mapped() -> None:
    from napari_sciz.core.task.prefilter import choose_prefilter

    vol = np.full((6, 32, 32), 700, np.uint16)
    out, choice = choose_prefilter(vol, vol.nbytes // 32, "perceptual")
    assert choice.value_map is None and out is vol
    assert not any(k.startswith("power") or "curve" in k for k in choice.scores)
