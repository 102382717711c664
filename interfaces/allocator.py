"""Keep freed memory in the process instead of handing it back to the system after every tensor.

glibc's malloc serves a request above its mmap threshold (128 KiB at first, raised on the fly
up to a cap) with a fresh mapping, and gives free memory at the top of the heap back to the
system above its trim threshold. A network evaluated thousands of times on the same shapes
(the latent methods' guidance: a decoder pass and its gradient per optimiser evaluation, on
tensors of 1-10 MB) then maps, zero-fills and unmaps the same buffers again and again: at
32x64 that was some 70,000 page faults and a quarter of the CPU time of a LO-SDA analysis.
Fixed thresholds above those sizes keep the buffers for reuse. Nothing computed changes; the
process holds on to up to ``TRIM`` bytes of freed memory.

Only glibc has these knobs (``mallopt``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: Requests up to this size come from the heap (glibc's ceiling for the setting is 32 MiB on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept before trimming.
TRIM = 256 << 20

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True when they are set (glibc), False otherwise."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
