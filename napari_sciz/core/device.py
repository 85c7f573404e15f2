"""Device selection for fitting and decoding (torch is imported lazily)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

__all__ = ["DeviceInfo", "available_devices", "resolve_device"]

_VALID = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceInfo:
    """A compute device napari-sciz can fit on.

    Attributes
    ----------
    name : str
        The torch device string, e.g. ``"cuda:0"``, ``"mps"`` or ``"cpu"``.
    label : str
        Human-readable description (GPU name and free memory where known).
    free_bytes : int or None
        Free device memory in bytes, when the backend reports it.
    """

    name: str
    label: str
    free_bytes: int | None = None


def available_devices() -> list[DeviceInfo]:
    """List the devices that are really usable on this machine, best first.

    Returns
    -------
    list of DeviceInfo
        CUDA devices (name and free memory), then MPS, then the CPU.
    """
    import torch

    found: list[DeviceInfo] = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(index)
            try:
                free, _total = torch.cuda.mem_get_info(index)
            except RuntimeError:  # pragma: no cover - driver specific
                free = None
            label = f"CUDA {index}: {name}"
            if free is not None:
                label += f" ({free / 2**30:.1f} GiB free)"
            found.append(DeviceInfo(f"cuda:{index}", label, free))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(DeviceInfo("mps", "Apple MPS"))
    found.append(DeviceInfo("cpu", f"CPU ({torch.get_num_threads()} threads)"))
    return found


def resolve_device(device: str = "auto") -> str:
    """Turn a user device choice into a torch device string.

    Parameters
    ----------
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    str
        A device string torch accepts.

    Raises
    ------
    InvalidInputError
        If the device is unknown or not available on this machine.
    """
    import torch

    if not isinstance(device, str):
        device = str(device)
    base = device.split(":", 1)[0]
    if base not in _VALID:
        raise InvalidInputError(
            f"unknown device {device!r}; choose one of auto, cpu, cuda, cuda:N, mps"
        )
    if base == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if base == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError("device 'cuda' requested but no CUDA GPU is available")
        if ":" in device:
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise InvalidInputError(f"no CUDA device {device!r} on this machine")
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError("device 'mps' requested but Apple MPS is not available")
    return device
