"""femopt's GPU memory pool (``backend.gpu_pool.SizedPools``) on a stand-in for CuPy's
pools: a device that counts its bytes, pools that cache freed blocks whole."""

from __future__ import annotations

import types

import pytest

from femopt.backend.gpu_pool import LARGE, SizedPools

MB = 1 << 20


class OutOfMemory(Exception):
    pass


class Device:
    """Bytes taken from the device, its high-water mark, its capacity, the blocks it gave."""

    def __init__(self, capacity: int):
        self.used = self.high = self.takes = 0
        self.capacity = capacity

    def take(self, n: int) -> None:
        if self.used + n > self.capacity:
            raise OutOfMemory(n)
        self.used += n
        self.takes += n >= LARGE  # the large blocks' pools' requests
        self.high = max(self.high, self.used)


class Block:
    """A block handed out; its chunk goes back to its pool's cache when it is dropped."""

    def __init__(self, pool: "Pool", size: int):
        self.pool, self.size = pool, size

    def __del__(self):
        self.pool.cached.append(self.size)


class Pool:
    """CuPy's pool as SizedPools sees it: a cached chunk at least the size asked for is
    reused whole (never split here), else the device gives a new one; free_all_blocks
    gives the cached chunks back."""

    def __init__(self, device: Device):
        self.device, self.cached, self.held = device, [], 0

    def malloc(self, size: int) -> Block:
        fits = [c for c in self.cached if c >= size]
        if fits:
            self.cached.remove(min(fits))
            return Block(self, min(fits))
        self.device.take(size)
        self.held += size
        return Block(self, size)

    def free_all_blocks(self) -> None:
        self.device.used -= sum(self.cached)
        self.held -= sum(self.cached)
        self.cached = []

    def total_bytes(self) -> int:
        return self.held

    def free_bytes(self) -> int:
        return sum(self.cached)


def fake_cupy(device: Device, limit: int = 0):
    memory = types.SimpleNamespace(OutOfMemoryError=OutOfMemory)
    cuda = types.SimpleNamespace(MemoryPool=lambda: Pool(device), memory=memory)
    default = types.SimpleNamespace(get_limit=lambda: limit)  # CUPY_GPU_MEMORY_LIMIT's
    return types.SimpleNamespace(cuda=cuda, get_default_memory_pool=lambda: default)


def phases(pools: SizedPools, rounds: int = 4) -> int:
    """A design loop's pattern: a held array, then phases of other sizes one after the
    other (three 12 MB vectors, four 8 MB cell arrays, two 15 MB temporaries and small
    blocks); returns the most bytes alive at once."""
    held = [pools.malloc(30 * MB)]
    peak = 30 * MB
    for _ in range(rounds):
        for n, size in ((3, 12 * MB), (4, 8 * MB), (2, 15 * MB), (50, 4096)):
            live = [pools.malloc(size) for _ in range(n)]
            peak = max(peak, 30 * MB + n * -(-size // 512) * 512)
            del live
        held.append(pools.malloc(8 * MB))  # the new design, the old one let go of
        del held[0]
        peak = max(peak, 38 * MB)
    return peak


def test_the_high_water_mark_is_the_live_peak():
    """Through phases of arrays of other sizes the pools hold at most what is alive at
    once: their high-water mark and the device's are the live peak (30 MB held and three
    12 MB vectors), where one pool caching every freed block would hold them all."""
    device = Device(1 << 40)
    pools = SizedPools(fake_cupy(device))
    peak = phases(pools)
    assert peak == 66 * MB
    assert device.high - 66 * MB <= 50 * 4096  # the small blocks' pool alone may keep more
    assert pools.high_water() == device.high
    one = Device(1 << 40)
    single = Pool(one)
    phases(types.SimpleNamespace(malloc=single.malloc))
    # a chunk at least the size asked for is reused there, but none of 8 or 12 MB takes a
    # 15 MB temporary: 30 + 36 + 8 + 30 MB
    assert one.high >= 104 * MB


def test_blocks_of_one_size_are_reused_without_the_device():
    """A phase that asks again for the sizes of the last one takes its cached blocks
    (no block from the device); one of other sizes past the high-water mark makes room
    first, giving back the pools that cache the most."""
    device = Device(1 << 40)
    pools = SizedPools(fake_cupy(device))
    for _ in range(3):
        vectors = [pools.malloc(12 * MB) for _ in range(3)]
        del vectors
    assert device.takes == 3 and device.high == 36 * MB
    cells = [pools.malloc(8 * MB) for _ in range(4)]  # 32 MB: room made from the 36
    assert device.takes == 7 and device.used <= 36 * MB and pools.high_water() == 36 * MB
    del cells
    again = [pools.malloc(8 * MB) for _ in range(4)]
    assert device.takes == 7 and len(again) == 4


def test_a_block_that_does_not_fit_releases_the_cached_ones_first():
    """On a device of 70 MB the cached blocks of other sizes are given back before a new
    size is taken (the pools never sum past what is alive at once), and when a pool's
    own request fails they are given back and it is asked again."""
    device = Device(70 * MB)
    pools = SizedPools(fake_cupy(device))
    assert phases(pools) == 66 * MB
    assert device.high <= 70 * MB
    big = pools.malloc(40 * MB)  # 30 MB of blocks cached: the device has room only after
    assert device.used <= 70 * MB and big.size == 40 * MB
    del big
    pools.reset()
    assert pools.high_water() == pools.total() == device.used


def test_small_blocks_share_one_pool():
    pools = SizedPools(fake_cupy(Device(1 << 40)))
    a, b = pools.malloc(1000), pools.malloc(LARGE - 512)
    c = pools.malloc(LARGE)
    assert a.pool is b.pool is pools.small and c.pool is pools.sized[LARGE]
    with pytest.raises(OutOfMemory):
        SizedPools(fake_cupy(Device(MB))).malloc(2 * MB)


def test_cupys_memory_limit_holds_for_all_pools_together():
    """CUPY_GPU_MEMORY_LIMIT (the default pool's limit) bounds what the pools hold
    together: cached blocks of other sizes are given back for a block that would pass
    it, and a block that passes it with nothing cached is refused."""
    device = Device(1 << 40)
    pools = SizedPools(fake_cupy(device, limit=40 * MB))
    a = pools.malloc(30 * MB)
    del a  # cached
    b = pools.malloc(20 * MB)
    assert device.used == 20 * MB
    with pytest.raises(OutOfMemory):
        pools.malloc(25 * MB)
    assert b.size == 20 * MB


def test_the_size_guard_keeps_a_larger_allowance_for_cudas_pool(monkeypatch):
    """The guard's allowance over the count is 1 B per dof for femopt's pools (their
    mark is the live peak) and 5.6 with FEMOPT_GPU_ALLOCATOR=async, whose pool was not
    measured to hold only what is alive."""
    from femopt.assembly.grid_layout import GridLayout
    from femopt.evaluation import grid_device

    lay = GridLayout((64, 32, 32), 3)
    monkeypatch.setenv("FEMOPT_GPU_ALLOCATOR", "pool")
    pool = grid_device.estimate_bytes(lay, krylov="mixed")
    monkeypatch.setenv("FEMOPT_GPU_ALLOCATOR", "async")
    cuda = grid_device.estimate_bytes(lay, krylov="mixed")
    assert cuda - pool == pytest.approx(grid_device.MEMORY_MARGIN * 4.6 * lay.n_dofs, abs=2)


def test_a_runs_out_of_memory_message_keeps_what_the_pools_said():
    """summary.json's message of a run that ran out of GPU memory carries the pools'
    own words (what they held), not a fixed text alone."""
    from femopt.io.failure import describe

    said = describe(MemoryError("Out of memory allocating 2,097,152 bytes (allocated so far: "
                                "1,048,576 bytes)."))
    assert "allocated so far: 1,048,576 bytes" in said and "use a coarser mesh" in said
    assert describe(MemoryError()) == ("out of memory during the run (MemoryError); use a "
                                       "coarser mesh")
