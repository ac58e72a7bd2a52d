"""glibc's malloc set up for a process that runs for weeks: a buffer of 128 KiB
or more gets a mapping of its own, given back to the system when it is freed.

glibc starts with that threshold, but raises it to the size of each mapped
buffer freed (up to 32 MiB). From then on the daemon's large buffers (audio,
features, Piper's output, built on the audio thread, the turn workers and the
writers alike) come from per-thread heaps, where freed space stays resident
and a later, larger mix of buffers grows them again. In the 1000-turn soak
(scripts/soak.py) peak RSS rose in steps from 958 MB at turn 100 to 1,104 MB
at turn 1000; the memory in use stayed at 280 MB while the freed-but-held part
of the heaps grew from 230 to 490 MB by turn 200. With the threshold fixed it
stays under 20 MB. Setting it (mallopt) also stops glibc from moving it.
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
