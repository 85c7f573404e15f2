"""The classical lossy codec interface: one quality parameter, bisected to a ratio."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.metrics import max_abs_error, psnr, ssim
from .bisection import bisect_quality
from .codectools import Encoded, _as_3d, timed

__all__ = ["Codec", "CodecResult"]


@dataclass(frozen=True)
class CodecResult:
    """One classical codec measured at one target ratio.

    Attributes
    ----------
    codec : str
        Registry name of the codec (``"sperr"``, ``"jpegxl"`` ...).
    target_ratio : float
        The ratio asked for.
    ratio : float
        The ratio reached (``>= target_ratio``): raw bytes / ``nbytes``.
    nbytes : int
        Bytes of the complete compressed output.
    psnr, ssim, max_error : float
        Quality of the decoded array in the original dtype (GUIDE.md definitions).
    encode_seconds, decode_seconds : float
        Wall-clock time of the final encode and of its decode.
    param : float
        The codec's quality parameter that was chosen (see :attr:`Codec.param_name`).
    """

    codec: str
    target_ratio: float
    ratio: float
    nbytes: int
    psnr: float
    ssim: float
    max_error: float
    encode_seconds: float
    decode_seconds: float
    param: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict."""
        return asdict(self)


class Codec(ABC):
    """A classical lossy codec with one quality parameter.

    Subclasses set the class attributes describing the parameter and implement :meth:`available`,
    :meth:`encode` and :meth:`decode`.

    Attributes
    ----------
    name : str
        Registry key.
    label : str
        Name for tables.
    param_name : str
        What the quality parameter is.
    increasing : bool
        Whether quality (and size) grows with the parameter.
    log : bool
        Whether the parameter is bisected on a log scale.
    integer : bool
        Whether the parameter is an integer.
    scan, window : int, float
        Extra evaluations around the boundary after the bisection (see :func:`bisect_quality`).
    numthreads : int
        Threads the codec may use (1 by default, for comparable timings on a shared machine).
    """

    name: str = ""
    label: str = ""
    param_name: str = ""
    increasing: bool = True
    log: bool = False
    integer: bool = False
    scan: int = 0
    window: float = 0.05

    def __init__(self, numthreads: int = 1) -> None:
        self.numthreads = numthreads

    @abstractmethod
    def available(self) -> bool:
        """Whether the codec can run here."""

    @abstractmethod
    def param_range(self, volume: np.ndarray, ratio: float) -> tuple[float, float]:
        """Range ``(lo, hi)`` of the quality parameter to bisect for ``volume`` at ``ratio``."""

    @abstractmethod
    def encode(self, volume: np.ndarray, param: float) -> Encoded:
        """Encode a ZYX ``volume`` with quality ``param``."""

    @abstractmethod
    def decode(self, encoded: Encoded) -> np.ndarray:
        """Decode to a ZYX array in the original dtype."""

    def _encode_timed(self, volume: np.ndarray, param: float) -> Encoded:
        enc, seconds = timed(lambda: self.encode(volume, param))
        enc.encode_seconds = seconds
        return enc

    def encode_at_ratio(
        self,
        volume: np.ndarray,
        ratio: float,
        *,
        iterations: int = 16,
        rtol: float = 0.002,
        candidates: int = 3,
        compute_ssim: bool = True,
    ) -> CodecResult | None:
        """Best quality of this codec at a compression ratio of at least ``ratio``.

        Parameters
        ----------
        volume : np.ndarray
            The original (2D or more; leading axes are stacked as slices).
        ratio : float
            Target ratio: raw bytes / compressed bytes must be ``>= ratio``.
        iterations : int
            Maximum bisection steps.
        rtol : float
            Early stop once a fitting size is within ``rtol`` of the budget.
        candidates : int
            The best-quality ``candidates`` fitting parameters (plus those of the codec's scan) are
            decoded and the one with the highest PSNR wins (robustness to non-monotone spots).
        compute_ssim : bool
            Compute SSIM (the slowest metric); ``nan`` otherwise.

        Returns
        -------
        CodecResult or None
            ``None`` when the codec cannot reach ``ratio`` on this volume.
        """
        original = np.asarray(volume)
        vol = _as_3d(original)
        raw = vol.size * vol.dtype.itemsize
        budget = int(math.floor(raw / ratio))
        cache: dict[float, Encoded] = {}

        def size_of(p: float) -> int:
            enc = self._encode_timed(vol, p)
            cache[p] = enc
            return enc.nbytes

        lo, hi = self.param_range(vol, ratio)
        res = bisect_quality(
            size_of,
            budget,
            lo,
            hi,
            increasing=self.increasing,
            log=self.log,
            integer=self.integer,
            iterations=iterations,
            rtol=rtol,
            scan=self.scan,
            window=self.window,
        )
        if res.param is None:
            return None
        best: tuple[float, float, Encoded, np.ndarray, float] | None = None
        for p in res.feasible[: max(1, candidates + self.scan)]:
            enc = cache[p]
            dec, dseconds = timed(lambda enc=enc: self.decode(enc))
            q = psnr(vol, dec)
            if best is None or q > best[0]:
                best = (q, p, enc, dec, dseconds)
        assert best is not None
        q, p, enc, dec, dseconds = best
        dec = dec.reshape(original.shape)
        return CodecResult(
            codec=self.name,
            target_ratio=float(ratio),
            ratio=raw / enc.nbytes,
            nbytes=enc.nbytes,
            psnr=q,
            ssim=ssim(original, dec) if compute_ssim else math.nan,
            max_error=max_abs_error(original, dec),
            encode_seconds=enc.encode_seconds,
            decode_seconds=dseconds,
            param=float(p),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
