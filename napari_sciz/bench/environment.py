"""The machine a benchmark ran on, for its report header."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

__all__ = ["environment_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ffmpeg_version() -> str | None:
    from .classical import ffmpeg_path

    exe = ffmpeg_path()
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.replace("ffmpeg version ", "").split(" Copyright")[0].strip() or None


def environment_info(device: str | None) -> dict[str, Any]:
    """Describe the machine for the report header.

    Parameters
    ----------
    device : str or None
        The torch device our codec runs on (``None`` when it does not run).

    Returns
    -------
    dict
        ``device`` (GPU name for CUDA, else CPU model and core count), ``cpu``, ``torch``,
        ``imagecodecs``, ``ffmpeg``, ``python``, ``platform``.
    """
    cpu = f"{_cpu_model()} ({os.cpu_count()} cores)"
    info: dict[str, Any] = {
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": None,
        "device": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if device is not None and device.startswith("cuda") and torch.cuda.is_available():
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            info["device"] = f"{device}: {torch.cuda.get_device_name(index)}"
        elif device is not None and device.startswith("mps"):
            info["device"] = f"mps (Apple GPU), host {cpu}"
    except ImportError:
        pass
    if info["device"] is None:
        info["device"] = f"cpu: {cpu}" if device is not None else None
    try:
        import imagecodecs

        info["imagecodecs"] = imagecodecs.__version__
    except ImportError:
        info["imagecodecs"] = None
    info["ffmpeg"] = _ffmpeg_version()
    return info
