"""glibc's malloc set up for a process that runs for weeks: a buffer of 128 KiB
or more gets a mapping of its own, given back to the system when it is freed.

glibc starts with that threshold but raises it to the size of each mapped
buffer freed (up to 32 MiB). From then on the large buffers come from the
heaps instead, one heap per thread, where freed space stays resident. Most of
them are Piper's: its onnxruntime session runs without a memory arena
(tts.py) so that a long sentence's hundreds of MiB are given back, and each
turn synthesizes on a new thread, so several heaps each came to hold a
sentence's worth. In the soak (scripts/soak.py, the twin) the memory in use
stayed at 280 MB while the freed-but-held part grew from 180 MB at turn 10 to
490 MB at turn 200, and peak RSS rose in steps: 958 MB at turn 100, 1,104 MB
at turn 1000. With the threshold fixed: 464 MB at turn 100, 475 MB at 1000.

The price is page faults: each large buffer is fresh memory. Piper takes
about 90,000 more minor faults per sentence, about 0.1 s more system time per
sentence on the 2-core Xeon the figures come from. Setting the threshold
(mallopt) also stops glibc from moving it.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def is_glibc() -> bool:
    """Whether this process runs on glibc (not musl, or Android's bionic, where
    mallopt's numbers mean other things or nothing)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def map_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 128 KiB for the rest of the process: call it
    before the models load. False (and nothing changed) off glibc."""
    if not is_glibc():
        return False
    if not ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        log.warning("glibc refused a fixed mmap threshold; long runs may hold freed memory")
        return False
    return True
