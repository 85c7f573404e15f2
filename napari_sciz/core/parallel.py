"""Running independent pieces of a decode or encode on threads.

The pieces must release the GIL to overlap (numpy, numba ``nogil`` kernels, imagecodecs'
codecs do); a pool is made per call and sized to the work and the CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["on_threads", "pipelined"]


def on_threads(
    fn: Callable[[Any], Any], items: list, prefix: str = "sciz", limit: int | None = None
) -> list:
    """``[fn(x) for x in items]``, on up to one thread per CPU (and at most ``limit``).

    Parameters
    ----------
    fn : callable
        The work on one item.
    items : list
        The items, in the order of the results.
    prefix : str
        Name prefix of the worker threads (shown by debuggers and profilers).
    limit : int, optional
        Most threads (e.g. what memory allows).

    Returns
    -------
    list
        ``fn(x)`` of every item, in order; the first exception raised is re-raised.
    """
    threads = min(len(items), os.cpu_count() or 1, limit or len(items))
    if threads < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=prefix) as pool:
        return list(pool.map(fn, items))


def pipelined(
    first: Callable[[int], None], then: Callable[[int], Any], n: int, prefix: str = "sciz"
) -> list:
    """``first(i)`` for ``i`` in order on this thread, each followed by ``then(i)`` on a
    worker thread (``then`` must release the GIL to overlap).

    Returns
    -------
    list
        The results of ``then(i)``, in order.
    """
    threads = min(n, os.cpu_count() or 1)
    if threads < 2:
        out = []
        for i in range(n):
            first(i)
            out.append(then(i))
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=prefix) as pool:
        futures = []
        for i in range(n):
            first(i)
            futures.append(pool.submit(then, i))
        return [f.result() for f in futures]
