"""The rate-distortion benchmark's BD-rate and its report."""

from __future__ import annotations

import pytest

from napari_sciz.bench.ratedist import bd_rate, merge_records, render


def test_bd_rate_of_a_constant_rate_factor() -> None:
    ref = [(1.0, 30.0), (2.0, 33.0), (4.0, 36.0)]
    smaller = [(0.9 * r, p) for r, p in ref]
    assert bd_rate(smaller, ref) == pytest.approx(-10.0)
    assert bd_rate(ref, ref) == pytest.approx(0.0)
    # one dB better everywhere on a 3 dB-per-doubling curve: 2 ** (-1 / 3) of the rate
    better = [(r, p + 1.0) for r, p in ref]
    assert bd_rate(better, ref) == pytest.approx(100 * (2 ** (-1 / 3) - 1))


def test_bd_rate_needs_two_overlapping_points() -> None:
    assert bd_rate([(1.0, 30.0)], [(1.0, 30.0), (2.0, 33.0)]) is None
    assert bd_rate([(1.0, 10.0), (2.0, 12.0)], [(1.0, 30.0), (2.0, 33.0)]) is None


def test_render_reports_both_sets() -> None:
    point = {"nbytes": 100, "ratio": 64.0, "psnr": 30.0, "ssim": 0.9}
    point.update(encode_seconds=1.0, decode_seconds=0.1)
    layers = [{"base": "hevc", "filter_classes": 4, "field_bytes": 0}]
    vol = {
        "volume": "v",
        "shape": [4, 8, 8],
        "dtype": "uint16",
        "points": [{"target": 64.0, "hybrid": {**point, "layers": layers}, "sperr": point}],
        "bd_rate": {"hybrid_vs_sperr": -7.5, "hybrid_vs_hevc": None},
    }
    record = {
        "environment": {"cpu": "cpu"},
        "date": "today",
        "command": "cmd",
        "budget": 30.0,
        "modes": ["hybrid"],
        "volumes": [vol, {**vol, "volume": "w", "held_out": True}],
    }
    text = render(record)
    assert "Held-out volumes" in text and "-7.5 %" in text and "HEVC, filter 4 cl." in text


def _run(date: str, targets: dict[float, float], held_out: bool = False) -> dict:
    """A one-volume record with hybrid and SPERR points (PSNR by target ratio)."""

    def point(ratio: float, psnr: float) -> dict:
        rec = {"nbytes": 6400 / ratio, "ratio": ratio, "psnr": psnr, "ssim": 0.9}
        return {**rec, "encode_seconds": 1.0, "decode_seconds": 0.1}

    points = [
        {"target": t, "hybrid": point(t, p), "sperr": point(t, p - 1.0), "hevc": None}
        for t, p in targets.items()
    ]
    vol = {"volume": "v", "shape": [4, 8, 8], "dtype": "uint16", "voxels": 256}
    vol.update(points=points, held_out=held_out)
    return {
        "date": date,
        "command": f"run {date}",
        "budget": 120.0,
        "modes": ["hybrid"],
        "environment": {"cpu": "cpu"},
        "note": date,
        "volumes": [vol],
    }


def test_merged_runs_make_one_table_with_bd_rates_over_all_points() -> None:
    first = _run("a", {64.0: 30.0, 256.0: 27.0})
    second = _run("b", {16.0: 36.0, 256.0: 27.5}, held_out=True)
    merged = merge_records([first, second])
    (vol,) = merged["volumes"]
    assert [p["target"] for p in vol["points"]] == [16.0, 64.0, 256.0]
    assert vol["points"][2]["hybrid"]["psnr"] == 27.5  # the later run's point
    assert vol["held_out"] and merged["note"] is None
    assert vol["bd_rate"]["hybrid_vs_sperr"] < 0 and vol["bd_rate"]["hybrid_vs_hevc"] is None
    text = render(merged)
    assert "runs merged" in text and "`run a`" in text and "`run b`" in text
    # a merged record merged again keeps every run it was made of
    third = _run("c", {1024.0: 20.0})
    again = merge_records([merged, third])
    assert [r["command"] for r in again["runs"]] == ["run a", "run b", "run c"]


def test_runs_of_different_budgets_are_not_merged() -> None:
    with pytest.raises(ValueError, match="budgets"):
        merge_records([_run("a", {64.0: 30.0}), {**_run("b", {16.0: 36.0}), "budget": 30.0}])
