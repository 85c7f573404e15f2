"""The time budget, cancellation and progress reports of one hybrid block's encoding.

A hybrid block is coded in stages (the choice of the base codec, the loop filter, the field of
the residual), each made of classical encodes that take from milliseconds to seconds. The
:class:`BlockTracker` is handed to every stage: it says how much of the block's time budget is
left, raises :class:`~napari_sciz.errors.CancelledError` between two encodes once the user
cancels, and reports progress and previews the way the field's fit does
(:class:`~napari_sciz.core.lossy.fit.StepInfo`), so the API, the CLI and the widget show a hybrid
job like any other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import CancelledError

__all__ = ["BlockTracker"]


class BlockTracker:
    """Budget, cancellation and progress of one hybrid block.

    Parameters
    ----------
    budget : float or None
        Seconds for the whole block (``None``: no limit).
    target : numpy.ndarray
        The block's values (original units), for the PSNR of the reports.
    cancel : callable, optional
        Returns True once the job is cancelled.
    on_step : callable, optional
        Called with a :class:`~napari_sciz.core.lossy.fit.StepInfo` after every stage.
    on_preview : callable, optional
        Called with the block's current reconstruction (float32, original units).
    """

    def __init__(
        self,
        budget: float | None,
        target: np.ndarray,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[Any], None] | None = None,
        on_preview: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.budget = budget
        self.cancel = cancel
        self.on_step = on_step
        self.on_preview = on_preview
        span = float(np.max(target) - np.min(target)) if target.size else 0.0
        self._peak2 = span * span if span > 0 else 1.0
        self._fraction = 0.0
        self._psnr = math.nan
        #: seconds one search of the chosen base codec took
        self.base_seconds = 0.0
        #: seconds of one encode of the fastest base codec tried (the unit of the stages'
        #: costs: they were measured against SPERR's encodes, the first codec tried)
        self.encode_seconds = 0.0
        #: the base's rate-distortion slope (mean squared error per byte) where it was measured
        #: (the loop filter's choice), or None
        self.slope: float | None = None
        #: training steps of the field fits so far
        self.steps = 0

    @property
    def fraction(self) -> float:
        """The progress last reported."""
        return self._fraction

    def elapsed(self) -> float:
        """Seconds since the block started."""
        return time.perf_counter() - self.t0

    def left(self) -> float:
        """Seconds left of the budget (``inf`` without one)."""
        return math.inf if self.budget is None else self.budget - self.elapsed()

    def before(self, share: float) -> float | None:
        """Deadline at ``share`` of the budget (absolute ``perf_counter`` time)."""
        return None if self.budget is None else self.t0 + share * self.budget

    def base_searched(self, seconds: float, encodes: int) -> None:
        """Record a base codec's search: ``seconds`` for ``encodes`` encodes."""
        per_encode = seconds / max(encodes, 1)
        if self.encode_seconds == 0.0 or per_encode < self.encode_seconds:
            self.encode_seconds = per_encode

    def has_time_for(self, encodes: float) -> bool:
        """Whether ``encodes`` encodes of the fastest base tried fit in the budget left (a
        stage that costs about that much starts only then; always without a budget)."""
        return self.budget is None or self.left() >= encodes * self.encode_seconds

    def check_cancel(self) -> None:
        """Raise :class:`CancelledError` once the job is cancelled."""
        if self.cancel is not None and self.cancel():
            raise CancelledError("compression cancelled; no output written")

    def report(self, fraction: float, error: float | None = None, values: Any = None) -> None:
        """Report progress ``fraction`` of the block, with its squared error and values.

        The fraction reported never decreases; with a budget it is at least the share of the
        budget spent.
        """
        if self.budget is not None and self.budget > 0:
            fraction = max(fraction, self.elapsed() / self.budget)
        self._fraction = max(self._fraction, min(fraction, 0.99))
        if error is not None:
            self._psnr = 10 * math.log10(self._peak2 / error) if error > 0 else math.inf
        if values is not None and self.on_preview is not None:
            self.on_preview(np.asarray(values, np.float32))
        if self.on_step is not None:
            from ..lossy.fit import StepInfo

            loss = 10 ** (-self._psnr / 10) if math.isfinite(self._psnr) else 0.0
            info = StepInfo(self.steps, self._fraction, loss, self._psnr, self.elapsed())
            self.on_step(info)
        self.check_cancel()

    def field_steps(self, start: float, stop: float) -> Callable[[Any], None]:
        """An ``on_step`` for a field fit that spans ``[start, stop]`` of the block's progress."""

        def on_field_step(info: Any) -> None:
            self.steps += 1
            self.report(start + (stop - start) * float(info.fraction))

        return on_field_step
