"""glibc's malloc told to keep the memory a training process frees.

Why: PyTorch takes a CPU tensor's storage from malloc and frees it when the tensor dies, so every training
step allocates and frees the same activations again. glibc serves blocks above its mmap threshold (128 KiB,
rising to 32 MiB) with fresh mmap()s and hands them back with munmap() when they are freed, so each step
page-faults those bytes in again and the kernel zeroes them first. StarGAN's 64 px bf16 step spent 11 of
27 s in the kernel that way on one thread; with mmap off and freed memory kept, 1.2 s, and it ran 1.5-1.7x
faster (docs/performance.md). A training run repeats one step shape for hours, so what is kept is what the
next step takes again.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt() parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Once per process: every block from the heap (no mmap), freed memory kept up to 1 GiB at the heap's
    top, the heap grown 256 MiB at a time. Returns whether it took (glibc on Linux only; else nothing)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20)))
