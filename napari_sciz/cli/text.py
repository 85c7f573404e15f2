"""What the ``sciz`` command prints: JSON, tables, sizes, times and the progress bar."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

PROG = "sciz"
_CANCELLED = "cancelled; no output written"


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and non-finite floats for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.dtype):
        return str(value)
    return str(value)


def _dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False)


def _human_bytes(n: int | float) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        if len(value) > 8:
            return f"[{len(value)} items]"
        return "(" + ", ".join(_fmt_value(v) for v in value) + ")"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.generic):
        return _fmt_value(value.item())
    return str(value)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def file_error(name: str, exc: BaseException) -> str:
    """The one line ``sciz: error: ...`` for a file of several that failed, naming it
    unless its message already does."""
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    named = Path(name).name in message  # (most messages name the file already)
    return f"{PROG}: error: {'' if named else name + ': '}{message}"


def _print_table(rows: Sequence[tuple[str, Any]], out: IO[str]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"  {key:<{width}}  {_fmt_value(value)}", file=out)


class _Progress:
    """Progress reporting on stderr: a redrawn bar on a TTY, occasional lines otherwise."""

    def __init__(self, stream: IO[str], *, enabled: bool, line_interval: float = 15.0) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self.line_interval = line_interval
        self._last = 0.0
        self._drawn = False
        self._start = time.monotonic()

    def __call__(self, info: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        fraction = float(getattr(info, "fraction", 0.0) or 0.0)
        done = fraction >= 1.0
        interval = 0.1 if self.tty else self.line_interval
        if now - self._last < interval and not (done and self.tty):
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        parts = []
        step, total = getattr(info, "step", None), getattr(info, "total_steps", None)
        if step is not None and total:
            parts.append(f"step {step}/{total}")
        block, n_blocks = getattr(info, "block", None), getattr(info, "n_blocks", None)
        if n_blocks and n_blocks > 1 and block is not None:
            parts.append(f"block {int(block) + 1}/{n_blocks}")
        psnr = getattr(info, "psnr", None)
        if psnr is not None and math.isfinite(psnr):
            parts.append(f"PSNR {psnr:.2f} dB")
        eta = getattr(info, "eta_seconds", None)
        parts.append(f"ETA {_fmt_seconds(eta)}")
        message = getattr(info, "message", "")
        if message:
            parts.append(str(message))
        detail = "  ".join(parts)
        if self.tty:
            cols = shutil.get_terminal_size((80, 24)).columns
            text = f" {fraction:4.0%}  {detail}"
            bar_width = max(10, min(40, cols - len(text) - 12))
            filled = int(round(fraction * bar_width))
            line = f"fitting [{'#' * filled}{'.' * (bar_width - filled)}]{text}"
            self.stream.write("\r" + line[: cols - 1].ljust(cols - 1))
            self._drawn = True
        else:
            self.stream.write(f"fitting: {fraction:.0%}  {detail}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _human_size(path: Path) -> str:
    """Size of a file, or of all files under a directory (a Zarr store)."""
    if path.is_dir():
        return _human_bytes(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    return _human_bytes(path.stat().st_size)
