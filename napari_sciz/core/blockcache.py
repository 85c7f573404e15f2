"""The reader's decoded blocks, kept for the next region: least recently used first out, by
count and by bytes. No Qt."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["BlockCache"]


def _entry_bytes(item: Any) -> int:
    """Memory a decoded block takes (a lossy block: its field's latents and MLP)."""
    if isinstance(item, tuple):
        return sum(int(t.numel()) * 4 for t in item[0].parameters())
    return int(getattr(item, "nbytes", 0))


class BlockCache:
    """Decoded blocks by index, at most ``blocks`` of them and ``nbytes`` in all (the one
    just decoded always stays).

    Parameters
    ----------
    blocks, nbytes : int
        The most blocks kept, and the most memory they take.
    lock : threading.RLock
        Held while the cache is read or changed (never while a block decodes).
    """

    def __init__(self, blocks: int, nbytes: int, lock: threading.RLock) -> None:
        self.blocks, self.nbytes, self._lock = blocks, int(nbytes), lock
        self._entries: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, index: int, decode: Callable[[int], Any]) -> Any:
        """Block ``index`` from the cache, or ``decode(index)`` (outside the lock) and kept."""
        with self._lock:
            cached = self._entries.get(index)
            if cached is not None:
                self._entries.move_to_end(index)
                return cached
        entry = decode(index)
        with self._lock:
            self._keep(index, entry)
        return entry

    def _keep(self, index: int, entry: Any) -> None:
        """Keep a decoded block; evict the least recently used beyond the count or bytes."""
        self._entries[index] = entry
        self._entries.move_to_end(index)
        total = sum(_entry_bytes(v) for v in self._entries.values())
        while len(self._entries) > 1 and (len(self._entries) > self.blocks or total > self.nbytes):
            _key, old = self._entries.popitem(last=False)
            total -= _entry_bytes(old)
