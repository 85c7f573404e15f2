"""What the benchmark scripts share: output options, the record's header, writing results."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .environment import environment_info
from .records import update_section
from .volumes import find_data_dir

__all__ = [
    "add_output_options",
    "comma_list",
    "header_lines",
    "new_record",
    "require_data_dir",
    "write_results",
]


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--out`` (markdown to update), ``--json`` (raw record) and ``--note``."""
    p.add_argument("--out", type=Path, default=None, help="markdown file to update")
    p.add_argument("--json", type=Path, default=None, help="write the raw record here")
    p.add_argument("--note", default=None)


def require_data_dir(p: argparse.ArgumentParser) -> Path:
    """The shared data folder, or the parser's usage error when there is none."""
    data = find_data_dir()
    if data is None:
        p.error("no data folder (../shared/data) found")
    return data


def comma_list(text: str | None) -> list[str]:
    """The non-empty items of a comma-separated option."""
    return [item for item in (text or "").split(",") if item]


def new_record(
    prog: str, argv: Sequence[str] | None, device: str, note: str | None, **fields: Any
) -> dict[str, Any]:
    """The record's environment, date, command line, device and note, then ``fields``."""
    return {
        "environment": environment_info(device),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([prog, *(argv if argv is not None else sys.argv[1:])]),
        "device": device,
        "note": note,
        **fields,
    }


def write_results(
    record: dict[str, Any], text: str, args: argparse.Namespace, section: str
) -> None:
    """Write the JSON record (``--json``), replace ``section`` of ``--out``, print ``text``."""
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2, default=float))
    if args.out is not None:
        update_section(args.out, section, text)
    print(text)


def header_lines(title: str, record: dict[str, Any], *extra: str) -> list[str]:
    """A section's title and its record's machine, date, command, ``extra`` and note lines."""
    env = record["environment"]
    lines = [
        f"## {title}",
        "",
        f"- **machine**: {env.get('cpu', '?')}; torch {env.get('torch', '?')}",
        f"- **date**: {record['date']}",
        f"- **command**: `{record['command']}`",
        *extra,
    ]
    if record.get("note"):
        lines.append(f"- **note**: {record['note']}")
    return lines
