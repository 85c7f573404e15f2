"""One compression run of the "Compress" widget: the worker body and its thread-safe callbacks.

Qt-free apart from the worker's signal it emits through (napari's ``thread_worker``); torch is
imported only inside the worker, when the codec is.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

import numpy as np

from ..errors import CancelledError, SciZError

__all__ = ["CompressJob", "describe_error"]

#: Minimum interval between progress updates / live previews sent to the main thread (seconds).
_PROGRESS_INTERVAL = 0.1
_PREVIEW_INTERVAL = 1.0


def _free_gpu_memory() -> None:
    """Release cached GPU memory (only if torch is already imported and CUDA is in use)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory must never fail a job  # pragma: no cover
        pass


def describe_error(exc: BaseException, device: str = "") -> str:
    """A clear, single-paragraph message for an error raised while compressing.

    Parameters
    ----------
    exc : BaseException
        The error.
    device : str
        The device that was used (for out-of-memory messages).

    Returns
    -------
    str
        The message shown in the napari notification.
    """
    text = str(exc).strip()
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        where = f" on {device}" if device and device != "auto" else ""
        return (
            f"The GPU ran out of memory{where}. Try the CPU device, 'Current plane only', "
            "a smaller layer, or close other programs using the GPU."
        )
    if isinstance(exc, MemoryError):
        return "Not enough memory (RAM) to compress this layer: try 'Current plane only'."
    if isinstance(exc, SciZError):
        return text or type(exc).__name__
    return f"Compression failed: {type(exc).__name__}: {text}"


class CompressJob:
    """One compression run: the worker body plus the thread-safe callbacks given to the codec."""

    def __init__(self, data: np.ndarray, ratio: float, options: dict[str, Any]) -> None:
        self.data: np.ndarray | None = data
        self.ratio = ratio
        self.options = options
        self.cancel_event = threading.Event()
        self.worker: Any = None
        self._last_progress = 0.0
        self._last_preview = 0.0
        self.started = time.monotonic()

    def cancelled(self) -> bool:
        """True once the user cancelled, the viewer closes, or napari asked the worker to quit."""
        worker = self.worker
        return self.cancel_event.is_set() or bool(
            worker is not None and getattr(worker, "abort_requested", False)
        )

    def _emit(self, message: tuple[str, Any]) -> None:
        worker = self.worker
        if worker is None:
            return
        try:
            worker.yielded.emit(message)  # queued to the main thread
        except RuntimeError:  # pragma: no cover - signals object already deleted
            pass

    def progress(self, info: Any) -> None:
        """Codec progress callback (worker thread): throttled and forwarded."""
        now = time.monotonic()
        fraction = float(getattr(info, "fraction", 0.0) or 0.0)
        if now - self._last_progress < _PROGRESS_INTERVAL and fraction < 1.0:
            return
        self._last_progress = now
        self._emit(("progress", info))

    def preview(self, array: Any) -> None:
        """Codec preview callback (worker thread): a copy of the reconstruction is forwarded."""
        now = time.monotonic()
        if now - self._last_preview < _PREVIEW_INTERVAL:
            return
        self._last_preview = now
        self._emit(("preview", np.array(array, dtype=np.float32, copy=True)))

    def run(self) -> Any:
        """Worker body (a generator so that napari gives it a ``yielded`` signal)."""
        yield ("status", "Loading the codec ...")
        device = str(self.options.get("device", ""))
        try:
            from ..core.api import compress

            if self.cancelled():
                raise CancelledError("cancelled before the fit started")
            self._emit(("status", "Preparing the fit (initialising the field) ..."))
            result = compress(
                self.data,
                self.ratio,
                progress=self.progress,
                preview=self.preview,
                cancel=self.cancelled,
                **self.options,
            )
            if self.cancelled():
                raise CancelledError("cancelled")
            return ("ok", result, self._task_score(result))
        except CancelledError:
            return ("cancelled", None)
        except Exception as exc:  # noqa: BLE001 - every error is reported to the user
            return ("error", describe_error(exc, device))
        finally:
            _free_gpu_memory()

    def _task_score(self, result: Any) -> dict[str, float] | None:
        """The guided task's score of the decoded volume (worker thread), or None."""
        guidance = str(self.options.get("guidance") or "none")
        if guidance == "none" or self.data is None:
            return None
        from ..core.task.score import guidance_score

        self._emit(("status", f"Scoring the {guidance} task on the decoded volume ..."))
        try:
            return guidance_score(
                guidance, self.data, result.reconstruction, self.options.get("voxel_size"),
                self.options.get("axes"),
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a score is a report; the result stands without it
            return None
