"""femopt's GPU memory pool: large blocks kept by exact size, the device asked for more
than the pools' high-water mark only after the cached blocks have been given back.

CuPy's default pool hands out a cached block larger than asked for by splitting it, and
a split block can go back to the device only once all its parts are free. On the grid
path the phases of a design iteration ask for arrays of a few sizes each (float32 dof
vectors in the solve, float64 cell arrays in the gradient, the hierarchy's temporaries
in its update); split between them, the blocks left free beside a live part held 13
B/cell over the live peak at 512x256x256 (docs/benchmarks.md). Here every block of
64 KiB or more (:data:`LARGE`) comes from a CuPy pool of its own size, so a cached block is
whole and reused as it is; and before the pools take memory from the device beyond
their high-water mark, they give back what they cache, the pools caching the most first,
until the new block fits under the mark (or all of it). What the pools hold at their
high-water mark is then what was alive at once, with the block asked for.
"""

from __future__ import annotations

import gc
from typing import Any

LARGE = 1 << 16  # bytes: a block of at least this size comes from a pool of its size
UNIT = 512  # CuPy rounds every block to a multiple of this


class SizedPools:
    """A CuPy allocator (``malloc``) over CuPy pools: one for the blocks below
    :data:`LARGE` bytes, one per rounded size above, on the current device. Made for one
    thread's allocations (the runs' own). ``CUPY_GPU_MEMORY_LIMIT`` (as CuPy's default
    pool reads it) limits what the pools hold together when they take a block of
    :data:`LARGE` bytes or more (and each pool alone, as CuPy keeps it).

    Args:
        cupy: the cupy module.
    """

    def __init__(self, cupy: Any):
        self.cupy = cupy
        self.small = cupy.cuda.MemoryPool()
        self.sized: dict[int, Any] = {}
        self.high = 0  # the pools' high-water mark in bytes
        self.limit = int(cupy.get_default_memory_pool().get_limit())  # 0: none

    def malloc(self, size: int) -> Any:
        """A block of ``size`` bytes (CuPy's allocator signature)."""
        rounded = -(-size // UNIT) * UNIT
        if rounded < LARGE:
            return self._take(self.small, size)
        pool = self.sized.get(rounded)
        if pool is None:
            pool = self.sized[rounded] = self.cupy.cuda.MemoryPool()
        if pool.free_bytes() < rounded:  # none cached: new memory from the device
            now = self.total()
            self.high = max(self.high, now)
            if self.limit and now + rounded > self.limit:
                self._make_room(rounded, self.limit)
                if self.total() + rounded > self.limit:
                    gc.collect()  # blocks held only by reference cycles
                    self._make_room(rounded, self.limit)
                if self.total() + rounded > self.limit:
                    raise self.cupy.cuda.memory.OutOfMemoryError(size, self.total(),
                                                                 self.limit)
            if now + rounded > self.high:
                self._make_room(rounded, self.high)
        return self._take(pool, size)

    def _take(self, pool: Any, size: int) -> Any:
        try:
            return pool.malloc(size)
        except self.cupy.cuda.memory.OutOfMemoryError:
            self.release(keep=pool)  # another pool's cached blocks may make the room
        try:
            return pool.malloc(size)
        except self.cupy.cuda.memory.OutOfMemoryError as exc:
            # what all the pools hold, not the one pool's share CuPy's error gives
            raise self.cupy.cuda.memory.OutOfMemoryError(size, self.total(),
                                                         self.limit) from exc

    def _make_room(self, need: int, cap: int) -> None:
        """Give cached blocks back, the pools caching the most first, until ``need``
        more bytes keep the pools within ``cap``: the blocks of sizes that the coming
        phase asks for again stay cached as far as the room allows."""
        for pool in sorted(self.sized.values(), key=lambda p: p.free_bytes(), reverse=True):
            if self.total() + need <= cap:
                return
            pool.free_all_blocks()
        self.small.free_all_blocks()

    def total(self) -> int:
        """Bytes the pools hold from the device now."""
        return self.small.total_bytes() + sum(p.total_bytes() for p in self.sized.values())

    def high_water(self) -> int:
        """The most bytes the pools have held from the device at once (now included)."""
        self.high = max(self.high, self.total())
        return self.high

    def release(self, keep: Any = None) -> None:
        """Give every cached (free) block back to the device, and forget the pools left
        empty (sizes a run may not ask for again) but ``keep``."""
        self.high = max(self.high, self.total())
        self.small.free_all_blocks()
        for size, pool in list(self.sized.items()):
            pool.free_all_blocks()
            if pool.total_bytes() == 0 and pool is not keep:
                del self.sized[size]

    def reset(self) -> None:
        """Give the cached blocks back and forget the high-water mark."""
        self.release()
        self.high = self.total()
