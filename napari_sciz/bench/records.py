"""What a benchmark writes: marked sections of a markdown file, JSON records, ratio keys."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["lossless_ratio_text", "lossless_table", "update_section", "write_json"]


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"


def lossless_ratio_text(entry: dict, best: float | None) -> str:
    """Markdown text of a lossless ratio: bold when it is the best exact one, flagged if inexact."""
    txt = f"{entry['ratio']:.3f}"
    if not entry["exact"]:
        return txt + " (not exact!)"
    if best is not None and entry["ratio"] == best:
        return f"**{txt}**"
    return txt


def lossless_table(
    volumes: list[dict[str, Any]],
    label: Callable[[dict[str, Any]], str],
    cell: Callable[[dict[str, Any], dict[str, Any], str], str],
) -> list[str]:
    """Markdown lines of a lossless table: a column per codec (in order of appearance), a row
    per volume with lossless entries, first cell ``label(volume)``, then
    ``cell(volume, entry, ratio_text)`` (:func:`lossless_ratio_text`: bold for the best exact
    ratio) or ``n/a``; no lines when no volume has entries."""
    names: list[str] = []
    for vol in volumes:
        for e in vol.get("lossless", []):
            if e["codec"] not in names:
                names.append(e["codec"])
    if not names:
        return []
    lines = ["| volume | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for vol in volumes:
        entries = {e["codec"]: e for e in vol.get("lossless", [])}
        if not entries:
            continue
        best = max((e["ratio"] for e in entries.values() if e["exact"]), default=None)
        row = [label(vol)]
        for n in names:
            e = entries.get(n)
            row.append("n/a" if e is None else cell(vol, e, lossless_ratio_text(e, best)))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def update_section(path: str | os.PathLike[str], key: str, markdown: str) -> Path:
    """Replace (or append) one marked section of a markdown file, leaving the rest untouched.

    The section is everything between ``<!-- bench:KEY:start -->`` and ``<!-- bench:KEY:end -->``
    (markers included, each on its own line).  A missing file is created with a ``# Benchmarks``
    title; a file without the markers gets the section appended.  The file is replaced atomically.

    Parameters
    ----------
    path : path-like
        The markdown file (e.g. ``docs/benchmarks.md``).
    key : str
        Section name (``"lossy"``, ``"classical"``, ``"lossless"``, ``"guidance"`` ...).
    markdown : str
        New content of the section (without the markers).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If the key is not a plain word, or the file has a start marker without an end marker
        (or several sections with that key).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "b.md"
    >>> _ = update_section(p, "demo", "hello")
    >>> _ = update_section(p, "demo", "bye")
    >>> "bye" in p.read_text() and "hello" not in p.read_text()
    True
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", key or ""):
        raise ValueError(f"invalid section key {key!r}")
    target = Path(path)
    start, end = _markers(key)
    block = f"{start}\n{markdown.strip()}\n{end}\n"
    text = target.read_text(encoding="utf-8") if target.exists() else "# Benchmarks\n"
    n_start, n_end = text.count(start), text.count(end)
    if n_start == 0 and n_end == 0:
        new = text.rstrip("\n") + "\n\n" + block
    elif n_start == 1 and n_end == 1 and text.index(start) < text.index(end):
        i = text.index(start)
        j = text.index(end) + len(end)
        tail = text[j:]
        tail = tail[1:] if tail.startswith("\n") else tail
        new = text[:i] + block + tail
    else:
        raise ValueError(
            f"{target}: malformed section {key!r} ({n_start} start / {n_end} end markers)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` as JSON, atomically (numpy scalars as numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    text = json.dumps(record, indent=1, default=default, allow_nan=True)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt_ratio(r: float) -> str:
    return f"{r:g}x"
