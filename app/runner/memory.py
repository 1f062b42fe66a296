"""Keep large buffers out of glibc's heap, so that memory a burst took goes back.

glibc gives an allocation of at least ``M_MMAP_THRESHOLD`` bytes a mapping of its own
and returns it to the kernel on free. The threshold starts at 128 KiB but rises to the
size of every such block freed (up to 32 MiB), so after the first large request bodies
(socket reads of up to 256 KiB, their JSON, the parsed arrays) those blocks come from
the heap instead, which fragments and keeps its peak. Setting the threshold fixes it
and turns the rise off. Measured with ``bench/overload.py`` (digits, 100-image bodies,
c=1000): peak RSS 176 -> 169 MB, requests/s unchanged. ``MALLOC_MMAP_THRESHOLD_`` in
the environment (glibc's own knob) takes precedence.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
MMAP_FROM = 256 * 1024


def pin_mmap_threshold(size: int = MMAP_FROM) -> bool:
    """Fix glibc's mmap threshold at ``size`` bytes; False where it does not apply (not
    glibc, or the operator set ``MALLOC_MMAP_THRESHOLD_``)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, size))
