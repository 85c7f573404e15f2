"""What a compression job reports: :class:`ProgressInfo` while it runs, :class:`CompressResult`
when it is done, and how its ``cancel`` argument is read (:func:`cancel_predicate`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .bitstream import container
from .plan import FORMAT_MODE

__all__ = ["CompressResult", "ProgressInfo", "cancel_predicate", "with_header_keys"]


@dataclass
class ProgressInfo:
    """Progress of a compression job, passed to the ``progress`` callback.

    Attributes
    ----------
    fraction : float
        Overall progress in ``[0, 1]``.
    step, total_steps : int, int or None
        Training step of the current block (``total_steps`` is None with a time budget).
    loss, psnr : float
        Current training loss and PSNR estimate (dB, on the training batch).
    eta_seconds : float or None
        Estimated time left.
    block, n_blocks : int
        Index of the block being fitted and number of blocks.
    message : str
        A note for the user (e.g. a fallback after running out of GPU memory), or ``""``.
    """

    fraction: float
    step: int
    total_steps: int | None
    loss: float
    psnr: float
    eta_seconds: float | None
    block: int
    n_blocks: int
    message: str = ""


@dataclass
class CompressResult:
    """The outcome of :func:`compress`.

    Attributes
    ----------
    data : bytes
        The complete ``.sciz`` file.
    reconstruction : numpy.ndarray
        What :func:`decompress` returns for ``data`` (original shape and dtype).
    header : dict
        The file header.
    ratio, nbytes, raw_nbytes : float, int, int
        Achieved ratio, file size and raw size of the input.
    psnr, ssim, max_error : float
        Quality of the reconstruction (definitions of :mod:`napari_sciz.core.metrics`).
    encode_seconds : float
        Wall-clock time of the compression.
    device : str
        Device the fit ran on.
    messages : list of str
        Notes for the user (fallbacks and the like).
    """

    data: bytes
    reconstruction: np.ndarray | None
    header: dict
    ratio: float
    nbytes: int
    raw_nbytes: int
    psnr: float
    ssim: float
    max_error: float
    encode_seconds: float
    device: str
    messages: list[str] = field(default_factory=list)

    @classmethod
    def measured(
        cls,
        original: np.ndarray,
        blob: bytes,
        header: dict,
        reconstruction: np.ndarray,
        *,
        raw_nbytes: int,
        encode_seconds: float,
        device: str,
        messages: Sequence[str] = (),
    ) -> CompressResult:
        """The result of the file ``blob`` that decodes to ``reconstruction``, its quality
        measured against ``original``."""
        from .metrics import max_abs_error, psnr, ssim

        return cls(
            data=blob,
            reconstruction=reconstruction,
            header=header,
            ratio=raw_nbytes / len(blob),
            nbytes=len(blob),
            raw_nbytes=raw_nbytes,
            psnr=psnr(original, reconstruction),
            ssim=ssim(original, reconstruction),
            max_error=max_abs_error(original, reconstruction),
            encode_seconds=encode_seconds,
            device=device,
            messages=list(messages),
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the original array (a colour image's samples last again when it was
        coded channels first, header ``channels_last``)."""
        shape = tuple(self.header["shape"])
        return (*shape[1:], shape[0]) if self.header.get("channels_last") else shape

    @property
    def dtype(self) -> np.dtype:
        """dtype of the original array (a colour image coded as decorrelated planes, header
        ``colour_transform``, says its own)."""
        transform = self.header.get("colour_transform")
        if isinstance(transform, dict) and "dtype" in transform:
            return np.dtype(transform["dtype"])
        return np.dtype(self.header["dtype"])

    def save(
        self, path: str | os.PathLike[str], *, force: bool = False, inputs: Sequence[Any] = ()
    ) -> Path:
        """Write the ``.sciz`` file atomically.

        Parameters
        ----------
        path : path-like
            Destination.
        force : bool
            Overwrite an existing file (never one of ``inputs``).
        inputs : sequence of path-like
            Input files that must not be overwritten.
        """
        return container.write_atomic(path, self.data, force=force, inputs=inputs)

    def summary(self) -> dict:
        """JSON-serialisable summary of the result."""
        return {
            "ratio": self.ratio,
            "target_ratio": self.header.get("target_ratio"),
            "nbytes": self.nbytes,
            "raw_nbytes": self.raw_nbytes,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "max_error": self.max_error,
            "encode_seconds": self.encode_seconds,
            "device": self.device,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "blocks": self.header.get("blocks", {}).get("count"),
            "steps": self.header.get("encoder", {}).get("steps"),
            "guidance": self.header.get("guidance", "none"),
            "mode": self.header.get("mode", FORMAT_MODE),
        }


def cancel_predicate(cancel: Any) -> Callable[[], bool] | None:
    """The ``cancel`` argument of a job as a predicate (``None``: the job cannot be cancelled).

    Parameters
    ----------
    cancel : callable, threading.Event or None
        A callable returning True to cancel, or an event that cancels once set.

    Raises
    ------
    InvalidInputError
        ``cancel`` is neither.
    """
    if cancel is None:
        return None
    if hasattr(cancel, "is_set"):
        return cancel.is_set  # threading.Event
    if callable(cancel):
        return cancel
    raise InvalidInputError("cancel must be a callable or a threading.Event")


def with_header_keys(result: CompressResult, keys: dict[str, Any]) -> CompressResult:
    """``result`` with ``keys`` added to its file's header (the container re-packed; the
    payloads unchanged)."""
    with container.SciZFile(result.data) as sciz:
        header = {**sciz.header, **keys}
        payloads = [sciz.payload(i) for i in range(sciz.n_payloads)]
    data = container.pack(header, payloads)
    return replace(
        result, data=data, header=header, nbytes=len(data), ratio=result.raw_nbytes / len(data)
    )
