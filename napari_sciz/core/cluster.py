"""The Dask plumbing of distributed jobs: block sources read on the workers, clients,
named tasks with retries and cancel, and the progress of blocks that finish in any order.

Used by :mod:`.distributed` (lossy and hybrid jobs) and :mod:`.distexact` (lossless and
error-bounded jobs).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CancelledError, InvalidInputError, SciZError
from .blocks import BlockGrid, block_stats
from .result import ProgressInfo
from .validate import check_shape_dtype

__all__ = [
    "BlockReport",
    "BlockSource",
    "ClusterRun",
    "client_for",
    "dask_client",
    "source_dtype",
    "source_of",
    "stats_task",
    "summed_quality",
    "tune_worker_malloc",
    "user_error",
]


@dataclass(frozen=True)
class BlockSource:
    """A picklable recipe that reads any block of the input, on whichever machine runs it.

    Attributes
    ----------
    shape : tuple of int
        Shape of the image.
    dtype : str
        Its dtype name.
    path : str or None
        File or store read lazily (:func:`napari_sciz.io.read_image` with ``lazy=True``);
        it must be reachable under this path from every worker (a shared file system).
    series : int
        The image series of a multi-series TIFF ``path`` that is read.

    Without ``path`` the array travels beside the source (a Dask future of it, scattered to
    one worker and fetched once by each other worker) and is passed to :meth:`read`. With
    ``channels_last``, the file holds a colour image with its samples last and ``shape`` is
    its coded layout, samples first (:mod:`.colour`): blocks are read in that layout.
    """

    shape: tuple[int, ...]
    dtype: str
    path: str | None = None
    channels_last: bool = False
    series: int = 0

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], series: int = 0) -> BlockSource:
        """Describe a file or store, or image series ``series`` of a TIFF file (its
        metadata are read here, its voxels never)."""
        from ..io import read_image

        image = read_image(path, lazy=True, series=series)
        return cls(
            tuple(int(n) for n in image.data.shape),
            np.dtype(image.data.dtype).name,
            path=str(Path(path).resolve()),
            series=series,
        )

    def read(self, index: tuple, array: Any = None) -> np.ndarray:
        """Read ``source[index]`` into memory (a copy); ``array`` is the in-memory input."""
        if self.path is None:
            if array is None:
                raise InvalidInputError("this source needs its array")
            return np.array(array[index])
        from ..io import read_image

        image = read_image(self.path, lazy=True, series=self.series)
        try:
            if not self.channels_last:
                return np.array(image.data[index])
            index = tuple(index) + (slice(None),) * (len(self.shape) - len(tuple(index)))
            block = np.array(image.data[(*index[1:], index[0])])
            # (an integer index of the samples leaves no samples axis to move)
            return np.moveaxis(block, -1, 0) if isinstance(index[0], slice) else block
        finally:
            del image  # unmap the file: the next block maps only what it reads


#: glibc's ``mallopt`` parameter of the size above which an allocation is its own mapping
_M_MMAP_THRESHOLD = -3

#: that size for the numpy work of a task: glibc's own dynamic ceiling (32 MiB on 64 bits)
_MMAP_THRESHOLD = 32 * 2**20

_malloc_tuned = False


def tune_worker_malloc() -> bool:
    """Let glibc keep freed buffers below 32 MiB for reuse in this (worker) process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to
    the system). Setting it switches off glibc's dynamic mmap threshold, so every temporary
    numpy array over 128 kB becomes a fresh mapping whose pages are zeroed again on first
    touch: the lossless encoder ran 2.4x slower in a worker than in a plain process (7.6 s
    against 3.1 s per 4 Mi-voxel block, 2-core CPU). Fixing the threshold at glibc's dynamic
    ceiling restores the speed (3.3 s); memory is still trimmed. Called by every task, once
    per process; does nothing off glibc. Returns whether the threshold is set.
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return _malloc_tuned
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        _malloc_tuned = False
    return _malloc_tuned


def user_error(exc: BaseException) -> BaseException:
    """A picklable stand-in for an error the user must fix (no retry)."""
    return exc if isinstance(exc, SciZError) else InvalidInputError(str(exc))


def stats_task(
    source: BlockSource,
    array: Any,
    grid: BlockGrid,
    index: int,
    probe: float | None = None,
    ends: int | None = None,
) -> Any:
    """:func:`~napari_sciz.core.blocks.block_stats` of block ``index``, read where it runs
    (a user error is returned, not raised: it is not retried); with ``ends``, a pair of the
    statistics and the block's ``ends`` largest and smallest values
    (:func:`~napari_sciz.core.outliers.block_ends`, empty when the block is not finite)."""
    tune_worker_malloc()
    try:
        block = source.read(grid.block_slices(index), array)
        stats = block_stats(block, probe)
    except (SciZError, OSError, ValueError) as exc:
        return user_error(exc)
    if ends is None:
        return stats
    if stats.nonfinite:
        return stats, (np.empty(0), np.empty(0))
    from .outliers import block_ends

    return stats, block_ends(block, ends)


@contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    connect_timeout: float = 20.0,
) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler``, or to a new local cluster of ``workers``.

    The local cluster runs one process per worker with ``threads_per_worker`` threads each
    (fitting a block uses all of a worker's cores through torch), and is shut down on exit.
    """
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError as exc:
        raise SciZError(
            "distributed compression needs Dask: pip install 'napari-sciz[dask]'"
        ) from exc
    if scheduler is not None and workers is not None:
        raise InvalidInputError("give either a scheduler address or a number of workers")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{float(connect_timeout)}s")
        except (OSError, TimeoutError) as exc:
            raise SciZError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or 1)
    if n < 1:
        raise InvalidInputError(f"workers must be at least 1, got {workers!r}")
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=int(threads_per_worker),
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=None,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _gather(
    client: Any,
    futures: list[Any],
    on_done: Callable[[Any], None],
    cancel: Callable[[], bool] | None,
) -> list[Any]:
    """Results of ``futures`` in their order, calling ``on_done`` as each arrives."""
    from distributed import wait

    results: list[Any] = [None] * len(futures)
    position = {f.key: i for i, f in enumerate(futures)}
    pending = set(futures)
    try:
        while pending:
            if cancel is not None and cancel():
                raise CancelledError("compression cancelled; no output written")
            try:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in the last half second
                continue
            for fut in done:
                value = fut.result()
                if isinstance(value, BaseException):
                    raise value
                results[position[fut.key]] = value
                fut.release()
                on_done(value)
    except BaseException:
        client.cancel(list(pending))
        raise
    return results


@dataclass
class ClusterRun:
    """Tasks of one job on a Dask cluster: named keys, retries, cancel, and the progress of
    the passes over the blocks that come before their fits (:data:`PASSES`)."""

    client: Any
    token: str
    retries: int
    cancel: Callable[[], bool] | None
    progress: Callable[[Any], None] | None = None

    def map(
        self,
        kind: str,
        task: Callable[..., Any],
        args: Sequence[tuple],
        keys: Sequence[int] | None = None,
        on_done: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """``task(*a)`` for every ``a`` of ``args`` on the cluster, results in order (a pass
        of :data:`PASSES` without ``on_done`` reports its blocks read to ``progress``)."""
        keys = range(len(args)) if keys is None else keys
        if on_done is None and self.progress is not None and kind in PASSES:
            on_done = _PassReport(self.progress, PASSES[kind], len(args))
        futures = [
            self.client.submit(task, *a, key=f"{self.token}-{kind}-{k}", retries=self.retries)
            for a, k in zip(args, keys, strict=True)
        ]
        return _gather(self.client, futures, on_done or (lambda _v: None), self.cancel)


#: the passes over the blocks before their fits, as the progress names them
PASSES = {
    "stats": "reading the blocks",
    "stats-ends": "reading the blocks",
    "range": "reading the blocks",
    "outliers": "listing the extreme values",
    "colour-sums": "measuring the colours",
    "colour-range": "measuring the colours' range",
}


@dataclass
class _PassReport:
    """Progress of a pass over the blocks: how many were read (nothing fitted yet)."""

    progress: Callable[[Any], None]
    label: str
    total: int
    done: int = 0

    def __call__(self, _value: Any) -> None:
        self.done += 1
        text = f"{self.label}: {self.done}/{self.total} blocks"
        self.progress(ProgressInfo(0.0, 0, None, math.nan, math.nan, None, 0, 1, text))


@dataclass
class BlockReport:
    """Progress of the blocks' fits (or codings: ``verb``), which finish in any order."""

    progress: Callable[[Any], None] | None
    grid: BlockGrid
    n_workers: int
    steps: int | None
    t_start: float
    verb: str = "fitting"
    done_voxels: int = 0
    done_blocks: int = 0

    def _say(self, fraction: float, text: str) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.t_start
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
        # the text says how many blocks are done (they finish in any order)
        self.progress(ProgressInfo(fraction, 0, self.steps, math.nan, math.nan, eta, 0, 1, text))

    def started(self) -> None:
        """The blocks were sent to the workers."""
        self._say(0.0, f"{self.verb} {self.grid.n_blocks} blocks on {self.n_workers} workers")

    def block_done(self, res: Any) -> None:
        """A block came back (``res.index`` says which)."""
        self.done_voxels += self.grid.block_voxels(res.index)
        self.done_blocks += 1
        total = sum(self.grid.block_voxels(i) for i in range(self.grid.n_blocks))
        self._say(
            self.done_voxels / total,
            f"{self.done_blocks}/{self.grid.n_blocks} blocks done on {self.n_workers} workers",
        )


def summed_quality(measures: Sequence[Any], voxels: int, span: float) -> tuple[float, float]:
    """PSNR (peak ``span``, or 1 when flat) and SSIM of a file from its blocks' ``measures``
    (each with ``sse``, ``ssim_sum`` and ``ssim_slices``): SSIM is NaN unless every block
    measured its whole slices."""
    peak = span if span > 0 else 1.0
    mse = sum(m.sse for m in measures) / max(voxels, 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
    if not all(m.ssim_sum is not None for m in measures):
        return psnr, math.nan
    slices = max(1, sum(m.ssim_slices for m in measures))
    return psnr, sum(m.ssim_sum or 0.0 for m in measures) / slices


@contextmanager
def client_for(
    client: Any,
    scheduler: str | None,
    workers: int | None,
    connect_timeout: float,
    cluster: dict[str, Any],
) -> Iterator[Any]:
    """``client`` itself, or one of :func:`dask_client` (closed on exit)."""
    if client is not None:
        yield client
        return
    with dask_client(scheduler, workers, connect_timeout=connect_timeout, **cluster) as cl:
        yield cl


def source_dtype(data: Any) -> np.dtype:
    """The dtype of a source of :func:`source_of` (a file's from its metadata)."""
    if isinstance(data, (str, os.PathLike)):
        return np.dtype(BlockSource.from_path(data).dtype)
    dtype = getattr(data, "dtype", None)
    try:
        return np.dtype(dtype) if dtype is not None else np.asarray(data).dtype
    except Exception as exc:  # noqa: BLE001 - any array-like failure is a user input problem
        raise InvalidInputError(f"cannot read the input as an array: {exc}") from exc


def source_of(client: Any, data: Any) -> tuple[BlockSource, Any]:
    """A :class:`BlockSource` for a path (read on the workers), a source already described,
    or an array (scattered)."""
    if isinstance(data, BlockSource):
        return data, None
    if isinstance(data, (str, os.PathLike)):
        return BlockSource.from_path(data), None
    try:
        arr = np.asarray(data)
    except Exception as exc:  # noqa: BLE001 - any array-like failure is a user input problem
        raise InvalidInputError(f"cannot read the input as an array: {exc}") from exc
    check_shape_dtype(arr.shape, arr.dtype)
    # to one worker; the others fetch it with their first block and keep it. (broadcast=True
    # hung a test run now and then: the scheduler's replication loop against the active memory
    # manager dropping replicas, dask/distributed issue 4907). A key of its own (hash=False):
    # with the content's hash as its key, a job right after another on the same array scattered
    # it under the key the scheduler was still forgetting, and its tasks were cancelled for
    # "lost dependencies" (seen here, 3 runs in 4)
    future = client.scatter(arr, hash=False)
    return BlockSource(tuple(int(n) for n in arr.shape), arr.dtype.name), future
