"""The power map of perceptual guidance: the map, its header entry and files coded through it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sciz.core.task.valuemap import PowerMap, parse_value_map
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


@pytest.fixture(scope="module")
def mapped_file():
    """A hybrid file coded through a power map (the guided path, the map forced)."""
    pytest.importorskip("skimage")
    from _nuclei import nuclei

    from napari_sciz.core.api import compress
    from napari_sciz.core.task import prefilter as taskfilter

    def mapped(volume, nbytes, guidance, **_kwargs):
        cand = taskfilter.Candidate("power", None, 0.5)
        choice, coded = taskfilter.variant(taskfilter.TaskChoice(guidance), cand, volume)
        choice.ranked = [cand]
        return coded, choice

    patch = pytest.MonkeyPatch()
    patch.setattr(taskfilter, "choose_prefilter", mapped)
    patch.setattr(taskfilter.TaskChoice, "better", lambda self, candidate, plain: True)
    try:
        vol = nuclei(7, (8, 48, 48))
        result = compress(vol, 24, budget=4.0, guidance="perceptual", seed=0)
    finally:
        patch.undo()
    return vol, result


def test_a_mapped_file_decodes_to_its_reconstruction(mapped_file) -> None:
    from napari_sciz.core.header import VALUE_MAP_MODEL_VERSION
    from napari_sciz.core.reader import SciZReader

    vol, result = mapped_file
    assert result.header["value_map"]["power"] == 0.5
    assert result.header["model"]["version"] == VALUE_MAP_MODEL_VERSION
    assert any("kept the power-mapped file" in m for m in result.messages)
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


def test_a_constant_volume_is_not_mapped() -> None:
    from napari_sciz.core.task.prefilter import choose_prefilter

    vol = np.full((6, 32, 32), 700, np.uint16)
    out, choice = choose_prefilter(vol, vol.nbytes // 32, "perceptual")
    assert choice.value_map is None and out is vol
    assert not any(k.startswith("power") for k in choice.scores)
