"""release_freed_memory gives freed heap memory back (glibc), the segment stages' handover."""

import sys

import numpy as np
import pytest

from geounet.environment import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc_trim")
def test_release_freed_memory_returns_small_freed_blocks_to_the_system():
    # many small blocks (below glibc's mmap threshold) live in the heap; freeing them leaves
    # the pages mapped until malloc_trim
    blocks = [np.ones(16_000, dtype=np.uint8) for _ in range(20_000)]  # ~320 MB in the heap
    keep = np.ones(8, dtype=np.uint8)  # a late block at the top of the heap
    del blocks
    before = _rss_mib()
    assert release_freed_memory() is True
    after = _rss_mib()
    assert keep.sum() == 8
    assert before - after > 150, (before, after)
