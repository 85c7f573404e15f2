"""Decode the planes a viewer asks for on a background thread, newest request first.

napari slices layers on its main thread: a plane that takes 100 ms to decode would freeze the
viewer for 100 ms at every step of a scroll. :class:`PlaneLoader` takes the decode off that
thread. The viewer's request returns at once (with a stand-in plane) and is queued; one worker
thread decodes the most recent request first, so a fast scroll does not wait for every plane it
passed, then the neighbouring planes in the direction of the scroll (prefetch), and reports each
decoded plane through a callback so the layer can redraw it.

Qt-free: the napari reader connects the callback to the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

__all__ = ["PlaneLoader"]

#: requests kept waiting; older ones are dropped (a fast scroll does not need every plane)
MAX_PENDING = 8


class PlaneLoader:
    """One background thread that decodes requested regions, the newest request first.

    Parameters
    ----------
    fetch : callable
        ``fetch(key) -> ndarray``: decodes a region (runs on the worker thread).
    store : callable
        ``store(cache_key, array)``: keeps a decoded region (runs on the worker thread).
    on_loaded : callable
        ``on_loaded(cache_key)``: a region asked for by the viewer is ready (worker thread).
    on_error : callable, optional
        ``on_error(exception)``: a decode failed (worker thread); the request is dropped.
    """

    def __init__(
        self,
        fetch: Callable[[Any], np.ndarray],
        store: Callable[[Hashable, np.ndarray], None],
        on_loaded: Callable[[Hashable], None],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._store = store
        self._on_loaded = on_loaded
        self._on_error = on_error
        self._cond = threading.Condition()
        self._wanted: dict[Hashable, Any] = {}  # asked for by the viewer, oldest first
        self._prefetch: dict[Hashable, Any] = {}
        self._busy: Hashable | None = None
        self._busy_wanted = False  # the viewer asked for the region being prefetched
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sciz-planes", daemon=True)
        self._thread.start()

    def request(self, cache_key: Hashable, key: Any, *, prefetch: bool = False) -> None:
        """Queue a region (no-op if it is queued or being decoded).

        Parameters
        ----------
        cache_key : hashable
            Identifies the region (what ``store`` and ``on_loaded`` receive).
        key : object
            The index passed to ``fetch``.
        prefetch : bool
            A guess (neighbouring plane): decoded after every region the viewer asked for.
        """
        with self._cond:
            if self._closed:
                return
            if cache_key == self._busy:
                self._busy_wanted = self._busy_wanted or not prefetch
                return
            queue = self._prefetch if prefetch else self._wanted
            if prefetch and cache_key in self._wanted:
                return
            self._prefetch.pop(cache_key, None)
            queue.pop(cache_key, None)
            queue[cache_key] = key  # most recent last
            while len(queue) > MAX_PENDING:
                queue.pop(next(iter(queue)))
            self._cond.notify()

    def pending(self) -> int:
        """Regions queued or being decoded."""
        with self._cond:
            return len(self._wanted) + len(self._prefetch) + (self._busy is not None)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or being decoded; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or not (self._wanted or self._prefetch or self._busy),
                timeout,
            )

    def close(self) -> None:
        """Stop the worker after the decode in progress; queued requests are dropped."""
        with self._cond:
            self._closed = True
            self._wanted.clear()
            self._prefetch.clear()
            self._cond.notify_all()

    def _next(self) -> tuple[Hashable, Any, bool] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._wanted or self._prefetch)
            if self._closed:
                return None
            wanted = bool(self._wanted)
            queue = self._wanted if wanted else self._prefetch
            cache_key, key = queue.popitem()  # newest first
            self._busy, self._busy_wanted = cache_key, wanted
            return cache_key, key, wanted

    def _run(self) -> None:
        while (job := self._next()) is not None:
            cache_key, key, _ = job
            try:
                self._store(cache_key, np.asarray(self._fetch(key)))
                with self._cond:
                    wanted = self._busy_wanted
                if wanted:
                    self._on_loaded(cache_key)
            except Exception as exc:  # noqa: BLE001 - reported, the viewer keeps running
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cond:
                    self._busy, self._busy_wanted = None, False
                    self._cond.notify_all()
