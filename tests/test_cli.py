"""Tests of the ``sciz`` command line (napari_sciz.cli), against the real codec."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from napari_sciz import __version__, cli
from napari_sciz.cli import compress as cli_compress
from napari_sciz.cli import decompress as cli_decompress
from napari_sciz.cli.text import _Progress
from napari_sciz.errors import InvalidInputError

HAVE_CODEC = importlib.util.find_spec("napari_sciz.core.api") is not None
needs_codec = pytest.mark.skipif(not HAVE_CODEC, reason="napari_sciz.core.api not available")

STEPS = "20"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``sciz argv`` in-process; return (exit status, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse usage errors, --help, --version
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, contains: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sciz: error: "), err
    assert contains in lines[0], err
    assert "Traceback" not in err


def volume(shape: tuple[int, ...] = (8, 32, 32), dtype: str = "uint16") -> np.ndarray:
    """A small smooth volume with a little noise (fast to fit)."""
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    smooth = np.ones(shape)
    for k, g in enumerate(grids):
        smooth *= 0.6 + 0.4 * np.sin(2.5 * g * (k + 1))
    rng = np.random.default_rng(0)
    data = 1000 + 20000 * smooth + rng.normal(0, 100, shape)
    return data.astype(dtype)


# ---------------------------------------------------------------------------------------------
# no codec needed
# ---------------------------------------------------------------------------------------------


def test_python_m_and_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "napari_sciz", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_cli_imports_no_qt_napari_or_torch() -> None:
    code = (
        "import sys, napari_sciz.cli\n"
        "bad = {'qtpy', 'napari', 'magicgui', 'torch', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("compress", "decompress", "info", "score", "bench", "demo"):
        assert command in out


@pytest.mark.parametrize("ratio", ["abc", "0", "-3", "0.5", "nan", "inf"])
def test_bad_ratio_is_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ratio: str
) -> None:
    src = tmp_path / "a.npy"
    np.save(src, volume())
    code, _, err = run(
        capsys, "compress", str(src), "-o", str(tmp_path / "a.sciz"), "--ratio", ratio
    )
    assert code == 2
    assert "--ratio" in err
    assert not (tmp_path / "a.sciz").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "a.npy", "-o", "a.sciz", "--ratio", "4", "--steps", "5", "--budget", "3"],
        ["compress", "a.npy", "-o", "a.sciz", "--ratio", "4", "--effort", "best", "--budget", "3"],
        ["compress", "a.npy", "-o", "a.sciz", "--ratio", "4", "--effort", "slow"],
        ["compress", "a.npy", "--ratio", "4"],
        ["compress", "a.npy", "-o", "a.sciz", "--ratio", "4", "--steps", "0"],
        ["compress", "a.npy", "-o", "a.sciz", "--ratio", "4", "--device", "tpu"],
        ["decompress", "a.sciz", "-o", "a.tif", "--scale", "0"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage:" in err


def test_missing_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(
        capsys,
        "compress",
        str(tmp_path / "nope.tif"),
        "-o",
        str(tmp_path / "o.sciz"),
        "--ratio",
        "8",
    )
    assert code == 1 and out == ""
    assert_one_line_error(err, "no such file")
    for argv in (["info", "nope.sciz"], ["decompress", "nope.sciz", "-o", "x.tif"]):
        code, _, err = run(capsys, *[str(tmp_path / a) if "." in a else a for a in argv])
        assert code == 1
        assert_one_line_error(err, "no such file")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_extensions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "img.png"
    png.write_bytes(b"\x89PNG\r\n")
    code, _, err = run(capsys, "compress", str(png), "-o", str(tmp_path / "o.sciz"), "--ratio", "8")
    assert code == 1
    assert_one_line_error(err, "unsupported file type '.png'")
    src = tmp_path / "a.npy"
    np.save(src, volume())
    code, _, err = run(capsys, "compress", str(src), "-o", str(tmp_path / "o.tif"), "--ratio", "8")
    assert code == 1
    assert_one_line_error(err, "must be a .sciz file")
    (tmp_path / "a.sciz").write_bytes(b"x")
    code, _, err = run(
        capsys, "decompress", str(tmp_path / "a.sciz"), "-o", str(tmp_path / "o.png")
    )
    assert code == 1
    assert_one_line_error(err, "unsupported output type")


def test_compress_existing_output_refused_before_fitting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "a.npy"
    np.save(src, volume())
    out = tmp_path / "a.sciz"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "compress", str(src), "-o", str(out), "--ratio", "4")
    assert code == 1
    assert_one_line_error(err, "use --force")
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_missing_output_folder_refused_before_any_work(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    src = tmp_path / "a.npy"
    np.save(src, volume())
    if command == "decompress":
        src = tmp_path / "a.sciz"
        src.write_bytes(b"not read: the output is checked first")

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(cli_compress, "_codec", no_fit)
    monkeypatch.setattr(cli_decompress, "_codec", no_fit)
    for out, message in [
        (tmp_path / "nodir" / "o.tif", "no such folder"),
        (src / "o.tif", "is not a folder"),
    ]:
        if command == "compress":
            out = out.with_suffix(".sciz")
        argv = [command, str(src), "-o", str(out)]
        code, _, err = run(capsys, *argv, *(["--ratio", "4"] if command == "compress" else []))
        assert code == 1
        assert_one_line_error(err, message)
        assert not out.parent.exists() or out.parent.is_file()


def test_read_only_output_folder_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from napari_sciz.io import atomic

    src = tmp_path / "a.npy"
    np.save(src, volume())
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # chmod alone does not stop root (CI runs as root): deny the access check itself
    monkeypatch.setattr(atomic.os, "access", lambda p, m: Path(p) != locked and real_access(p, m))
    argv = ["compress", str(src), "-o", str(locked / "a.sciz"), "--ratio", "4"]
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert_one_line_error(err, "no permission to write in")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (KeyboardInterrupt(), 130, "cancelled; no output written"),
        (MemoryError(), 1, "out of memory"),
        (PermissionError(13, "Permission denied", "/x/y.tif"), 1, "Permission denied: /x/y.tif"),
        (InvalidInputError("bad\nsecond line"), 1, "bad"),
    ],
)
def test_errors_are_one_line_and_debug_shows_traceback(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    exc: BaseException,
    code: int,
    message: str,
) -> None:
    def boom(path: object, **_options: object) -> None:
        raise exc

    monkeypatch.setattr(cli_compress, "read_image", boom)
    argv = ["compress", str(tmp_path / "a.npy"), "-o", str(tmp_path / "a.sciz"), "--ratio", "4"]
    status, _, err = run(capsys, *argv)
    assert status == code
    assert_one_line_error(err, message)
    with pytest.raises(type(exc)):
        cli.main(["--debug", *argv])


def test_torch_out_of_memory_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    def boom(path: object, **_options: object) -> None:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate...")

    monkeypatch.setattr(cli_compress, "read_image", boom)
    status, _, err = run(
        capsys, "compress", "a.npy", "-o", str(tmp_path / "a.sciz"), "--ratio", "4"
    )
    assert status == 1
    assert_one_line_error(err, "out of GPU memory")


def test_delegated_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType("napari_sciz._test_delegate")
    fake.main = lambda argv: calls.append(list(argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "napari_sciz._test_delegate", fake)
    monkeypatch.setitem(cli._DELEGATES, "bench", "napari_sciz._test_delegate")
    code, _, _ = run(capsys, "--debug", "bench", "--quick", "-o", "x", "--help")
    assert code == 3
    assert calls == [["--quick", "-o", "x", "--help"]]
    # a missing module gives a clear one-line message
    monkeypatch.setitem(cli._DELEGATES, "demo", "napari_sciz._no_such_module_for_tests")
    code, _, err = run(capsys, "demo", "--fast")
    assert code == 1
    assert_one_line_error(err, "'demo' command is not available")


def test_progress_bar_on_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = _Progress(stream, enabled=True)
    for step in (1, 50, 100):
        bar._last = 0.0  # defeat throttling
        bar(
            types.SimpleNamespace(
                fraction=step / 100,
                step=step,
                total_steps=100,
                loss=0.1,
                psnr=30.0 + step / 10,
                eta_seconds=100 - step,
                block=0,
                n_blocks=1,
            )
        )
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "PSNR 40.00 dB" in text and "ETA 0:00" in text and "100%" in text
    quiet = io.StringIO()
    _Progress(quiet, enabled=False)(types.SimpleNamespace(fraction=0.5))
    assert quiet.getvalue() == ""
    lines = io.StringIO()  # not a TTY: plain lines, no carriage returns
    _Progress(lines, enabled=True, line_interval=0)(types.SimpleNamespace(fraction=0.5))
    assert "\r" not in lines.getvalue() and "50%" in lines.getvalue()


# ---------------------------------------------------------------------------------------------
# with the real codec
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Compress a small .npy once (JSON output) for the tests below."""
    if not HAVE_CODEC:
        pytest.skip("napari_sciz.core.api not available")
    d = tmp_path_factory.mktemp("cli")
    data = volume()
    src = d / "vol.npy"
    np.save(src, data)
    out = d / "vol.sciz"
    stdout = io.StringIO()
    stderr = io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        code = cli.main(
            ["compress", str(src), "-o", str(out), "--ratio", "4", "--steps", STEPS, "--json",
             "--device", "cpu"]
        )  # fmt: skip
    finally:
        sys.stdout, sys.stderr = old
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "data": data,
        "src": src,
        "out": out,
        "dir": d,
    }


@needs_codec
def test_compress_json(compressed: dict[str, Any]) -> None:
    assert compressed["code"] == 0, compressed["stderr"]
    lines = compressed["stdout"].strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    for key in ("ratio", "psnr", "ssim", "max_error", "encode_seconds", "device", "shape", "dtype"):
        assert key in summary
    assert summary["output"] == str(compressed["out"])
    assert summary["nbytes"] == compressed["out"].stat().st_size
    assert list(summary["shape"]) == [8, 32, 32]
    assert summary["dtype"] == "uint16"
    assert summary["ratio"] >= 4 * 0.999
    assert "fitting" not in compressed["stderr"]  # no progress output with --json


class _ClosedPipe(io.StringIO):
    """Standard output whose reader went away (``sciz info F | head``)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@needs_codec
def test_a_closed_pipe_ends_quietly(
    capsys: pytest.CaptureFixture[str], compressed: dict[str, Any], monkeypatch
) -> None:
    """Output cut off by its reader is not an error message: status 141, nothing on stderr."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["info", str(compressed["out"])]) == 141
    assert capsys.readouterr().err == ""


@needs_codec
def test_info(capsys: pytest.CaptureFixture[str], compressed: dict[str, Any]) -> None:
    sciz = compressed["out"]
    code, out, err = run(capsys, "info", str(sciz), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["shape"] == [8, 32, 32] and info["dtype"] == "uint16"
    assert info["axes"] == "ZYX"
    assert info["file_size"] == sciz.stat().st_size
    assert info["ratio"] == pytest.approx(8 * 32 * 32 * 2 / sciz.stat().st_size)
    assert isinstance(info["header"], dict) and info["header"]
    code, out, err = run(capsys, "info", str(sciz))
    assert code == 0, err
    assert "8x32x32" in out and "uint16" in out and "ratio" in out
    for key in info["header"]:  # every header field is shown, generically
        assert key in out


@needs_codec
@pytest.mark.parametrize("ext", [".npy", ".tif", ".ome.tif"])
def test_decompress_round_trip(
    capsys: pytest.CaptureFixture[str], compressed: dict[str, Any], ext: str
) -> None:
    out = compressed["dir"] / f"dec{ext}"
    code, stdout, err = run(capsys, "decompress", str(compressed["out"]), "-o", str(out))
    assert code == 0, err
    assert "wrote" in stdout
    if ext == ".npy":
        arr = np.load(out)
    else:
        arr = tifffile.imread(out)
    assert arr.shape == (8, 32, 32) and arr.dtype == np.uint16
    err_max = np.abs(arr.astype(float) - compressed["data"].astype(float)).max()
    assert err_max < 20000  # a reconstruction, not garbage
    # existing output without --force, then with --force
    code, _, err = run(capsys, "decompress", str(compressed["out"]), "-o", str(out))
    assert code == 1
    assert_one_line_error(err, "use --force")
    code, _, err = run(capsys, "decompress", str(compressed["out"]), "-o", str(out), "--force")
    assert code == 0, err


@needs_codec
def test_decompress_roi(capsys: pytest.CaptureFixture[str], compressed: dict[str, Any]) -> None:
    out = compressed["dir"] / "roi.npy"
    code, _, err = run(
        capsys, "decompress", str(compressed["out"]), "-o", str(out), "--roi", "2:6,:,8:24"
    )
    assert code == 0, err
    assert np.load(out).shape == (4, 32, 16)
    # fewer entries than axes apply to the last axes
    code, _, err = run(
        capsys, "decompress", str(compressed["out"]), "-o", str(out), "--roi", "4:20,:", "--force"
    )
    assert code == 0, err
    assert np.load(out).shape == (8, 16, 32)


@needs_codec
@pytest.mark.parametrize("roi", ["0:99,:,:", "0:1,0:4,0:8,0:8", "a:b,:,:", "5:2,:,:", "0:4,40:50"])
def test_bad_roi(capsys: pytest.CaptureFixture[str], compressed: dict[str, Any], roi: str) -> None:
    out = compressed["dir"] / "badroi.tif"
    code, _, err = run(capsys, "decompress", str(compressed["out"]), "-o", str(out), "--roi", roi)
    assert code == 1
    assert_one_line_error(err, "")
    assert not out.exists()


@needs_codec
def test_corrupted_sciz(capsys: pytest.CaptureFixture[str], compressed: dict[str, Any]) -> None:
    d = compressed["dir"]
    garbage = d / "garbage.sciz"
    garbage.write_bytes(b"definitely not a sciz file" * 10)
    good = compressed["out"].read_bytes()
    truncated = d / "truncated.sciz"
    truncated.write_bytes(good[: len(good) // 2])
    flipped = d / "flipped.sciz"
    flipped.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))
    for bad in (garbage, truncated, flipped):
        out = d / f"{bad.stem}.tif"
        code, _, err = run(capsys, "decompress", str(bad), "-o", str(out))
        assert code == 1, bad
        assert_one_line_error(err, "")
        assert not out.exists()
    for bad in (garbage, truncated):
        code, _, err = run(capsys, "info", str(bad))
        assert code == 1
        assert_one_line_error(err, "")


@needs_codec
def test_tif_round_trip_with_voxel_size(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = volume((6, 24, 20))
    src = tmp_path / "stack.tif"
    tifffile.imwrite(
        src,
        data,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 3.0, "unit": "um"},
    )
    sciz = tmp_path / "stack.sciz"
    code, out, err = run(
        capsys, "compress", str(src), "-o", str(sciz), "--ratio", "3", "--steps", STEPS,
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    for key in ("ratio", "PSNR", "SSIM", "max error", "time", "device"):
        assert key in out
    code, out, err = run(capsys, "info", str(sciz), "--json")
    info = json.loads(out)
    assert info["voxel_size"] == pytest.approx([3.0, 0.5, 0.5])
    dec = tmp_path / "dec.ome.tif"
    code, _, err = run(capsys, "decompress", str(sciz), "-o", str(dec))
    assert code == 0, err
    from napari_sciz.io import read_image

    img = read_image(dec)
    assert img.data.shape == data.shape and img.data.dtype == data.dtype
    assert img.axes == "ZYX"
    assert img.voxel_size == pytest.approx((3.0, 0.5, 0.5))
    # a region at twice the resolution: voxel size halves where the sampling doubled
    dec2 = tmp_path / "dec2.tif"
    code, _, err = run(
        capsys, "decompress", str(sciz), "-o", str(dec2), "--roi", "0:2,0:10,0:10", "--scale", "2"
    )
    assert code == 0, err
    img2 = read_image(dec2)
    factors = [n / e for n, e in zip(img2.data.shape, (2, 10, 10), strict=True)]
    expected = tuple(v / f for v, f in zip((3.0, 0.5, 0.5), factors, strict=True))
    assert img2.voxel_size == pytest.approx(expected)


def test_effort_preset_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--effort`` reaches the encoder as a time budget sized by the data."""
    from napari_sciz.core import plan

    seen: list[float] = []
    real = plan.effort_budget

    def spy(effort: str, nbytes: int) -> float:
        seen.append(nbytes)
        return real(effort, nbytes)

    monkeypatch.setitem(plan.EFFORT_PRESETS, "fast", (2.0, 0.0))
    monkeypatch.setattr("napari_sciz.core.api.effort_budget", spy)
    src = tmp_path / "a.npy"
    vol = volume()
    np.save(src, vol)
    out = tmp_path / "a.sciz"
    code, _, err = run(
        capsys, "compress", str(src), "-o", str(out), "--ratio", "4", "--effort", "fast"
    )
    assert code == 0, err
    assert out.exists() and vol.nbytes in seen


def test_a_boolean_mask_is_compressed_losslessly_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = np.zeros((4, 32, 32), bool)
    mask[:, 5:20, 8:30] = True
    np.save(tmp_path / "mask.npy", mask)
    code, out, err = run(capsys, "compress", str(tmp_path / "mask.npy"), "-o",
                         str(tmp_path / "m.sciz"), "--ratio", "10")  # fmt: skip
    assert code == 0 and "(lossless)" in out
    assert "boolean mask is coded losslessly" in err
    code, _out, _err = run(capsys, "decompress", str(tmp_path / "m.sciz"), "-o",
                           str(tmp_path / "back.tif"))  # fmt: skip
    assert code == 0
    back = tifffile.imread(tmp_path / "back.tif")
    assert back.dtype == np.bool_ and np.array_equal(back, mask)
    hybrid = ["--ratio", "10", "--mode", "hybrid"]
    code, _out, err = run(capsys, "compress", str(tmp_path / "mask.npy"), "-o",
                          str(tmp_path / "h.sciz"), *hybrid)  # fmt: skip
    assert code != 0
    assert_one_line_error(err, "boolean mask")


def test_a_64_bit_integer_npy_is_coded_in_the_type_that_holds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """numpy's default integer: coded as the smallest type that keeps every value, said."""
    image = (np.arange(4 * 24 * 24).reshape(4, 24, 24) % 3000).astype(np.int64)
    np.save(tmp_path / "i.npy", image)
    code, out, err = run(capsys, "compress", str(tmp_path / "i.npy"), "-o",
                         str(tmp_path / "i.sciz"), "--mode", "lossless")  # fmt: skip
    assert code == 0 and "coded as uint16, which keeps every value" in err
    code, _out, _err = run(capsys, "decompress", str(tmp_path / "i.sciz"), "-o",
                           str(tmp_path / "back.npy"))  # fmt: skip
    back = np.load(tmp_path / "back.npy")
    assert code == 0 and back.dtype == np.uint16 and np.array_equal(back, image)


def test_a_colour_npy_is_coded_channels_first_and_decodes_in_its_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An (Y, X, 3) .npy (no axes in the file) is coded with its samples as channels, and
    ``sciz decompress`` writes it back in its own layout."""
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([(y * 5) % 256, (x * 4) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    code, out, _err = run(capsys, "compress", str(tmp_path / "rgb.npy"), "-o",
                          str(tmp_path / "rgb.sciz"), "--mode", "lossless")  # fmt: skip
    assert code == 0 and "40x48x3 uint8 (YXC)" in out
    code, _out, _err = run(capsys, "decompress", str(tmp_path / "rgb.sciz"), "-o",
                           str(tmp_path / "back.npy"), "--roi", "5:20,:,:")  # fmt: skip
    assert code == 0 and np.array_equal(np.load(tmp_path / "back.npy"), rgb[5:20])
    # to TIFF: one RGB page, which compresses again as a colour image
    code, _out, _err = run(capsys, "decompress", str(tmp_path / "rgb.sciz"), "-o",
                           str(tmp_path / "back.tif"))  # fmt: skip
    with tifffile.TiffFile(tmp_path / "back.tif") as tif:
        assert len(tif.pages) == 1 and np.array_equal(tif.asarray(), rgb)
    code, out, _err = run(capsys, "compress", str(tmp_path / "back.tif"), "-o",
                          str(tmp_path / "again.sciz"), "--mode", "lossless")  # fmt: skip
    assert code == 0 and "40x48x3 uint8 (YXC)" in out


def test_a_multi_series_tiff_says_which_series_it_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A multi-position TIFF: series 0 by default, another with ``--series``, each said; a
    series the file does not hold is a one-line error."""
    first = volume((4, 24, 20))
    second = volume((3, 16, 16))[::-1].copy()
    with tifffile.TiffWriter(tmp_path / "pos.tif") as tif:
        tif.write(first)
        tif.write(second)
    for series, image in ((None, first), ("1", second)):
        out = tmp_path / f"s{series}.sciz"
        extra = () if series is None else ("--series", series)
        code, _out, err = run(capsys, "compress", str(tmp_path / "pos.tif"), "-o", str(out),
                              "--mode", "lossless", *extra)  # fmt: skip
        shape = "x".join(map(str, image.shape))
        assert code == 0, err
        assert f"pos.tif holds 2 image series; this file codes series {series or 0} ({shape}" in err
        code, _out, _err = run(capsys, "decompress", str(out), "-o", str(tmp_path / "b.npy"),
                               "--force")  # fmt: skip
        assert code == 0 and np.array_equal(np.load(tmp_path / "b.npy"), image)
    code, _out, err = run(capsys, "compress", str(tmp_path / "pos.tif"), "-o",
                          str(tmp_path / "x.sciz"), "--series", "2")  # fmt: skip
    assert code != 0 and not (tmp_path / "x.sciz").exists()
    assert_one_line_error(err, "pos.tif holds 2 image series (0 to 1), not series 2")
    code, _out, err = run(capsys, "compress", str(tmp_path / "pos.tif"), "-o",
                          str(tmp_path / "x.sciz"), "--series", "-1")  # fmt: skip
    assert code == 2 and "must be an integer >= 0" in err


def test_several_inputs_are_compressed_into_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sciz compress a.tif b.npy c.tif -o DIR``: one .sciz per input, a failing input
    reported without stopping the others (exit 1), ``--skip-existing`` resumes."""
    a, b = volume((3, 20, 18)), volume((2, 16, 24), "uint8")
    tifffile.imwrite(tmp_path / "a.ome.tif", a)
    np.save(tmp_path / "b.npy", b)
    (tmp_path / "c.tif").write_bytes(b"not a tiff")
    folder = tmp_path / "out"
    folder.mkdir()
    inputs = [str(tmp_path / n) for n in ("a.ome.tif", "c.tif", "b.npy")]
    code, out, err = run(capsys, "compress", *inputs, "-o", str(folder), "--mode", "lossless")
    assert code == 1
    assert sorted(p.name for p in folder.iterdir()) == ["a.sciz", "b.sciz"]
    assert "[2/3] " in err and "cannot read c.tif" in err
    assert "2 files written to" in err and "1 failed: c.tif" in err
    for name, image in (("a", a), ("b", b)):
        code, _out, _err = run(capsys, "decompress", str(folder / f"{name}.sciz"), "-o",
                               str(tmp_path / f"{name}_back.npy"))  # fmt: skip
        assert code == 0 and np.array_equal(np.load(tmp_path / f"{name}_back.npy"), image)
    # resume: the files written are left, the others tried again
    stamp = (folder / "a.sciz").stat().st_mtime_ns
    code, out, err = run(capsys, "compress", *inputs, "-o", str(folder), "--mode", "lossless",
                         "--skip-existing", "--json")  # fmt: skip
    assert code == 1 and (folder / "a.sciz").stat().st_mtime_ns == stamp
    assert out == "" and "cannot read c.tif" in err
    code, out, _err = run(capsys, "compress", inputs[0], inputs[2], "-o", str(folder),
                          "--mode", "lossless", "--force", "--json")  # fmt: skip
    assert code == 0 and [json.loads(line)["mode"] for line in out.splitlines()] == ["lossless"] * 2
    # one input and a folder: written there under its name
    (folder / "a.sciz").unlink()
    code, _out, _err = run(capsys, "compress", inputs[0], "-o", str(folder), "--mode", "lossless")
    assert code == 0 and (folder / "a.sciz").exists()


def test_a_batch_checks_its_folder_and_names_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tifffile.imwrite(tmp_path / "a.tif", volume((2, 16, 16)))
    (tmp_path / "sub").mkdir()
    tifffile.imwrite(tmp_path / "sub" / "a.tif", volume((2, 16, 16)))
    two = [str(tmp_path / "a.tif"), str(tmp_path / "sub" / "a.tif")]
    code, _out, err = run(capsys, "compress", *two, "-o", str(tmp_path / "x.sciz"), "--ratio", "8")
    assert code == 1 and not (tmp_path / "x.sciz").exists()
    assert_one_line_error(err, "with 2 inputs, -o names the folder they are written to")
    code, _out, err = run(capsys, "compress", *two, "-o", str(tmp_path), "--ratio", "8")
    assert code == 1 and not list(tmp_path.glob("*.sciz"))
    assert_one_line_error(err, "would both be written to")
    code, _out, err = run(capsys, "compress", *two, "-o", str(tmp_path / "new"), "--ratio", "8")
    assert_one_line_error(err, "(create it first)")
    labels = str(tmp_path / "a.tif")
    code, _out, err = run(capsys, "compress", two[0], str(tmp_path / "b.tif"), "-o",
                          str(tmp_path / "sub"), "--guidance", "segmentation", "--labels",
                          labels, "--ratio", "8")  # fmt: skip
    assert_one_line_error(err, "--labels belongs to one input")


def test_an_rgb_tiff_of_other_software_decodes_to_rgb_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A camera's RGB TIFF (no napari-sciz description) is coded as a colour image and
    written back as RGB pixels, the layout other viewers show in colour."""
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([(y * 5) % 256, (x * 4) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "cam.tif", rgb, photometric="rgb")
    code, out, _err = run(capsys, "compress", str(tmp_path / "cam.tif"), "-o",
                          str(tmp_path / "cam.sciz"), "--mode", "lossless")  # fmt: skip
    assert code == 0 and "40x48x3 uint8 (YXC)" in out
    code, _out, _err = run(capsys, "decompress", str(tmp_path / "cam.sciz"), "-o",
                           str(tmp_path / "back.tif"))  # fmt: skip
    with tifffile.TiffFile(tmp_path / "back.tif") as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        assert np.array_equal(tif.asarray(), rgb)


def test_a_cancelled_batch_says_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the second file: the first is kept, the second not written, and the
    message says so (not "no output written")."""
    for name in ("a", "b", "c"):
        tifffile.imwrite(tmp_path / f"{name}.tif", volume((2, 16, 16)))
    real = cli_compress._compress_one
    calls = []

    def interrupted(args: Any) -> int:
        calls.append(args.input)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(cli_compress, "_compress_one", interrupted)
    (tmp_path / "out").mkdir()
    inputs = [str(tmp_path / f"{n}.tif") for n in ("a", "b", "c")]
    code, _out, err = run(capsys, "compress", *inputs, "-o", str(tmp_path / "out"),
                          "--mode", "lossless")  # fmt: skip
    assert code == 130 and [p.name for p in (tmp_path / "out").iterdir()] == ["a.sciz"]
    assert "cancelled during" in err and "b.tif (not written); 1 file written" in err


def test_info_of_several_files_lists_them_with_their_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    for name, shape in (("a", (3, 20, 18)), ("b", (2, 16, 24))):
        tifffile.imwrite(tmp_path / f"{name}.tif", volume(shape))
    inputs = [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]
    assert run(capsys, "compress", *inputs, "-o", str(folder), "--mode", "lossless")[0] == 0
    files = [str(folder / "a.sciz"), str(folder / "b.sciz")]
    code, out, err = run(capsys, "info", *files, str(tmp_path / "a.tif"))
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 4 and lines[0].split() == ["file", "size", "shape", "mode",
                                                                  "ratio"]  # fmt: skip
    assert "3x20x18 uint16" in lines[1] and "lossless" in lines[2]
    raw = (3 * 20 * 18 + 2 * 16 * 24) * 2
    packed = sum(Path(f).stat().st_size for f in files)
    assert lines[3].startswith("2 files: ") and f"{raw / packed:.1f}x overall" in lines[3]
    assert_one_line_error(err, "a.tif: not a .sciz file")
    code, out, _err = run(capsys, "info", *files, "--json")
    assert code == 0 and [json.loads(line)["shape"] for line in out.splitlines()] == [
        [3, 20, 18], [2, 16, 24]]  # fmt: skip


def test_several_files_are_decoded_into_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sciz decompress a.sciz b.sciz -o DIR [--format F]``: one image per file, a region
    of each with ``--roi``; ``--format`` needs a folder."""
    images = {"a": volume((3, 20, 18)), "b": volume((2, 16, 24), "uint8")}
    for name, image in images.items():
        np.save(tmp_path / f"{name}.npy", image)
    packed = tmp_path / "packed"
    packed.mkdir()
    inputs = [str(tmp_path / f"{n}.npy") for n in images]
    assert run(capsys, "compress", *inputs, "-o", str(packed), "--mode", "lossless")[0] == 0
    files = [str(packed / f"{n}.sciz") for n in images]
    back = tmp_path / "back"
    back.mkdir()
    code, _out, _err = run(capsys, "decompress", *files, "-o", str(back))
    assert code == 0
    for name, image in images.items():
        assert np.array_equal(tifffile.imread(back / f"{name}.tif"), image)
    code, _out, _err = run(capsys, "decompress", *files, "-o", str(back), "--format", "npy",
                           "--roi", "0:1,:,:")  # fmt: skip
    for name, image in images.items():
        assert np.array_equal(np.load(back / f"{name}.npy"), image[:1])
    code, _out, err = run(capsys, "decompress", files[0], "-o", str(tmp_path / "x.tif"),
                          "--format", "npy")  # fmt: skip
    assert code == 1 and not (tmp_path / "x.tif").exists()
    assert_one_line_error(err, "--format is for a folder -o")
