"""allocator.py: with glibc's mmap threshold fixed, large buffers freed between
small ones that stay go back to the system; with glibc's moving threshold they
stay resident (the soak's RSS rising in steps, issue 22). Each case runs in a
fresh process: the setting lasts for the process's life."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_assistant.allocator import is_glibc

pytestmark = pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")

HELD_AFTER_FREE = """
import sys
import numpy as np
from edge_assistant.allocator import map_large_buffers

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "fixed":
    assert map_large_buffers()
np.ones(4 << 17)  # a 4 MiB buffer, mapped and freed: glibc moves its threshold above 1 MiB
before = rss_mb()
large, small = [], []
for _ in range(64):  # 64 MiB in 1 MiB buffers, each with a small one after it that stays
    large.append(np.ones(1 << 17))
    small.append(bytearray(4096))
large.clear()
print(rss_mb() - before)
"""


def held_mb(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", HELD_AFTER_FREE, mode], capture_output=True, text=True, check=True)
    return float(result.stdout)


def test_freed_large_buffers_leave_the_process() -> None:
    assert held_mb("fixed") < 8


def test_glibcs_moving_threshold_keeps_them() -> None:
    """What the fix is for (and that the check above can fail)."""
    assert held_mb("default") > 48
